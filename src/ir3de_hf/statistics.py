# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""IR3DE sufficient statistics as token histograms (pure torch: no transformers here, so the math reads alone).

Every feature row of IR3DE is a row of the augmented embedding table ``Ẽ = [E, 1]``: a token ``t`` gives
``x = [E[t], 1]``. With ``c_n`` the count of each vocabulary id in the text of expert ``n`` (masked positions
excluded), the reference implementation's per-token sums collapse exactly into

    A_n = Ẽᵀ diag(c_n) Ẽ        b_n = Ẽᵀ c_n

so fitting is counting (``bincount``), and the ridge system ``(A + λI) W̃ = B`` with ``A = Σ_n A_n`` and
``B = [b_1 … b_N]`` is built from the histograms in one ``O(V d²)`` product over the tokens actually seen.

>>> import torch
>>> counts = token_histogram(torch.tensor([[1, 2, 2, 0]]), torch.tensor([[1, 1, 1, 0]]), vocab_size=4)
>>> counts.tolist()
[0, 1, 2, 0]
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = [
    "TokenCounter",
    "augmented_moments",
    "check_token_ids",
    "explicit_moments",
    "merge_histograms",
    "naive_bayes_scores",
    "normalize_columns",
    "ridge_solve",
    "token_entropy",
    "token_histogram",
    "weighted_gram",
]

# Rows per block of the blocked products (memory: block x (d+1) float64, 134 MB at d = 4,096) and the column block
# of the symmetric split (only tables wider than one block are split).
_ROW_BLOCK = 4096
_COLUMN_BLOCK = 1024


class TokenCounter:
    """Accumulates a token histogram from token ids, never counting ``never_counted`` ids, up to a ``budget``: the one
    place where token ids become counts (`token_histogram`, `add_expert` and the streaming fit all count here).

    Args:
        vocab_size: length of the histogram (rows of the router's embedding table).
        never_counted: ids skipped (padding, special tokens); they do not use up the budget.
        budget: the most tokens to count (None: no limit).
        counts: a histogram to continue from (a resumed fit); it is updated in place.

    >>> counter = TokenCounter(vocab_size=5, never_counted=[0])
    >>> counter.add(torch.tensor([0, 1, 1, 4]))
    3
    >>> counter.counts.tolist()
    [0, 2, 0, 0, 1]
    """

    def __init__(
        self,
        vocab_size: int,
        never_counted: Iterable[int] = (),
        budget: int | None = None,
        counts: torch.Tensor | None = None,
    ) -> None:
        self.vocab_size = vocab_size
        self.budget = budget
        self.counts = counts if counts is not None else torch.zeros(vocab_size, dtype=torch.int64)
        self._usable = torch.ones(vocab_size, dtype=torch.bool, device=self.counts.device)
        self._usable[list(never_counted)] = False

    @property
    def tokens(self) -> int:
        return int(self.counts.sum())

    @property
    def full(self) -> bool:
        return self.budget is not None and self.tokens >= self.budget

    def add(self, ids: torch.Tensor) -> int:
        """Counts the ids (any shape; checked against the vocabulary) and returns how many were counted."""
        ids = check_token_ids(ids.reshape(-1), self.vocab_size)
        ids = ids[self._usable[ids]]
        if self.budget is not None:
            ids = ids[: max(self.budget - self.tokens, 0)]
        self.counts += torch.bincount(ids, minlength=self.vocab_size)
        return ids.numel()


def token_histogram(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    vocab_size: int,
    ignored_token_ids: Iterable[int] = (),
) -> torch.Tensor:
    """Counts each vocabulary id over the unmasked positions of ``input_ids`` (an int64 vector of length V).

    Positions where ``attention_mask`` is 0 and ids listed in ``ignored_token_ids`` (padding, special tokens) are
    never counted: the reference code let padding into its statistics, which biases every expert towards EOS.
    """
    ids = input_ids.reshape(-1)
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
                f"{tuple(input_ids.shape)}; they must match."
            )
        ids = ids[attention_mask.reshape(-1).to(torch.bool)]
    counter = TokenCounter(
        vocab_size, ignored_token_ids, counts=torch.zeros(vocab_size, dtype=torch.int64, device=ids.device)
    )
    counter.add(ids)
    return counter.counts


