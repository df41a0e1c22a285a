"""Routing throughput: IR3DE's lookup table against kNN-MiniLM, MoDEM-style MiniLM + head and the reference
formulation (embedding gather + matmul + aggregation), on the same prompts in one run. CPU.

    python benchmarks/bench_routing.py [--prompts 512] [--prompt-tokens 64] [--out results/routing.json]

Tokenisation is timed on its own (SmolLM2's tokenizer for IR3DE and the reference formulation, MiniLM's for the
baselines) and excluded from the routing throughput. The baselines' index / head use 100 train prompts per domain:
their routing cost is the encoder forward pass, which does not depend on the index size.
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

from ir3de_hf.aggregation import aggregate
from ir3de_hf.assets import minilm_path
from ir3de_hf.baselines import ClassifierRouter, KNNRouter, SentenceEncoder
from ir3de_hf.data import load_benchmark
from ir3de_hf.demo import DOMAINS, load_demo_router
from ir3de_hf.tokenization import pad_token_ids


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return min(timings)


def first_per_domain(split: Any, count: int) -> tuple[list[str], list[str]]:
    texts, domains, seen = [], [], dict.fromkeys(DOMAINS, 0)
    for text, domain in zip(split["text"], split["domain"], strict=True):
        if seen[domain] < count:
            texts.append(text)
            domains.append(domain)
            seen[domain] += 1
    return texts, domains


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per routing call")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "routing.json")
    args = parser.parse_args()

    router = load_demo_router()
    tokenizer = router.tokenizer
    data = load_benchmark()
    test_texts, _ = first_per_domain(data["test"], args.prompts // len(DOMAINS) + 1)
    prompts = [
        tokenizer.decode(ids[: args.prompt_tokens])
        for ids in tokenizer(test_texts[: args.prompts], add_special_tokens=False)["input_ids"]
    ]
    index_texts, index_domains = first_per_domain(data["train"], 100)
    index_texts = [tokenizer.decode(ids[: args.prompt_tokens]) for ids in tokenizer(index_texts)["input_ids"]]
    encoder = SentenceEncoder(minilm_path(), max_length=256, batch_size=args.batch_size)
    knn = KNNRouter(encoder, DOMAINS).fit(index_texts, index_domains)
    classifier = ClassifierRouter(encoder, DOMAINS).fit(index_texts, index_domains)
    batches = [prompts[i : i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]

    # Tokenisation, timed alone.
    smollm2_tokenize_s = best_of(3, lambda: [tokenizer(b, add_special_tokens=False)["input_ids"] for b in batches])
    minilm_tokenize_s = best_of(3, lambda: [encoder.tokenize(b) for b in batches])
    id_batches = [pad_token_ids(tokenizer(b, add_special_tokens=False)["input_ids"]) for b in batches]
    minilm_batches = [encoder.tokenize(b) for b in batches]

    # IR3DE: gather rows of the V x N score table, aggregate.
    router.route(id_batches[0][0], id_batches[0][1])  # solve once
    ir3de_s = best_of(5, lambda: [router(input_ids=ids, attention_mask=mask) for ids, mask in id_batches])

    # The reference formulation: gather d-dim embeddings, matmul with W, add beta, aggregate.
    weight, bias = (t.float() for t in router.ridge_solution(normalize=True))
    embedding = router.embed_tokens.weight

    @torch.inference_mode()
    def reference() -> None:
        for ids, mask in id_batches:
            aggregate(
                embedding[ids] @ weight + bias, mask.bool(), router.config.aggregation, top_k=router.config.top_k
            )

    reference_s = best_of(5, reference)
    knn_s = best_of(2, lambda: [knn.route_embeddings(encoder.embed(batch)) for batch in minilm_batches])
    classifier_s = best_of(2, lambda: [classifier.route_embeddings(encoder.embed(batch)) for batch in minilm_batches])

    n = len(prompts)
    results = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "prompts": n,
        "prompt_tokens": args.prompt_tokens,
        "aggregation": router.config.aggregation,
        "prompts_per_s": {
            "ir3de_lookup": n / ir3de_s,
            "reference_embedding_matmul": n / reference_s,
            "knn_minilm": n / knn_s,
            "modem_minilm_head": n / classifier_s,
        },
        "tokenize_prompts_per_s": {"smollm2": n / smollm2_tokenize_s, "minilm": n / minilm_tokenize_s},
        "ir3de_vs_knn": knn_s / ir3de_s,
        "ir3de_vs_modem": classifier_s / ir3de_s,
        "ir3de_vs_reference": reference_s / ir3de_s,
        "ir3de_routing_share_of_tokenizer_time": ir3de_s / smollm2_tokenize_s,
    }
    rows = [
        ("IR3DE lookup table", results["prompts_per_s"]["ir3de_lookup"], ""),
        (
            "reference: embedding + matmul",
            results["prompts_per_s"]["reference_embedding_matmul"],
            f"IR3DE {results['ir3de_vs_reference']:.1f}x faster",
        ),
        (
            "kNN MiniLM (k=5)",
            results["prompts_per_s"]["knn_minilm"],
            f"IR3DE {results['ir3de_vs_knn']:,.0f}x faster (target >= 100x)",
        ),
        (
            "MoDEM-style MiniLM + head",
            results["prompts_per_s"]["modem_minilm_head"],
            f"IR3DE {results['ir3de_vs_modem']:,.0f}x faster",
        ),
        (
            "tokenise, SmolLM2",
            results["tokenize_prompts_per_s"]["smollm2"],
            f"IR3DE routing = {100 * results['ir3de_routing_share_of_tokenizer_time']:.1f}% of it (target <= 25%)",
        ),
        ("tokenise, MiniLM", results["tokenize_prompts_per_s"]["minilm"], ""),
    ]
    print(f"{n} prompts of {args.prompt_tokens} tokens in batches of {args.batch_size}, {router.config.aggregation}")
    for name, rate, note in rows:
        print(f"{name:<32} {rate:>14,.0f} prompts/s  {note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
