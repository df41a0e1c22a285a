# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The M2D2 section of the router's card (``hub_cards/m2d2_section.md``): budget, perplexities, the command."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Template

from .._templates import template_path
from ..hub._locations import hub_id
from .routed_evaluation import RoutedEvaluation

__all__ = ["recipe_section"]


def recipe_section(
    *,
    experts_source: str,
    batches: int,
    batch_size: int,
    sequence_length: int,
    test_batches: int,
    tokens: dict[str, int],
    rows: dict[str, int],
    evaluation: RoutedEvaluation,
    command: str,
    settings: dict[str, object],
) -> str:
    """Markdown for `CardInfo.sections`: how the router was built (budget and the routing ``settings`` of its config)
    and what it scores, per domain."""
    repo = hub_id(experts_source)
    recall = evaluation.routing.recall
    domains = [
        {
            "name": name,
            "rows": f"{rows[name]:,}",
            "tokens": f"{tokens[name]:,}",
            "test_rows": f"{evaluation.rows[name]:,}",
            "recall": f"{recall[name]:.1%}" if name in recall else "—",
            "oracle": f"{evaluation.oracle_perplexity[name]:.2f}",
            "routed": f"{evaluation.routed_perplexity[name]:.2f}",
        }
        for name in tokens
    ]
    return (
        Template(Path(template_path("m2d2_section.md")).read_text())
        .render(
            num_experts=len(domains),
            experts_source=f"[{repo}](https://huggingface.co/{repo})" if repo else "local reference checkpoints",
            batches=f"{batches:,}",
            batch_size=batch_size,
            sequence_length=f"{sequence_length:,}",
            test_batches=test_batches,
            domains=domains,
            normalized_performance=f"{evaluation.normalized_performance:.1f}",
            command=command,
            settings=", ".join(f"`{key}={value!r}`" for key, value in settings.items()),
        )
        .strip()
    )
