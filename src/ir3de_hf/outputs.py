# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""What routing returns: [`IR3DERouterOutput`], shared by the router and the baselines, and the one rule that turns
it into [`Decision`] s (`decide`): generation, the server and the Space all decide through it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

__all__ = ["Decision", "IR3DERouterOutput", "NoEvidenceError", "decide", "merge_outputs"]

_PER_PROMPT = ("logits", "expert_ids", "margins", "no_evidence", "probabilities", "confident")


@dataclass
class IR3DERouterOutput(ModelOutput):
    """
    Routing decision for a batch of B prompts of L tokens over N experts.

    Args:
        logits (`torch.FloatTensor` of shape `(B, N)`):
            Aggregated expert scores: vote shares for `majority_vote` / `entropy_top_k`, mean token scores for `mean`,
            confidence-weighted mean token scores for `weighted_mean`.
        expert_ids (`torch.LongTensor` of shape `(B,)`):
            Chosen expert per prompt; `-1` for a prompt with no usable token (see `no_evidence`).
        margins (`torch.FloatTensor` of shape `(B,)`):
            Best minus second-best logit (`inf` with a single expert, 0 without evidence).
        token_scores (`torch.FloatTensor` of shape `(B, L, N)`):
            Per-token expert scores `W^T E[t] + beta`, for explanations (None when `route(token_details=False)`).
        token_votes (`torch.LongTensor` of shape `(B, L)`):
            The expert each token prefers; `-1` at padding and ignored tokens.
        voting_mask (`torch.BoolTensor` of shape `(B, L)`):
            The tokens that took part in the decision (all usable tokens, or the top-k of `entropy_top_k`).
        no_evidence (`torch.BoolTensor` of shape `(B,)`):
            True for prompts that are empty, all padding or only ignored tokens.
        expert_names (`list[str | None]`):
            Name of the chosen expert per prompt (`None` where `no_evidence`).
        probabilities (`torch.FloatTensor` of shape `(B, N)`):
            `softmax(logits / T)` with the temperature `T` fitted by `router.calibrate` (`T = 1` before); each row sums
            to 1, uniform where `no_evidence`. Once calibrated, the top probability estimates how often such a
            decision is right.
        confident (`torch.BoolTensor` of shape `(B,)`):
            False where `no_evidence`, where the top probability is under `config.min_confidence` or where the margin
            is under `config.min_margin`: the prompts that `decide` sends to the fallback expert.
    """

    logits: torch.Tensor | None = None
    expert_ids: torch.Tensor | None = None
    margins: torch.Tensor | None = None
    token_scores: torch.Tensor | None = None
    token_votes: torch.Tensor | None = None
    voting_mask: torch.Tensor | None = None
    no_evidence: torch.Tensor | None = None
    expert_names: list[str | None] | None = None
    probabilities: torch.Tensor | None = None
    confident: torch.Tensor | None = None


class NoEvidenceError(ValueError):
    """A prompt has no token the router can use and there is no fallback expert to answer it."""

    def __init__(self, index: int) -> None:
        super().__init__(
            f"Prompt {index} has no token the router can use (empty, blank or only special tokens); pass "
            "fallback_expert=..."
        )
        self.index = index


@dataclass(frozen=True)
class Decision:
    """Which expert answers a prompt, and why: ``"routed"``, ``"forced"`` (the caller named the expert) or
    ``"fallback"`` (the router was not `confident`). When the router decided: its ``margin`` (``inf`` with a single
    expert), its top probability ``confidence`` (calibrated once `router.calibrate` ran), each expert's probability
    and whether it was ``confident``; a forced decision has NaN, NaN, None and None."""

    expert: str
    reason: str
    margin: float = math.nan
    confidence: float = math.nan
    probabilities: dict[str, float] | None = None
    confident: bool | None = None


