"""Peak memory of routing one long prompt among many short ones: one padded batch vs `route`'s length-bucketed chunks.

    python benchmarks/bench_memory.py [--short 2000] [--long-tokens 50000] [--out results/memory.json]

Each mode runs in a fresh process on the same router (d=576, V=49,152, N=6, like bench_core.py) and the same prompts
(``--short`` prompts of 16 to 64 tokens and one of ``--long-tokens``, about 200 kB of text); the table gives the peak
resident memory of the process and its growth during the routing call (``ru_maxrss``, Linux).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

VOCAB, HIDDEN, EXPERTS = 49152, 576, 6


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_mode(mode: str, short: int, long_tokens: int) -> dict:
    """Builds the router and the prompts, then routes them once with ``mode``; returns the memory it took."""
    from ir3de_hf import IR3DERouterModel
    from ir3de_hf.tokenization import pad_token_ids

    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(VOCAB, HIDDEN, generator=generator) * 0.05
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(embedding))
    for n in range(EXPERTS):
        ids = torch.randint(n * 4096, n * 4096 + 8192, (1, 1 << 18), generator=generator)
        router.add_expert(f"expert_{n}", input_ids=ids)
    lengths = torch.randint(16, 65, (short,), generator=generator).tolist()
    prompts = [torch.randint(0, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    prompts.insert(short // 2, torch.randint(0, VOCAB, (long_tokens,), generator=generator).tolist())
    router.route(prompts[:2])  # derive the tables before measuring
    before = _peak_mb()
    start = time.perf_counter()
    if mode == "padded batch":  # what route() did before: pad everything to the longest prompt, one forward
        input_ids, attention_mask = pad_token_ids(prompts)
        routed = router(input_ids=input_ids, attention_mask=attention_mask)
    else:
        routed = router.route(prompts)
    seconds = time.perf_counter() - start
    assert routed.expert_ids is not None
    return {
        "mode": mode,
        "prompts": len(prompts),
        "tokens": sum(len(prompt) for prompt in prompts),
        "peak_mb": _peak_mb(),
        "growth_mb": _peak_mb() - before,
        "seconds": seconds,
        "decisions": routed.expert_ids.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=2000, help="short prompts (16 to 64 tokens)")
    parser.add_argument("--long-tokens", type=int, default=50_000, help="tokens of the one long prompt")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory.json")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.short, args.long_tokens)))
        return
    results = []
    for mode in ("padded batch", "route (chunks)"):
        command = [sys.executable, __file__, "--mode", mode, "--short", str(args.short)]
        output = subprocess.run([*command, "--long-tokens", str(args.long_tokens)], capture_output=True, text=True)
        if output.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{output.stderr[-2000:]}")
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))
    same = results[0]["decisions"] == results[1]["decisions"]
    for result in results:
        print(
            f"{result['mode']:<16} peak {result['peak_mb']:>8,.0f} MB   growth {result['growth_mb']:>8,.0f} MB   "
            f"{result['seconds']:6.2f} s   ({result['prompts']:,} prompts, {result['tokens']:,} tokens)"
        )
        del result["decisions"]
    print(f"same decisions: {same}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "same_decisions": same}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