def merge_histograms(*histograms: torch.Tensor) -> torch.Tensor:
    """Adds histograms counted on separate shards, processes or machines: statistics are sums, so merging is exact."""
    if not histograms:
        raise ValueError("merge_histograms needs at least one histogram.")
    shapes = {tuple(h.shape) for h in histograms}
    if len(shapes) != 1:
        raise ValueError(f"Histograms must all have the same shape to be merged, got shapes {sorted(shapes)}.")
    return torch.stack([h.to(torch.int64) for h in histograms]).sum(dim=0)


def augmented_moments(embedding: torch.Tensor, expert_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``A = Ẽᵀ diag(Σ_n c_n) Ẽ`` ((d+1) x (d+1)) and ``B = Ẽᵀ Cᵀ`` ((d+1) x N) in float64.

    Args:
        embedding: the frozen token-embedding table ``E`` (V x d).
        expert_counts: one histogram per expert (N x V, integer counts).

    Only the rows of tokens that occur at least once enter the product, which is what makes a fit on billions of
    tokens cost ``O(V_seen d²)`` instead of ``O(tokens d²)``; ``A`` is one product over the summed histogram, never
    one per expert.
    """
    vocab_size = embedding.shape[0]
    if expert_counts.ndim != 2 or expert_counts.shape[1] != vocab_size:
        raise ValueError(
            f"expert_counts must have shape (num_experts, {vocab_size}), got {tuple(expert_counts.shape)}."
        )
    counts = expert_counts.to(device=embedding.device)
    seen = torch.nonzero(counts.sum(dim=0), as_tuple=True)[0]
    a = weighted_gram(embedding, seen, counts[:, seen].sum(dim=0))
    b = torch.zeros(embedding.shape[1] + 1, counts.shape[0], dtype=torch.float64, device=embedding.device)
    for start in range(0, len(seen), _ROW_BLOCK):
        rows = _augment(embedding[seen[start : start + _ROW_BLOCK]].to(torch.float64))
        b += rows.T @ counts[:, seen[start : start + _ROW_BLOCK]].T.to(torch.float64)
    return a, b


def weighted_gram(embedding: torch.Tensor, token_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_i w_i x_i x_iᵀ`` over the augmented rows ``x_i = [E[t_i], 1]`` ((d+1) x (d+1), float64).

    The one product behind ``A``: over a histogram (weights = counts) or over the change of one (weights may be
    negative, for a removed expert). Rows go in blocks, so memory stays ``O(block x d)`` at any vocabulary; for wide
    tables only the lower block triangle is multiplied and mirrored (A is symmetric), about half the flops.
    """
    width = embedding.shape[1] + 1
    gram = torch.zeros(width, width, dtype=torch.float64, device=embedding.device)
    blocks = [slice(start, min(start + _COLUMN_BLOCK, width)) for start in range(0, width, _COLUMN_BLOCK)]
    for start in range(0, len(token_ids), _ROW_BLOCK):
        rows = _augment(embedding[token_ids[start : start + _ROW_BLOCK]].to(torch.float64))
        weighted = rows * weights[start : start + _ROW_BLOCK, None].to(device=rows.device, dtype=torch.float64)
        if len(blocks) == 1:
            gram += weighted.T @ rows
            continue
        for i, rows_i in enumerate(blocks):
            for cols in blocks[: i + 1]:
                gram[rows_i, cols] += weighted[:, rows_i].T @ rows[:, cols]
    if len(blocks) > 1:
        lower = torch.tril(gram, diagonal=-1)
        gram = torch.tril(gram) + lower.T
    return gram


def explicit_moments(
    embedding: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    expert_index: torch.Tensor,
    num_experts: int,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference formulation, ``A = Σ x xᵀ`` and ``B = Σ x yᵀ`` over explicit per-token rows.

    Kept to prove (in tests) and to time (in benchmarks) the histogram identity; never used to fit.
    ``expert_index`` gives the expert of each row of ``input_ids`` (B,).
    """
    mask = attention_mask.to(torch.bool)
    rows = _augment(embedding[input_ids[mask]].to(dtype))
    labels = expert_index.to(input_ids.device)[:, None].expand_as(input_ids)[mask]
    targets = torch.nn.functional.one_hot(labels, num_experts).to(dtype)
    return rows.T @ rows, rows.T @ targets


def ridge_solve(a: torch.Tensor, b: torch.Tensor, ridge_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Solves ``(A + λI) W̃ = B`` and splits ``W̃`` into the weights ``W`` (d x N) and the bias row ``beta`` (N).

    As in the reference implementation, λ also penalises the bias row. λ > 0 keeps the system positive definite
    even for tokens never seen, so a Cholesky solve applies (on 2 CPU cores it was no slower than LU at d = 576 and
    faster at d = 4,096, where each edit re-solves); should rounding make the factorisation fail, LU solves it.
    """
    if not ridge_lambda > 0:
        raise ValueError(f"ridge_lambda must be > 0, got {ridge_lambda}.")
    regularised = a + ridge_lambda * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    factor, info = torch.linalg.cholesky_ex(regularised)
    solution = torch.cholesky_solve(b, factor) if int(info) == 0 else torch.linalg.solve(regularised, b)
    return solution[:-1], solution[-1]


def normalize_columns(
    weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Divides each expert's column of ``W`` and its bias by the column norm, so experts with more text do not win
    by scale alone (a zero norm is replaced by ``eps``, as in the reference code)."""
    norms = weight.norm(dim=0)
    norms = torch.where(norms == 0, torch.full_like(norms, eps), norms)
    return weight / norms, bias / norms


def naive_bayes_scores(
    expert_counts: torch.Tensor,
    alpha: float,
    *,
    expert_totals: torch.Tensor | None = None,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Multinomial naive-Bayes log-likelihood of each token under each expert, centred per token (V x N, float64).

    ``log((c_n[t] + alpha) / (C_n + alpha V))`` from the same histograms as the ridge head (``C_n`` the tokens of
    expert n), minus its mean over the experts: a token's evidence for one expert against the others. The mean of
    these rows over a prompt is, up to a constant, naive Bayes' log-posterior with a uniform prior. Rows of zero
    counts (experts imported as moments) get the mean of the others, so they neither gain nor lose.

    ``expert_counts`` may hold only some columns of the histograms (N x u, the tokens a table needs now): then give
    ``expert_totals`` (N, the ``C_n``) and ``vocab_size``; each row of the result depends on its own column only.
    """
    counts = expert_counts.to(torch.float64)
    totals = counts.sum(dim=1) if expert_totals is None else expert_totals.to(counts)
    has_text = totals > 0
    vocab_size = counts.shape[1] if vocab_size is None else vocab_size
    log_likelihood = torch.log((counts + alpha) / (totals[:, None] + alpha * vocab_size)).T
    if not bool(has_text.any()):
        return torch.zeros_like(log_likelihood)
    neutral = log_likelihood[:, has_text].mean(dim=1, keepdim=True)
    log_likelihood = torch.where(has_text[None, :], log_likelihood, neutral)
    return log_likelihood - log_likelihood.mean(dim=1, keepdim=True)


def token_entropy(scores: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over experts of each row of ``scores`` (… x N): low entropy = a decisive token."""
    log_probs = torch.log_softmax(scores, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def _augment(rows: torch.Tensor) -> torch.Tensor:
    return torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype, device=rows.device)], dim=1)


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Returns ``input_ids`` as int64, or raises a clear error for non-integer ids or ids outside the vocabulary."""
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}.")
    ids = input_ids.to(torch.long)
    if ids.numel():
        low, high = (int(bound) for bound in torch.aminmax(ids))
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"Token ids must lie in [0, {vocab_size}) (the router's vocabulary), got ids in [{low}, {high}]. "
                "The ids come from a different tokenizer than the router's encoder."
            )
    return ids
