"""Scale benchmark: load, add, remove and route with many experts and 8B-class encoder tables.

    python benchmarks/bench_scale.py [--grid full|quick] [--baseline-src DIR] [--out benchmarks/results/scale.json]

Random embedding tables of the real shapes (SmolLM2: d = 576, V = 49,152; Llama-3-8B: d = 4,096, V = 128,256) and
expert histograms of two kinds: ``real`` (the six demo domains' token counts on the benchmark's training split,
each expert one domain resampled: Poisson counts at a random 25-100% of the domain's size, ids permuted at random)
and ``zipf`` (Poisson counts of 2M Zipf(1) tokens, rotated per expert). For each setting a worker process builds a
router of N experts and saves it; a second, fresh process measures: ``load`` (`from_pretrained` + the first route),
``add`` / ``remove`` one expert (each followed by one routed prompt, so the re-solve and the table rows it needs are
counted; median of 3), routing throughput of 1,000 prompts at 16 / 64 / 256 tokens (ids, `token_details=False`,
warm tables, best of 3), its peak RSS minus the table's bytes, and the size of ``model.safetensors`` minus the
table. ``--baseline-src`` points at a checkout of the code before this change (``git worktree add /tmp/v2 65d266b``,
then ``--baseline-src /tmp/v2/src``): the same workers run on it at the settings in ``BASELINE`` in the same run.
Writes the JSON, a table (Markdown, printed) and a PNG of the curves next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SHAPES = {"smollm2": (49152, 576), "llama3-8b": (128256, 4096)}
GRIDS = {
    "full": [
        *[("smollm2", kind, n) for kind in ("real", "zipf") for n in (6, 64, 256, 1024)],
        *[("llama3-8b", "real", n) for n in (6, 64, 256)],
    ],
    "quick": [("smollm2", "real", 6), ("smollm2", "real", 64)],
}
BASELINE = [("smollm2", "zipf", 6), ("smollm2", "zipf", 32), ("smollm2", "real", 6), ("smollm2", "real", 64)]
PROMPT_LENGTHS = (16, 64, 256)
PROMPTS = 1000
ZIPF_TOKENS = 2_000_000


# ---------------------------------------------------------------------------------------------- workers


def _table(vocab: int, hidden: int) -> torch.Tensor:
    return torch.randn(vocab, hidden, generator=torch.Generator().manual_seed(vocab + hidden)) * 0.02


def _histograms(kind: str, vocab: int, count: int, seed: int, domains: Path) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if kind == "zipf":
        rates = ZIPF_TOKENS / torch.arange(1, vocab + 1, dtype=torch.float64)
        rates = rates / rates.sum() * ZIPF_TOKENS
        offsets = torch.randint(0, vocab, (count,), generator=generator)
        return [torch.poisson(rates.roll(int(o)), generator=generator).long() for o in offsets]
    real = load_file(domains)["histograms"]  # (6, 49152) int64, written by the parent from the demo router
    result = []
    for n in range(count):
        source = real[n % len(real)].double()
        scale = 0.25 + 0.75 * float(torch.rand((), generator=generator))
        ids = torch.randperm(vocab, generator=generator)[: len(source)]
        rates = torch.zeros(vocab, dtype=torch.float64)
        rates[ids] = source * scale
        result.append(torch.poisson(rates, generator=generator).long())
    return result


def _prompts(vocab: int, length: int) -> torch.Tensor:
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    generator = torch.Generator().manual_seed(length)
    return torch.multinomial(weights, PROMPTS * length, replacement=True, generator=generator).reshape(PROMPTS, length)


def worker_build(shape: str, kind: str, count: int, directory: str, domains: str) -> dict:
    from ir3de_hf import IR3DERouterModel

    vocab, hidden = SHAPES[shape]
    start = time.perf_counter()
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(_table(vocab, hidden)))
    histograms = _histograms(kind, vocab, count, seed=1, domains=Path(domains))
    for n, histogram in enumerate(histograms):
        router.add_expert(f"expert_{n}", histogram=histogram)
    router.route(torch.arange(1, 9)[None], token_details=False)
    built = time.perf_counter() - start
    router.save_pretrained(directory)
    support = statistics.mean(int(h.count_nonzero()) for h in histograms)
    tokens = statistics.mean(int(h.sum()) for h in histograms)
    return {"build_s": built, "mean_distinct_tokens": support, "mean_tokens": tokens}


def worker_measure(shape: str, kind: str, count: int, directory: str, domains: str) -> dict:
    from ir3de_hf import IR3DERouterModel

    vocab, hidden = SHAPES[shape]
    first = torch.arange(1, 9)[None]
    start = time.perf_counter()
    router = IR3DERouterModel.from_pretrained(directory)
    router.route(first, token_details=False)
    load = time.perf_counter() - start
    extra = _histograms(kind, vocab, 3, seed=2, domains=Path(domains))
    adds, removes = [], []
    for histogram in extra:
        start = time.perf_counter()
        router.add_expert("extra", histogram=histogram)
        router.route(first, token_details=False)
        adds.append(time.perf_counter() - start)
        start = time.perf_counter()
        router.remove_expert("extra")
        router.route(first, token_details=False)
        removes.append(time.perf_counter() - start)
    routing: dict[str, dict[str, float]] = {"weighted_mean": {}, "majority_vote": {}}
    for aggregation, rates in routing.items():
        router.config.aggregation = aggregation
        for length in PROMPT_LENGTHS:
            prompts = _prompts(vocab, length)
            router.route(prompts, token_details=False)  # fills the rows these prompts use
            best = min(_timed(lambda p=prompts: router.route(p, token_details=False)) for _ in range(3))
            rates[str(length)] = PROMPTS / best
    dtypes = _table_dtypes(router, vocab) if count >= 1024 else None
    table_bytes = vocab * hidden * 4
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    weights = Path(directory) / "model.safetensors"
    return {
        "load_s": load,
        "add_s": statistics.median(adds),
        "remove_s": statistics.median(removes),
        "route_prompts_per_s": routing["weighted_mean"],
        "route_prompts_per_s_majority_vote": routing["majority_vote"],
        "table_dtypes": dtypes,
        "peak_rss_beyond_table_gb": (peak - table_bytes) / 1e9,
        "statistics_disk_mb": (weights.stat().st_size - table_bytes) / 1e6,
    }


def _table_dtypes(router, vocab: int) -> dict:
    """The score table's dtype, decided with numbers: the weighted sums of 1,000 prompts of 64 tokens over the whole
    table stored float32 (what routing uses) or half precision, and how often the decision changes."""
    import torch.nn.functional as F

    table = router.store.tables().scores
    prompts = _prompts(vocab, 64)
    weights = torch.rand(prompts.shape, generator=torch.Generator().manual_seed(0))
    exact = F.embedding_bag(prompts, table, mode="sum", per_sample_weights=weights).argmax(dim=1)
    result = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        stored, scaled = table.to(dtype), weights.to(dtype)
        best = min(
            _timed(lambda t=stored, w=scaled: F.embedding_bag(prompts, t, mode="sum", per_sample_weights=w))
            for _ in range(3)
        )
        decided = F.embedding_bag(prompts, stored, mode="sum", per_sample_weights=scaled).argmax(dim=1)
        result[str(dtype).removeprefix("torch.")] = {
            "prompts_per_s": PROMPTS / best,
            "table_mb": stored.numel() * stored.element_size() / 1e6,
            "decisions_changed": int((decided != exact).sum()),
        }
    return result


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- driver


def _run_worker(step: str, setting: tuple[str, str, int], directory: Path, domains: Path, src: str | None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if src is not None:
        env["PYTHONPATH"] = src
    command = [sys.executable, __file__, "--worker", step, *map(str, setting), str(directory), str(domains)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{step} {setting} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _demo_domains(path: Path) -> None:
    from ir3de_hf.demo import load_demo_router

    demo = load_demo_router()
    save_file({"histograms": torch.stack([demo.store.histogram(name) for name in demo.expert_names])}, path)


def _plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3.6))
    panels = [("load_s", "load + first route (s)"), ("add_s", "add one expert (s)"), ("route", "prompts/s, 64 tokens")]
    for index, (key, title) in enumerate(panels):
        axis = figure.add_subplot(1, 3, index + 1)
        series = sorted({(r["code"], r["shape"], r["kind"]) for r in rows})
        for code, shape, kind in series:
            points = sorted(
                (r["experts"], r) for r in rows if (r["code"], r["shape"], r["kind"]) == (code, shape, kind)
            )
            values = [r["route_prompts_per_s"]["64"] if key == "route" else r[key] for _, r in points]
            style = "--o" if code == "before" else "-o"
            axis.plot([n for n, _ in points], values, style, label=f"{code}: {shape} {kind}")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("experts N")
        axis.set_title(title)
    figure.axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _markdown(rows: list[dict]) -> str:
    lines = [
        "| code | table | histograms | N | load + route (s) | add (ms) | remove (ms) | prompts/s 16 / 64 / 256 "
        "(weighted_mean) | prompts/s 64 (majority_vote) | RSS beyond table (GB) | statistics on disk (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rates = " / ".join(f"{r['route_prompts_per_s'][str(n)]:,.0f}" for n in PROMPT_LENGTHS)
        lines.append(
            f"| {r['code']} | {r['shape']} | {r['kind']} ({r['mean_distinct_tokens']:,.0f} ids/expert) | "
            f"{r['experts']:,} | {r['load_s']:.2f} | {r['add_s'] * 1e3:,.0f} | {r['remove_s'] * 1e3:,.0f} | {rates} | "
            f"{r.get('route_prompts_per_s_majority_vote', {}).get('64', float('nan')):,.0f} | "
            f"{r['peak_rss_beyond_table_gb']:.2f} | {r['statistics_disk_mb']:,.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="full")
    parser.add_argument("--baseline-src", default=None, help="src/ of a checkout of the code before this change")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ir3de-scale-"))
    domains = scratch / "domains.safetensors"
    _demo_domains(domains)
    jobs = [("after", setting, None) for setting in GRIDS[args.grid]]
    if args.baseline_src:
        jobs = [("before", setting, args.baseline_src) for setting in BASELINE] + jobs
    rows = []
    try:
        for code, setting, src in jobs:
            directory = scratch / f"{code}-{'-'.join(map(str, setting))}"
            built = _run_worker("build", setting, directory, domains, src)
            measured = _run_worker("measure", setting, directory, domains, src)
            shutil.rmtree(directory)
            row = {"code": code, "shape": setting[0], "kind": setting[1], "experts": setting[2], **built, **measured}
            rows.append(row)
            print(_markdown([row]).splitlines()[-1], flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "prompts": PROMPTS,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(rows) + "\n")
    _plot(rows, args.out.with_suffix(".png"))
    print(_markdown(rows))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        step, shape, kind, count, directory, domains = sys.argv[2:8]
        worker = worker_build if step == "build" else worker_measure
        print(json.dumps(worker(shape, kind, int(count), directory, domains)))
    else:
        main()