def decide(
    output: IR3DERouterOutput, expert_names: Sequence[str], fallback_expert: str | None = None
) -> list[Decision]:
    """One [`Decision`] per routed prompt: the chosen expert where the router is ``confident``, else
    ``fallback_expert`` when given. ``expert_names`` are the router's experts, in routing order.

    The thresholds (``config.min_confidence``, ``config.min_margin``) are already in ``output.confident``, so this is
    the whole rule. Raises `NoEvidenceError` for a prompt without a usable token when there is no fallback (an
    unconfident prompt with evidence keeps its routed expert).

    >>> output = IR3DERouterOutput(
    ...     expert_names=["code", "legal"],
    ...     margins=torch.tensor([0.5, 0.01]),
    ...     probabilities=torch.tensor([[0.75, 0.25], [0.5, 0.5]]),
    ...     confident=torch.tensor([True, False]),
    ... )
    >>> [(d.expert, d.reason) for d in decide(output, ["code", "legal"], fallback_expert="general")]
    [('code', 'routed'), ('general', 'fallback')]
    >>> [(d.expert, d.reason) for d in decide(output, ["code", "legal"])]  # no fallback: the routed expert stays
    [('code', 'routed'), ('legal', 'routed')]
    """
    assert output.expert_names is not None and output.margins is not None and output.probabilities is not None
    assert output.confident is not None
    decisions = []
    for index, (name, margin, row, confident) in enumerate(
        zip(
            output.expert_names,
            output.margins.tolist(),
            output.probabilities.tolist(),
            output.confident.tolist(),
            strict=True,
        )
    ):
        expert, reason = name, "routed"
        if not confident and fallback_expert is not None:
            expert, reason = fallback_expert, "fallback"
        if expert is None:
            raise NoEvidenceError(index)
        chances = dict(zip(expert_names, row, strict=True))
        decisions.append(Decision(expert, reason, margin, max(row), chances, bool(confident)))
    return decisions


def merge_outputs(
    parts: list[tuple[list[int], IR3DERouterOutput]], size: int, longest: int | None
) -> IR3DERouterOutput:
    """Puts the outputs of chunks of a batch (each with the batch rows it holds) back in input order; the per-token
    fields only when ``longest`` is given, padded to it (scores 0, votes -1, not voting)."""
    first = parts[0][1]
    assert first.logits is not None
    if len(parts) == 1 and parts[0][0] == list(range(size)):  # one chunk in input order: nothing to move
        if longest is None:
            return IR3DERouterOutput(**{key: first[key] for key in _PER_PROMPT}, expert_names=first.expert_names)
        if first.token_scores is not None and first.token_scores.shape[1] == longest:
            return first
    num_experts = first.logits.shape[1]
    device = first.logits.device
    merged = IR3DERouterOutput(
        logits=torch.zeros(size, num_experts, device=device),
        expert_ids=torch.full((size,), -1, dtype=torch.long, device=device),
        margins=torch.zeros(size, device=device),
        no_evidence=torch.zeros(size, dtype=torch.bool, device=device),
        probabilities=torch.zeros(size, num_experts, device=device),
        confident=torch.zeros(size, dtype=torch.bool, device=device),
        expert_names=[None] * size,
    )
    if longest is not None:
        merged.token_scores = torch.zeros(size, longest, num_experts, device=device)
        merged.token_votes = torch.full((size, longest), -1, dtype=torch.long, device=device)
        merged.voting_mask = torch.zeros(size, longest, dtype=torch.bool, device=device)
    per_prompt = _PER_PROMPT
    per_token = ("token_scores", "token_votes", "voting_mask") if longest is not None else ()
    for rows, part in parts:
        index = torch.as_tensor(rows, device=device)
        for field in per_prompt:
            merged[field][index] = part[field]
        for field in per_token:
            merged[field][index, : part[field].shape[1]] = part[field]
        for row, name in zip(rows, part.expert_names or [], strict=True):
            merged.expert_names[row] = name  # type: ignore[index]
    return merged
