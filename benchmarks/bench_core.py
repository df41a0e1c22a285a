"""Core speed benchmark: histogram fitting vs explicit per-token X^T X, lookup-table routing vs embedding + matmul,
and the cost of adding / removing an expert. One run, ratios measured against a baseline in the same run.

    python benchmarks/bench_core.py [--tokens 16777216] [--explicit-tokens 1048576] [--out results/core.json]

Shapes follow the paper's budget: d=576, V=49152 (SmolLM2), N=6 experts, Zipf-distributed token ids,
one expert fitted on 1,000 batches of 16 x 1,024 tokens, prompts of 256 tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.aggregation import aggregate
from ir3de_hf.statistics import augmented_moments, explicit_moments, ridge_solve, token_histogram

VOCAB, HIDDEN, EXPERTS, PROMPT_TOKENS = 49152, 576, 6, 256


def zipf_ids(generator: torch.Generator, count: int, offset: int) -> torch.Tensor:
    """Zipf(1) token ids over the vocabulary, rotated by ``offset`` so each domain has its own frequent tokens."""
    weights = 1.0 / torch.arange(1, VOCAB + 1, dtype=torch.float64)
    ranks = torch.multinomial(weights, count, replacement=True, generator=generator)
    return (ranks + offset) % VOCAB


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return min(timings)


def bench_fit(embedding: torch.Tensor, tokens: int, explicit_tokens: int, generator: torch.Generator) -> dict:
    ids = zipf_ids(generator, tokens, offset=0).reshape(-1, 16, 1024)

    def histogram_fit() -> None:
        counts = token_histogram(ids, vocab_size=VOCAB)
        a, b = augmented_moments(embedding, counts[None])
        ridge_solve(a, b, 1e-2)

    histogram_seconds = best_of(2, histogram_fit)

    # The reference formulation: per batch, X = [E[ids], 1] and A += X^T X, B += X^T Y (float32, as the paper's code).
    batches = max(1, explicit_tokens // (16 * 1024))

    def explicit_fit() -> None:
        for batch in ids[:batches]:
            explicit_moments(
                embedding, batch, torch.ones_like(batch), torch.zeros(16, dtype=torch.long), 1, torch.float32
            )

    explicit_slice = best_of(1, explicit_fit)
    explicit_seconds = explicit_slice * ids.shape[0] / batches
    return {
        "tokens": tokens,
        "histogram_fit_s": histogram_seconds,
        "explicit_slice_tokens": batches * 16 * 1024,
        "explicit_slice_s": explicit_slice,
        "explicit_fit_s_scaled": explicit_seconds,
        "speedup": explicit_seconds / histogram_seconds,
    }


def build_router(embedding: torch.Tensor, generator: torch.Generator, aggregation: str) -> IR3DERouterModel:
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(embedding), aggregation=aggregation)
    for n in range(EXPERTS):
        router.add_expert(f"expert_{n}", input_ids=zipf_ids(generator, 1 << 20, offset=n * 4096)[None])
    return router


def bench_routing(router: IR3DERouterModel, prompts: torch.Tensor, batch: int = 256) -> dict:
    router.route(prompts[:batch])  # solve once: routing cost only from here
    weight, bias = (t.to(torch.float32) for t in router.ridge_solution(normalize=True))
    embedding = router.embed_tokens.weight
    mask = torch.ones(batch, prompts.shape[1], dtype=torch.bool)
    config = router.config

    def lookup() -> None:
        for start in range(0, len(prompts), batch):
            router.route(prompts[start : start + batch])

    @torch.inference_mode()
    def matmul() -> None:
        for start in range(0, len(prompts), batch):
            scores = embedding[prompts[start : start + batch]] @ weight + bias
            aggregate(scores, mask, config.aggregation, top_k=config.top_k)

    lookup_s, matmul_s = best_of(3, lookup), best_of(3, matmul)
    return {
        "aggregation": config.aggregation,
        "prompts": len(prompts),
        "lookup_prompts_per_s": len(prompts) / lookup_s,
        "matmul_prompts_per_s": len(prompts) / matmul_s,
        "speedup": matmul_s / lookup_s,
    }


def bench_edit(router: IR3DERouterModel, generator: torch.Generator, repeats: int = 7) -> dict:
    """Adds then removes one expert ``repeats`` times; each time is taken up to the first route that follows (the
    new moments, the re-solve and the V x N table). Medians, since single edits are short and the machine noisy."""
    probe = torch.zeros(1, 1, dtype=torch.long)
    router.route(probe)
    new_ids = zipf_ids(generator, 1 << 20, offset=7 * 4096)[None]
    counts = token_histogram(new_ids, vocab_size=VOCAB)
    registered, added, removed = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        router.add_expert("new", histogram=counts)
        registered.append(time.perf_counter() - start)
        router.route(probe)
        added.append(time.perf_counter() - start)
        start = time.perf_counter()
        router.remove_expert("new")
        router.route(probe)
        removed.append(time.perf_counter() - start)
    return {
        "repeats": repeats,
        "add_register_ms": statistics.median(registered) * 1e3,
        "add_total_ms": statistics.median(added) * 1e3,
        "remove_total_ms": statistics.median(removed) * 1e3,
        "remove_total_ms_all": [value * 1e3 for value in removed],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1000 * 16 * 1024, help="tokens of the fitted expert")
    parser.add_argument("--explicit-tokens", type=int, default=1 << 20, help="slice timed on the explicit path")
    parser.add_argument("--prompts", type=int, default=4096, help="256-token prompts routed per timing")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "core.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(VOCAB, HIDDEN, generator=generator) * 0.05
    results: dict = {"machine": {"platform": platform.platform(), "threads": torch.get_num_threads()}}
    results["fit"] = bench_fit(embedding, args.tokens, args.explicit_tokens, generator)
    prompts = torch.cat(
        [zipf_ids(generator, PROMPT_TOKENS * (args.prompts // EXPERTS + 1), n * 4096) for n in range(EXPERTS)]
    ).reshape(-1, PROMPT_TOKENS)[: args.prompts]
    results["routing"] = []
    for aggregation in ("majority_vote", "entropy_top_k", "mean", "weighted_mean"):
        router = build_router(embedding, generator, aggregation)
        results["routing"].append(bench_routing(router, prompts))
    results["edit"] = bench_edit(router, generator)

    fit, edit = results["fit"], results["edit"]
    rows = [
        ("fit 1 expert, histogram path", f"{fit['histogram_fit_s']:.2f} s", f"{fit['tokens']:,} tokens"),
        (
            "fit 1 expert, explicit X^T X path",
            f"{fit['explicit_fit_s_scaled']:.1f} s",
            f"scaled from {fit['explicit_slice_tokens']:,} tokens in {fit['explicit_slice_s']:.1f} s",
        ),
        ("  fit speedup", f"{fit['speedup']:.0f}x", "target >= 50x"),
    ]
    for routing in results["routing"]:
        rows += [
            (
                f"route {routing['aggregation']}, lookup table",
                f"{routing['lookup_prompts_per_s']:,.0f} prompts/s",
                f"{PROMPT_TOKENS}-token prompts",
            ),
            (
                f"route {routing['aggregation']}, embedding+matmul",
                f"{routing['matmul_prompts_per_s']:,.0f} prompts/s",
                "",
            ),
            ("  routing speedup", f"{routing['speedup']:.1f}x", "target >= 5x"),
        ]
    rows += [
        ("add expert (register histogram)", f"{edit['add_register_ms']:.1f} ms", ""),
        (
            "add expert (+ moments, solve, table)",
            f"{edit['add_total_ms']:.0f} ms",
            f"first route after; median of {edit['repeats']}",
        ),
        ("remove expert (+ solve, table)", f"{edit['remove_total_ms']:.0f} ms", "first route after; target < 50 ms"),
    ]
    width = max(len(row[0]) for row in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>22}  {note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
