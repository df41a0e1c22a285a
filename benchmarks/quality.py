"""Routing quality of IR3DE and the paper's baselines on the ir3de-multidomain test split.

    python benchmarks/quality.py                      # full test split; writes results/quality.{json,md} + a PNG
    python benchmarks/quality.py --test-per-domain 50 --ppl-per-domain 10   # a quick look

Every router sees the same prompts: each test text cut to its first 16, 64 and 256 SmolLM2 tokens. IR3DE routes the
token ids; the MiniLM baselines get the same prompts as text. Fit time includes tokenisation and (for the baselines)
encoding the train split; routing time is per 1,000 prompts of 64 tokens, including each router's own tokenisation
except IR3DE's (given ids; see benchmarks/bench_routing.py for tokenisation measured separately).
Routed perplexity: each router picks an expert from a text's first 64 tokens, the expert is scored on the text's
first 256 tokens; normalised performance = mean over domains of ppl_oracle / ppl_routed x 100.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.assets import minilm_path, smollm2_path
from ir3de_hf.baselines import ClassifierRouter, KNNRouter, OracleRouter, RandomRouter, SentenceEncoder
from ir3de_hf.data import load_benchmark
from ir3de_hf.demo import DOMAINS, load_demo_router
from ir3de_hf.evaluation import normalized_performance, perplexity_by_domain, plot_confusion_matrix, routing_report
from ir3de_hf.perplexity import NLLTotal, per_text_nll

RESULTS = Path(__file__).parent / "results"


def per_domain(rows: Any, count: int | None) -> tuple[list[str], list[str]]:
    texts, domains, seen = [], [], dict.fromkeys(DOMAINS, 0)
    for text, domain in zip(rows["text"], rows["domain"], strict=True):
        if count is None or seen[domain] < count:
            texts.append(text)
            domains.append(domain)
            seen[domain] += 1
    return texts, domains


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def fit_ir3de(train_texts: list[str], train_domains: list[str], **config: Any) -> tuple[float, IR3DERouterModel]:
    def fit() -> IR3DERouterModel:
        router = IR3DERouterModel.from_encoder(str(smollm2_path()), **config)
        for domain in DOMAINS:
            router.add_expert(
                domain, texts=[t for t, d in zip(train_texts, train_domains, strict=True) if d == domain]
            )
        router.route([[1]])  # solve
        return router

    return timed(fit)


def fit_padding_counted(train_ids: list[list[int]], train_domains: list[str], eos: int) -> IR3DERouterModel:
    """The reference code's statistics: batches of 16 padded with EOS to their longest text, padding counted."""
    router = IR3DERouterModel.from_encoder(
        str(smollm2_path()), aggregation="majority_vote", pad_token_id=None, ignored_token_ids=[]
    )
    for domain in DOMAINS:
        ids = [row for row, d in zip(train_ids, train_domains, strict=True) if d == domain]
        counts = torch.zeros(router.config.vocab_size, dtype=torch.long)
        for start in range(0, len(ids), 16):
            batch = ids[start : start + 16]
            width = max(len(row) for row in batch)
            padded = torch.tensor([row + [eos] * (width - len(row)) for row in batch])
            counts += torch.bincount(padded.reshape(-1), minlength=router.config.vocab_size)
        router.add_expert(domain, histogram=counts)
    return router


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--test-per-domain", type=int, help="test prompts per domain (default: all 400)")
    parser.add_argument(
        "--index-per-domain", type=int, help="train samples per domain for the baselines (default: all)"
    )
    parser.add_argument("--index-tokens", type=int, default=128, help="train tokens per sample for the baselines")
    parser.add_argument("--ppl-per-domain", type=int, default=40, help="test texts per domain for perplexity")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)

    data = load_benchmark()
    train_texts, train_domains = per_domain(data["train"], None)
    test_texts, test_domains = per_domain(data["test"], args.test_per_domain)
    demo = load_demo_router()
    tokenizer = demo.tokenizer
    test_ids = tokenizer(test_texts, add_special_tokens=False)["input_ids"]
    prompts = {n: [tokenizer.decode(ids[:n]) for ids in test_ids] for n in args.lengths}
    cut_ids = {n: [ids[:n] for ids in test_ids] for n in args.lengths}
    results: dict[str, dict[str, Any]] = {}

    def record(name: str, fit_s: float, route: Callable[[int], list[str | None]], per_1k: float) -> None:
        entry: dict[str, Any] = {"fit_s": fit_s, "route_ms_per_1k_prompts_64": per_1k, "lengths": {}}
        for n in args.lengths:
            report = routing_report(test_domains, route(n), labels=DOMAINS)
            entry["lengths"][str(n)] = report.to_dict()
        results[name] = entry
        print(name, {n: round(v["accuracy"], 4) for n, v in entry["lengths"].items()}, flush=True)

    # IR3DE: one fit, three aggregations.
    fit_s, ir3de = fit_ir3de(train_texts, train_domains)
    for aggregation in ("majority_vote", "entropy_top_k", "mean", "weighted_mean"):
        ir3de.config.aggregation = aggregation
        route_s, _ = timed(lambda: ir3de.route(cut_ids[64]))
        record(
            f"IR3DE {aggregation}",
            fit_s,
            lambda n: ir3de.route(cut_ids[n]).expert_names,
            1000 * route_s * 1000 / len(test_texts),
        )

    # The reference code's padding: EOS counted in the statistics and voting in prompts padded to 256 tokens.
    eos = tokenizer.eos_token_id
    padded_fit_s, padded = timed(
        lambda: fit_padding_counted(tokenizer(train_texts, add_special_tokens=False)["input_ids"], train_domains, eos)
    )

    def route_padded(n: int) -> list[str | None]:
        rows = [ids + [eos] * (256 - len(ids)) for ids in cut_ids[n]]
        return padded.route(torch.tensor(rows)).expert_names

    record("IR3DE majority_vote, padding counted (reference code)", padded_fit_s, route_padded, float("nan"))
    padded.config.aggregation = "mean"
    record("IR3DE mean, padding counted", padded_fit_s, route_padded, float("nan"))

    # Baselines on MiniLM: index / classifier features from the first --index-tokens of --index-per-domain samples.
    encoder = SentenceEncoder(minilm_path(), max_length=512)
    index_texts, index_domains = per_domain(data["train"], args.index_per_domain)
    index_ids = tokenizer(index_texts, add_special_tokens=False)["input_ids"]
    index_texts = [tokenizer.decode(ids[: args.index_tokens]) for ids in index_ids]
    encode_s, _ = timed(lambda: encoder.encode(index_texts, desc="MiniLM train split"))
    knn_s, knn = timed(lambda: KNNRouter(encoder, DOMAINS).fit(index_texts, index_domains))
    clf_s, clf = timed(lambda: ClassifierRouter(encoder, DOMAINS).fit(index_texts, index_domains))
    encode_test_s, _ = timed(lambda: encoder.encode(prompts[64], desc="MiniLM prompts"))
    for name, router, fit in (("kNN MiniLM (k=5)", knn, knn_s), ("MoDEM-style MiniLM + linear head", clf, clf_s)):
        route_s, _ = timed(lambda r=router: r.route(prompts[64]))
        per_1k = 1000 * (encode_test_s + route_s) * 1000 / len(test_texts)
        record(name, encode_s + fit, lambda n, r=router: r.route(prompts[n]).expert_names, per_1k)
    random_router = RandomRouter(DOMAINS, seed=0)
    record("random", 0.0, lambda n: random_router.route(prompts[n]).expert_names, float("nan"))
    record("oracle", 0.0, lambda n: list(test_domains), float("nan"))

    # Routed perplexity with the demo experts on a subset.
    ppl_texts, ppl_domains = per_domain(data["test"], args.ppl_per_domain)
    ppl_prompts = [tokenizer.decode(ids[:64]) for ids in tokenizer(ppl_texts, add_special_tokens=False)["input_ids"]]
    ppl_ids = [ids[:64] for ids in tokenizer(ppl_texts, add_special_tokens=False)["input_ids"]]
    ir3de.config.aggregation = "weighted_mean"
    assignments = {
        "oracle": OracleRouter(DOMAINS, dict(zip(ppl_prompts, ppl_domains, strict=True)))
        .route(ppl_prompts)
        .expert_names,
        "IR3DE weighted_mean": ir3de.route(ppl_ids).expert_names,
        "kNN MiniLM (k=5)": knn.route(ppl_prompts).expert_names,
        "MoDEM-style MiniLM + linear head": clf.route(ppl_prompts).expert_names,
        "random": RandomRouter(DOMAINS, seed=1).route(ppl_prompts).expert_names,
    }
    nll: dict[tuple[int, str], NLLTotal] = {}
    for expert in DOMAINS:
        needed = sorted({i for chosen in assignments.values() for i, e in enumerate(chosen) if e == expert})
        if not needed:
            continue
        demo.generate([ppl_prompts[needed[0]]], expert=expert, max_new_tokens=1)  # registers and loads it
        loaded = demo.expert_pool.get(expert)
        totals = per_text_nll(loaded.model, tokenizer, [ppl_texts[i] for i in needed], max_tokens=256)
        nll.update({(i, expert): total for i, total in zip(needed, totals, strict=True)})
        print(f"perplexity: {expert} scored {len(needed)} texts", flush=True)
    oracle_ppl = perplexity_by_domain(ppl_domains, [nll[i, e] for i, e in enumerate(assignments["oracle"])], DOMAINS)
    perplexity: dict[str, Any] = {}
    for name, chosen in assignments.items():
        routed_ppl = perplexity_by_domain(ppl_domains, [nll[i, e] for i, e in enumerate(chosen)], DOMAINS)
        perplexity[name] = {
            "per_domain": routed_ppl,
            "normalized_performance": normalized_performance(oracle_ppl, routed_ppl),
            "routing_accuracy": routing_report(ppl_domains, chosen, labels=DOMAINS).accuracy,
        }

    default = routing_report(test_domains, ir3de.route(cut_ids[64]).expert_names, labels=DOMAINS)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot_confusion_matrix(
        default, args.out_dir / "confusion_ir3de_64.png", title="IR3DE (weighted_mean), 64-token prompts"
    )
    summary = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "test_prompts": len(test_texts),
        "baseline_index": {"per_domain": args.index_per_domain, "tokens": args.index_tokens},
        "routers": results,
        "perplexity": {"texts": len(ppl_texts), "route_tokens": 64, "scored_tokens": 256, "routers": perplexity},
        "confusion_ir3de_weighted_mean_64": default.to_dict(),
    }
    (args.out_dir / "quality.json").write_text(json.dumps(summary, indent=2) + "\n")
    markdown = render_markdown(summary, args.lengths, default.confusion_markdown())
    (args.out_dir / "quality.md").write_text(markdown)
    print(markdown)


