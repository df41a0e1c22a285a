# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Turning per-token expert scores into one decision per prompt (pure torch).

Four rules, one per router (``IR3DEConfig.aggregation``):

- ``majority_vote``: each usable token votes for its argmax expert; most votes wins (ties: lowest expert id).
- ``entropy_top_k``: only the ``k`` tokens whose softmax over experts has the lowest entropy vote.
- ``mean``: argmax of the mean score over usable tokens.
- ``weighted_mean``: argmax of the mean score with each token weighted by its confidence ``1 - H / log N`` (``H`` the
  entropy of its softmax over the N experts): decisive tokens count, function words shared by every domain barely do.

>>> import torch
>>> scores = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]])
>>> aggregate(scores, torch.ones(1, 3, dtype=torch.bool), "majority_vote").expert_ids.tolist()
[0]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .statistics import token_entropy

__all__ = ["AGGREGATIONS", "USES_ENTROPY", "Aggregate", "aggregate", "aggregate_rows", "margins", "probabilities"]

AGGREGATIONS = ("majority_vote", "entropy_top_k", "mean", "weighted_mean")
USES_ENTROPY = ("entropy_top_k", "weighted_mean")  # the rules that read each token's entropy


class Aggregate(NamedTuple):
    """Per-prompt decision: ``logits`` (B x N: vote shares, or mean scores for ``mean``), ``expert_ids`` (B, -1 when
    a prompt has no usable token) and ``voting_mask`` (B x L: the tokens that took part in the decision)."""

    logits: torch.Tensor
    expert_ids: torch.Tensor
    voting_mask: torch.Tensor


def aggregate(
    token_scores: torch.Tensor,
    usable: torch.Tensor,
    method: str,
    *,
    top_k: int = 10,
    token_entropies: torch.Tensor | None = None,
    token_votes: torch.Tensor | None = None,
) -> Aggregate:
    """Aggregates ``token_scores`` (B x L x N) over the ``usable`` tokens (B x L, bool) with ``method``.

    ``token_entropies`` and ``token_votes`` (argmax expert per token), both B x L, may be passed when precomputed;
    otherwise they are computed from the scores. The router itself calls [`aggregate_rows`] on its score table.
    """
    batch, length, num_experts = token_scores.shape
    if token_votes is None:
        token_votes = token_scores.argmax(dim=-1)
    if token_entropies is None and method in USES_ENTROPY:
        token_entropies = token_entropy(token_scores)
    positions = torch.arange(batch * length, device=token_scores.device).reshape(batch, length)
    return aggregate_rows(
        token_scores.reshape(-1, num_experts),
        positions,
        usable,
        method,
        top_k=top_k,
        token_entropies=token_entropies,
        token_votes=token_votes,
    )


def aggregate_rows(
    table: torch.Tensor,
    ids: torch.Tensor,
    usable: torch.Tensor,
    method: str,
    *,
    top_k: int,
    token_entropies: torch.Tensor | None,
    token_votes: torch.Tensor,
) -> Aggregate:
    """Aggregates the score rows ``table[ids]`` (table V x N, ids B x L) without building the B x L x N tensor.

    Votes need only ``token_votes`` (B x L); the means are one weighted `embedding_bag` over the table's rows, so
    the work is ``B x L x N`` reads and the memory ``B x N`` at any number of experts. ``token_entropies`` (B x L)
    is needed by ``entropy_top_k`` and ``weighted_mean``.
    """
    num_experts = table.shape[1]
    if method in ("mean", "weighted_mean"):
        weights = usable.to(table.dtype)
        if method == "weighted_mean" and num_experts > 1:
            assert token_entropies is not None
            weights = weights * (1 - token_entropies / math.log(num_experts)).clamp(min=0)
        if ids.shape[1]:
            totals = F.embedding_bag(ids, table, mode="sum", per_sample_weights=weights)
        else:
            totals = table.new_zeros(ids.shape[0], num_experts)
        logits = totals / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)
        return Aggregate(logits, _decide(logits, usable.any(dim=1)), usable)
    if method == "majority_vote":
        return _vote(token_votes, usable, num_experts)
    if method == "entropy_top_k":
        assert token_entropies is not None
        ranked = token_entropies.masked_fill(~usable, float("inf"))
        order = torch.argsort(ranked, dim=1, stable=True)[:, :top_k]
        selected = torch.zeros_like(usable).scatter_(1, order, True) & usable
        return _vote(token_votes, selected, num_experts)
    raise ValueError(f"Unknown aggregation {method!r}; expected one of {', '.join(AGGREGATIONS)}.")


def _vote(token_votes: torch.Tensor, voters: torch.Tensor, num_experts: int) -> Aggregate:
    tally = torch.zeros(token_votes.shape[0], num_experts, device=token_votes.device)
    tally.scatter_add_(1, token_votes, voters.to(tally.dtype))
    logits = tally / tally.sum(dim=1, keepdim=True).clamp(min=1)
    return Aggregate(logits, _decide(logits, voters.any(dim=1)), voters)


def _decide(logits: torch.Tensor, has_evidence: torch.Tensor) -> torch.Tensor:
    # torch.argmax returns the first maximal index: ties go to the lowest expert id.
    best = logits.argmax(dim=1)
    return torch.where(has_evidence, best, torch.full_like(best, -1))


def margins(logits: torch.Tensor, no_evidence: torch.Tensor | None = None) -> torch.Tensor:
    """Best minus second-best logit per prompt (B): how sure a decision is. ``inf`` with a single expert, 0 for the
    prompts flagged in ``no_evidence`` (nothing was decided)."""
    if logits.shape[1] < 2:
        result = torch.full(logits.shape[:1], float("inf"), device=logits.device)
    else:
        top = logits.topk(2, dim=1).values
        result = top[:, 0] - top[:, 1]
    return result if no_evidence is None else result.masked_fill(no_evidence, 0.0)


def probabilities(
    logits: torch.Tensor, temperature: float = 1.0, no_evidence: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax(logits / temperature)`` per prompt (B x N, rows sum to 1); uniform for the prompts flagged in
    ``no_evidence`` (nothing was decided, so no expert is more likely than another).

    With the temperature fitted by `ir3de_hf.calibration`, the top probability estimates how often such a decision is
    right; with 1.0 (an uncalibrated router) it is only a monotone rescaling of the scores.
    """
    result = torch.softmax(logits.to(torch.float32) / temperature, dim=1)
    if no_evidence is not None and logits.shape[1]:
        result = torch.where(no_evidence[:, None], torch.full_like(result, 1 / logits.shape[1]), result)
    return result
