"""Test prompts by domain, shared by the generation and serving benchmarks (imported from this folder)."""

from __future__ import annotations

from typing import Any

from ir3de_hf.data import load_benchmark


def prompts_by_domain(tokenizer: Any, tokens: int) -> dict[str, list[str]]:
    """The ir3de-multidomain test texts by domain (in the split's order), each cut to its first ``tokens`` tokens
    and decoded back to text, so that every prompt gives the router and the expert the same amount of work."""
    test = load_benchmark()["test"]
    by_domain: dict[str, list[str]] = {}
    for text, domain in zip(test["text"], test["domain"], strict=True):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
        by_domain.setdefault(domain, []).append(tokenizer.decode(ids))
    return by_domain
