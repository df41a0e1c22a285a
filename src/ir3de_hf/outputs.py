# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""What routing returns: [`IR3DERouterOutput`], shared by the router and the baselines."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

__all__ = ["IR3DERouterOutput"]


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
            Per-token expert scores `W^T E[t] + beta`, for explanations.
        token_votes (`torch.LongTensor` of shape `(B, L)`):
            The expert each token prefers; `-1` at padding and ignored tokens.
        voting_mask (`torch.BoolTensor` of shape `(B, L)`):
            The tokens that took part in the decision (all usable tokens, or the top-k of `entropy_top_k`).
        no_evidence (`torch.BoolTensor` of shape `(B,)`):
            True for prompts that are empty, all padding or only ignored tokens.
        expert_names (`list[str | None]`):
            Name of the chosen expert per prompt (`None` where `no_evidence`).
    """

    logits: torch.Tensor | None = None
    expert_ids: torch.Tensor | None = None
    margins: torch.Tensor | None = None
    token_scores: torch.Tensor | None = None
    token_votes: torch.Tensor | None = None
    voting_mask: torch.Tensor | None = None
    no_evidence: torch.Tensor | None = None
    expert_names: list[str | None] | None = None