def render_markdown(summary: dict[str, Any], lengths: list[int], confusion: str) -> str:
    header = " | ".join(f"acc@{n}" for n in lengths) + " | " + " | ".join(f"norm. acc@{n}" for n in lengths)
    lines = [f"| router | fit (s) | route ms / 1k prompts | {header} |", "|---" * (3 + 2 * len(lengths)) + "|"]
    for name, entry in summary["routers"].items():
        accs = " | ".join(f"{100 * entry['lengths'][str(n)]['accuracy']:.1f}" for n in lengths)
        norms = " | ".join(f"{100 * entry['lengths'][str(n)]['normalized_accuracy']:.1f}" for n in lengths)
        per_1k = entry["route_ms_per_1k_prompts_64"]
        route = "" if per_1k != per_1k else f"{per_1k:,.1f}"
        lines.append(f"| {name} | {entry['fit_s']:.1f} | {route} | {accs} | {norms} |")
    ppl = summary["perplexity"]
    lines += ["", f"Routed perplexity ({ppl['texts']} test texts, expert chosen from 64 tokens, scored on 256):", ""]
    lines += ["| router | routing acc. | normalised performance | " + " | ".join(DOMAINS) + " |"]
    lines += ["|---" * (3 + len(DOMAINS)) + "|"]
    for name, entry in ppl["routers"].items():
        cells = " | ".join(f"{entry['per_domain'][d]:.2f}" for d in DOMAINS)
        lines.append(
            f"| {name} | {100 * entry['routing_accuracy']:.1f}% | {entry['normalized_performance']:.2f}% | {cells} |"
        )
    lines += ["", "IR3DE (weighted_mean) confusion matrix at 64 tokens:", "", confusion, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
