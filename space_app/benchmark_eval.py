# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The Evaluation tab: accuracy and confusion matrix of the CURRENT router on the ir3de-multidomain test split.

Prompts are cut to their first 64 tokens (the README's middle setting). The test split is tokenized once per
tokenizer and kept; routing all 2,400 prompts is a table gather, well under a second.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import gradio as gr
from router_snapshots import RouterHolder

from ir3de_hf.data import load_benchmark
from ir3de_hf.evaluation import RoutingReport, plot_confusion_matrix, routing_report
from ir3de_hf.tokenization import pad_token_ids

__all__ = ["PROMPT_TOKENS", "evaluate_router"]

PROMPT_TOKENS = 64
_BATCH = 300


def evaluate_router(holder: RouterHolder, image_dir: Path, progress: Any = None) -> RoutingReport:
    """Routes the test split with the current snapshot and returns the report; writes ``confusion.png`` (the row-
    normalised matrix) into ``image_dir``. ``progress`` is a `gr.Progress` (or None)."""
    router = holder.current
    ids, domains = _test_split(router.tokenizer)
    batches = range(0, len(ids), _BATCH)
    if progress is not None:
        batches = progress.tqdm(batches, desc=f"Routing {len(ids):,} test prompts", unit="batches")
    predicted: list[str | None] = []
    for start in batches:
        input_ids, attention_mask = pad_token_ids(ids[start : start + _BATCH])
        output = router.route(input_ids, attention_mask=attention_mask)
        assert output.expert_names is not None
        predicted += output.expert_names
    report = routing_report(domains, predicted, labels=sorted(set(domains)))
    plot_confusion_matrix(report, image_dir / "confusion.png", title=f"{len(router.expert_names)} experts")
    return report


@functools.lru_cache(maxsize=2)
def _test_split(tokenizer: Any) -> tuple[list[list[int]], list[str]]:
    try:
        test = load_benchmark()["test"]
    except FileNotFoundError as error:
        raise gr.Error(f"The benchmark is not available here: {error}") from error
    encoded = tokenizer(
        list(test["text"]), add_special_tokens=False, truncation=True, max_length=PROMPT_TOKENS, verbose=False
    )
    return [list(row) for row in encoded["input_ids"]], list(test["domain"])
