"""Fit throughput with 1 and 2 processes (torchrun, gloo on CPU) and where fit time goes.

    python benchmarks/bench_fit.py      # writes benchmarks/results/fit.json and prints the README table

Data: the ir3de-multidomain train split (9,600 texts, six domains, about 3.5M SmolLM2 tokens), one expert per
domain; SmolLM2-135M-Instruct tokenizer and embeddings. Each configuration runs `fit_experts` in fresh processes;
throughput is all tokens counted divided by the main process's fit time (reading, tokenising, counting, the
all-reduce and the solve; model loading excluded). Run with the tokenizer's own thread pool on (its default) and off
(``TOKENIZERS_PARALLELISM=false``), since on a small machine both processes compete for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "fit.json"
DOMAINS = ("code", "legal", "politics", "biomedical", "fiction", "multilingual")


def worker(output: Path) -> None:
    """One process of a fit (run plainly or under torchrun); the main process writes the timings."""
    from ir3de_hf import IR3DERouterModel
    from ir3de_hf.assets import smollm2_path
    from ir3de_hf.data import load_benchmark
    from ir3de_hf.distributed import process_state
    from ir3de_hf.fitting import fit_experts

    state = process_state()
    router = IR3DERouterModel.from_encoder(str(smollm2_path()))
    train = load_benchmark()["train"]
    sources = {domain: train.filter(lambda row, d=domain: row["domain"] == d) for domain in DOMAINS}
    state.wait_for_everyone()
    start = time.perf_counter()
    result = fit_experts(router, sources, progress=False)
    state.wait_for_everyone()
    wall = time.perf_counter() - start
    if state.is_main_process:
        tokens = sum(result.tokens.values())
        report = {
            "processes": result.num_processes,
            "tokens": tokens,
            "tokens_per_process": result.tokens_per_process,
            "wall_seconds": wall,
            "tokens_per_second": tokens / wall,
            "seconds": result.seconds,
        }
        output.write_text(json.dumps(report, indent=2))


def run(processes: int, parallel_tokenizer: bool, port: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "report.json"
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "true" if parallel_tokenizer else "false"}
        command = [sys.executable, __file__, "--worker", str(output)]
        if processes > 1:
            env.update(ACCELERATE_USE_CPU="1", GLOO_SOCKET_IFNAME="lo")
            command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
            command += ["--master_addr", "127.0.0.1", "--master_port", str(port), __file__, "--worker", str(output)]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report = json.loads(output.read_text())
    report["tokenizer_threads"] = parallel_tokenizer
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    runs = [run(processes, threads, 29541) for threads in (True, False) for processes in (1, 2)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    RESULTS.write_text(json.dumps({"machine": machine, "runs": runs}, indent=2) + "\n")
    print("| tokenizer threads | processes | tokens | fit time | tokens/s | vs 1 process | tokenise | count | solve |")
    print("|---|---|---|---|---|---|---|---|---|")
    for report in runs:
        single = next(r for r in runs if r["processes"] == 1 and r["tokenizer_threads"] == report["tokenizer_threads"])
        seconds = report["seconds"]
        total = sum(seconds.values())
        shares = [f"{100 * seconds[stage] / total:.1f}%" for stage in ("tokenize", "count", "solve")]
        print(
            f"| {'on' if report['tokenizer_threads'] else 'off'} | {report['processes']} | {report['tokens']:,} | "
            f"{report['wall_seconds']:.2f} s | {report['tokens_per_second']:,.0f} | "
            f"{report['tokens_per_second'] / single['tokens_per_second']:.2f}x | {' | '.join(shares)} |"
        )


if __name__ == "__main__":
    main()
