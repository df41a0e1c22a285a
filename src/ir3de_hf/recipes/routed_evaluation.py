# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The paper's CLM evaluation on pre-tokenised test rows: routing accuracy, and perplexity when each row is scored by
the expert the router picks (routed) or by its own domain's expert (oracle).

As in the authors' ``clm_inference_routing.py``, a row's loss is the cross-entropy of every position against its
label, summed over rows and divided by the number of positions of the domain (token-weighted, not a mean of
per-row perplexities). Each expert is loaded once and scores every row that needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..evaluation import RoutingReport, normalized_performance, perplexity_by_domain, routing_report
from ..experts import ExpertPool
from ..perplexity import NLLTotal

__all__ = ["RoutedEvaluation", "evaluate_routed"]


@dataclass(frozen=True)
class RoutedEvaluation:
    """Routing quality and perplexities per true domain; ``normalized_performance`` is 100 x mean(oracle / routed)."""

    routing: RoutingReport
    oracle_perplexity: dict[str, float]
    routed_perplexity: dict[str, float]
    normalized_performance: float
    rows: dict[str, int]
    tokens: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "routing": self.routing.to_dict(),
            "oracle_perplexity": self.oracle_perplexity,
            "routed_perplexity": self.routed_perplexity,
            "normalized_performance": self.normalized_performance,
            "rows": self.rows,
            "tokens": self.tokens,
        }


def evaluate_routed(
    router: Any,
    pool: ExpertPool,
    test: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    batch_size: int = 4,
) -> RoutedEvaluation:
    """Routes every test row of every domain (the domain names are the router's expert names), then scores it.

    Args:
        router: the fitted router (public API only: ``route`` and ``expert_names``).
        pool: loads the experts, one name per domain.
        test: per domain, ``(input_ids, labels)``, both rows x length.
        batch_size: rows per expert forward pass (the logits of one row of 1,024 tokens over a 128k vocabulary take
            0.5 GB in float32).
    """
    names = list(router.expert_names)
    routed = {domain: router.route(ids).expert_names for domain, (ids, _) in test.items()}
    # A row without a single countable token has no decision: it counts as wrong and is scored by the first expert.
    chosen = {domain: [choice or names[0] for choice in picks] for domain, picks in routed.items()}
    needed: dict[str, list[tuple[str, int]]] = {name: [] for name in names}
    for domain, picks in chosen.items():
        for row, name in enumerate(picks):
            needed[name].append((domain, row))
            if name != domain:
                needed[domain].append((domain, row))
    scores: dict[tuple[str, int, str], NLLTotal] = {}
    for name, rows in needed.items():
        if not rows:
            continue
        model = pool.get(name).model
        for domain in test:
            indices = [row for owner, row in rows if owner == domain]
            if indices:
                ids, labels = test[domain]
                totals = _row_nll(model, ids[indices], labels[indices], batch_size)
                scores.update({(domain, row, name): total for row, total in zip(indices, totals, strict=True)})
        pool.unload(name)
    labels_of = [domain for domain, picks in chosen.items() for _ in picks]
    oracle_nll = [scores[(domain, row, domain)] for domain, picks in chosen.items() for row in range(len(picks))]
    routed_nll = [scores[(domain, row, name)] for domain, picks in chosen.items() for row, name in enumerate(picks)]
    oracle = perplexity_by_domain(labels_of, oracle_nll, labels=list(test))
    routed_ppl = perplexity_by_domain(labels_of, routed_nll, labels=list(test))
    return RoutedEvaluation(
        routing=routing_report(labels_of, [p for picks in routed.values() for p in picks], labels=names),
        oracle_perplexity=oracle,
        routed_perplexity=routed_ppl,
        normalized_performance=normalized_performance(oracle, routed_ppl),
        rows={domain: int(ids.shape[0]) for domain, (ids, _) in test.items()},
        tokens={domain: int(labels.numel()) for domain, (_, labels) in test.items()},
    )


@torch.inference_mode()
def _row_nll(model: Any, input_ids: torch.Tensor, labels: torch.Tensor, batch_size: int) -> list[NLLTotal]:
    """Summed cross-entropy of each row's positions against its labels (all positions, padding included)."""
    device = next(model.parameters()).device
    totals: list[NLLTotal] = []
    for start in range(0, input_ids.shape[0], batch_size):
        ids = input_ids[start : start + batch_size].to(device)
        targets = labels[start : start + batch_size].to(device)
        logits = model(input_ids=ids).logits.float()
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(1)
        totals += [NLLTotal(float(loss), int(targets.shape[1])) for loss in losses]
    return totals
