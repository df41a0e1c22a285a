# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Token-weighted perplexity of a causal LM on texts: total NLL over total predicted tokens, not a mean of means.

>>> import math
>>> NLLTotal(nll=2 * math.log(4.0), tokens=2).perplexity
4.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["NLLTotal", "per_text_nll", "text_nll"]


@dataclass(frozen=True)
class NLLTotal:
    """Summed negative log-likelihood (nats) and the number of tokens it was summed over; totals add up exactly."""

    nll: float
    tokens: int

    def __add__(self, other: NLLTotal) -> NLLTotal:
        return NLLTotal(self.nll + other.nll, self.tokens + other.tokens)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")


def text_nll(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_tokens: int = 256, batch_size: int = 8
) -> NLLTotal:
    """NLL of ``model`` on the first ``max_tokens`` tokens of all ``texts`` together."""
    return sum(per_text_nll(model, tokenizer, texts, max_tokens=max_tokens, batch_size=batch_size), NLLTotal(0.0, 0))


@torch.inference_mode()
def per_text_nll(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_tokens: int = 256, batch_size: int = 8
) -> list[NLLTotal]:
    """NLL of ``model`` on each text's first ``max_tokens`` tokens (no special tokens; the first token of each text
    is context only, as it has nothing to be predicted from)."""
    device = next(model.parameters()).device
    totals: list[NLLTotal] = []
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            add_special_tokens=False,
            truncation=True,
            max_length=max_tokens,
            padding=True,
            return_tensors="pt",
        ).to(device)
        logits = model(**batch).logits[:, :-1].float()
        targets = batch["input_ids"][:, 1:]
        mask = batch["attention_mask"][:, 1:].to(logits.dtype)
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none") * mask
        totals += [NLLTotal(float(nll), int(count)) for nll, count in zip(losses.sum(1), mask.sum(1), strict=True)]
    return totals
