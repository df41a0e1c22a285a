# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""RoutingTables: the score table ``S = E W + beta`` (V x N), its per-token entropy and votes, filled row by row.

A new head (after any edit) would cost a full ``V x d x N`` product and ``V x N`` softmaxes if the table were
built at once: 0.7 s at V = 49,152, d = 576, N = 1,024 on two cores, more than the solve itself. Prompts use a few
thousand distinct tokens, so rows are computed the first time a prompt needs them and kept; the whole table is
built only when asked for (`scores`, `entropy`, `votes`). Each row is the same function of the head however it is
reached, so a lazily filled table equals an eagerly built one.

>>> import torch
>>> tables = RoutingTables(1, ("a", "b"), torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
...                        torch.eye(2), torch.ones(2, dtype=torch.bool))
>>> ids, usable = tables.lookup(torch.tensor([[1, 1]]))
>>> tables.filled_rows, tables.votes.tolist(), tables.filled_rows
(1, [0, 1], 2)
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from .statistics import check_token_ids, normalize_columns, token_entropy

__all__ = ["RoutingTables"]

_FILL_BLOCK = 8192  # rows per block when filling: bounds the temporary (block x N) tensors


class RoutingTables:
    """Everything routing needs, derived from one version of the store.

    Args:
        version: the store version these tables were derived from.
        names: the experts, in column order.
        weight, bias: the unnormalised ridge solution ``W`` (d x N) and ``beta`` (N), float64.
        embedding: the frozen table ``E`` (V x d) the rows are computed from.
        usable: the ids that may vote (V, bool): all but the never-counted ones.
        normalize: divide each expert's column and bias by its norm before tabulating.
        extra_scores: adds a term to the rows of the given ids (u,) -> (u x N) float32 (the naive-Bayes blend).
    """

    def __init__(
        self,
        version: int,
        names: tuple[str, ...],
        weight: torch.Tensor,
        bias: torch.Tensor,
        embedding: torch.Tensor,
        usable: torch.Tensor,
        *,
        normalize: bool = True,
        extra_scores: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.version, self.names, self.weight, self.bias, self.usable = version, names, weight, bias, usable
        head_weight, head_bias = normalize_columns(weight, bias) if normalize else (weight, bias)
        # float32 head: the table is memory-bound (one pass over E); its error (~1e-6 relative) is below float32's own
        # rounding of a float64 product.
        self._head = head_weight.to(torch.float32), head_bias.to(torch.float32)
        self._embedding = embedding
        self._extra = extra_scores
        vocab_size, num_experts = embedding.shape[0], weight.shape[1]
        device = embedding.device
        # torch.empty: pages of rows never routed are never touched, so memory follows the vocabulary actually used.
        # Normal tensors even when derived under route()'s inference mode, so that forward() can fill them later.
        with torch.inference_mode(False):
            self._scores = torch.empty(vocab_size, num_experts, device=device)
            self._entropy = torch.empty(vocab_size, device=device)
            self._votes = torch.empty(vocab_size, dtype=torch.long, device=device)
            self._filled = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        self._complete = False
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return self._scores.device

    @property
    def filled_rows(self) -> int:
        """How many vocabulary rows have been computed so far."""
        return int(self._filled.sum())

    @property
    def scores(self) -> torch.Tensor:
        """``E W + beta`` per vocabulary id (V x N, float32), column-normalised if the settings say so, plus the
        extra term (the weighted naive-Bayes log-likelihoods). Builds every row."""
        self._fill_all()
        return self._scores

    @property
    def entropy(self) -> torch.Tensor:
        """Entropy of the softmax over experts of each row of `scores` (V). Builds every row."""
        self._fill_all()
        return self._entropy

    @property
    def votes(self) -> torch.Tensor:
        """The argmax expert of each vocabulary id (V). Builds every row."""
        self._fill_all()
        return self._votes

    @property
    def filled_scores(self) -> torch.Tensor:
        """The score table as filled so far: valid at the rows of ids passed to [`lookup`], undefined elsewhere."""
        return self._scores

    def scores_at(self, ids: torch.Tensor) -> torch.Tensor:
        """Score rows of ``ids`` (any shape, int64) as ``ids.shape + (N,)``."""
        self.fill(ids)
        return self._scores[ids]

    def entropy_at(self, ids: torch.Tensor) -> torch.Tensor:
        self.fill(ids)
        return self._entropy[ids]

    def votes_at(self, ids: torch.Tensor) -> torch.Tensor:
        self.fill(ids)
        return self._votes[ids]

    def lookup(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked ids (B x L, int64, on the tables' device; masked positions set to 0) and which positions vote (B x
        L, bool: present and not a never-counted id); the rows of these ids are filled. A 1-D input is one prompt."""
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
            attention_mask = attention_mask[None] if attention_mask is not None else None
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}.")
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            ids = check_token_ids(input_ids, len(self.usable))
            self.fill(ids)
            return ids, self.usable[ids]
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
                f"{tuple(input_ids.shape)}; they must match."
            )
        present = attention_mask.to(device=self.device, dtype=torch.bool)
        check_token_ids(input_ids[present], len(self.usable))
        ids = input_ids.masked_fill(~present, 0).to(torch.long)
        self.fill(ids)
        return ids, present & self.usable[ids]

    def fill(self, ids: torch.Tensor) -> None:
        """Computes the rows of ``ids`` that are not there yet (safe from several threads)."""
        if self._complete or bool(self._filled[ids].all()):
            return
        with self._lock:
            wanted = torch.unique(ids)
            missing = wanted[~self._filled[wanted]]
            for start in range(0, len(missing), _FILL_BLOCK):
                self._compute(missing[start : start + _FILL_BLOCK])
            self._complete = bool(self._filled.all())

    def _fill_all(self) -> None:
        if not self._complete:
            self.fill(torch.arange(len(self._filled), device=self.device))

    @torch.inference_mode(False)
    @torch.no_grad()
    def _compute(self, rows: torch.Tensor) -> None:
        head_weight, head_bias = self._head
        scores = torch.addmm(head_bias, self._embedding[rows].to(torch.float32), head_weight)
        if self._extra is not None:
            scores += self._extra(rows)
        self._scores[rows] = scores
        self._entropy[rows] = token_entropy(scores)
        self._votes[rows] = scores.argmax(dim=1)
        self._filled[rows] = True  # last: a reader that sees the flag sees the row
