# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The statistics in ``model.safetensors``: an [`ExpertStatisticsStore`] to tensors and back (pure torch).

Format 3 (this version) stores the histograms sparse, as one CSR matrix, because a small expert uses a few thousand
of the vocabulary's ids: ``expert_offsets`` (N+1, int64), ``expert_token_ids`` (int32) and ``expert_token_counts``
(int64); imported experts have no entries. Beside them ``moments_a`` (``A`` of the histogram experts, (d+1) x
(d+1)) and ``moments_b`` (``B``, N x (d+1), zero rows for imported experts), so that a load is one solve instead of
the products over the vocabulary; both are verified against the histograms on load (Freivalds' check: one random
vector, ``O(V d + nnz)``), so a file whose moments disagree with its histograms is refused. Experts imported as
moments keep ``imported_moments_a`` / ``_b`` / ``_index`` as in format 2. Formats 1 and 2 (dense ``expert_counts``
N x V; format 1 without ``imported_moments_index``) load unchanged, their moments computed once.

>>> import torch
>>> from ir3de_hf.store import ExpertStatisticsStore, RoutingSettings
>>> store = ExpertStatisticsStore(torch.nn.Embedding(5, 2), RoutingSettings(1e-2, True, ()))
>>> store.add("a", histogram=torch.tensor([0, 3, 0, 1, 0]))
>>> tensors = checkpoint_tensors(store)
>>> tensors["expert_offsets"].tolist(), tensors["expert_token_ids"].tolist(), tensors["expert_token_counts"].tolist()
([0, 2], [1, 3], [3, 1])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import torch
from torch import nn

from .store import ExpertStatisticsStore, Gram, RoutingSettings, table_key

__all__ = ["FORMAT_KEYS", "MOMENT_KEYS", "checkpoint_tensors", "store_from_checkpoint"]

DENSE_KEY = "expert_counts"  # formats 1 and 2
SPARSE_KEYS = ("expert_offsets", "expert_token_ids", "expert_token_counts")
SET_KEYS = ("moments_a", "moments_b")
MOMENT_KEYS = ("imported_moments_a", "imported_moments_b", "imported_moments_index")
FORMAT_KEYS = (DENSE_KEY, *SPARSE_KEYS, *SET_KEYS, *MOMENT_KEYS)

_TOLERANCE = 1e-9  # relative to the sum of absolute terms: float64 rounding of products over millions of tokens
_ROWS = 4096  # embedding rows per block of the check (float64 copies of the table stay small)


def checkpoint_tensors(store: ExpertStatisticsStore) -> dict[str, torch.Tensor]:
    """The store's statistics as the tensors of a format-3 ``model.safetensors`` (see the module docstring)."""
    ids, counts, offsets = [], [], [0]
    for name in store.names:
        histogram = store.histogram(name)
        if histogram is not None:
            support = torch.nonzero(histogram, as_tuple=True)[0]
            ids.append(support.to(torch.int32))
            counts.append(histogram[support].to(torch.int64))
            offsets.append(offsets[-1] + len(support))
        else:
            offsets.append(offsets[-1])
    bias_moments = store.bias_moments().T.clone()
    imported = [(i, store.imported_moments(name)) for i, name in enumerate(store.names)]
    pairs = [(i, pair) for i, pair in imported if pair is not None]
    for i, _ in pairs:
        bias_moments[i] = 0
    tensors = {
        SPARSE_KEYS[0]: torch.tensor(offsets, dtype=torch.int64),
        SPARSE_KEYS[1]: torch.cat(ids) if ids else torch.zeros(0, dtype=torch.int32),
        SPARSE_KEYS[2]: torch.cat(counts) if counts else torch.zeros(0, dtype=torch.int64),
        SET_KEYS[0]: store.gram.a.cpu().clone(),
        SET_KEYS[1]: bias_moments.cpu(),
    }
    if pairs:
        tensors[MOMENT_KEYS[0]] = torch.stack([a for _, (a, _) in pairs]).cpu()
        tensors[MOMENT_KEYS[1]] = torch.stack([b for _, (_, b) in pairs]).cpu()
        tensors[MOMENT_KEYS[2]] = torch.tensor([i for i, _ in pairs], dtype=torch.int64)
    return tensors


def store_from_checkpoint(
    embeddings: nn.Embedding,
    settings: RoutingSettings,
    names: Sequence[str],
    imported: Sequence[int],
    tensors: Mapping[str, torch.Tensor],
) -> ExpertStatisticsStore:
    """The inverse of [`checkpoint_tensors`] (and the reader of formats 1 and 2); ``imported`` are the positions the
    registry marks as moments. Raises `ValueError` naming what is inconsistent."""
    vocab_size = embeddings.weight.shape[0]
    histograms = _sparse_histograms(tensors, len(names), vocab_size) if SPARSE_KEYS[0] in tensors else None
    if histograms is None:
        counts = tensors[DENSE_KEY]
        if counts.shape[0] != len(names):
            raise ValueError(f"{DENSE_KEY} has {counts.shape[0]} rows but the config lists {len(names)} experts")
        if bool((counts < 0).any()):
            raise ValueError(f"{DENSE_KEY} holds negative token counts")
        histograms = list(counts)
    index = tensors.get(MOMENT_KEYS[2])
    if index is not None and index.tolist() != list(imported):
        raise ValueError(
            f"{MOMENT_KEYS[2]} says experts {index.tolist()} were imported as moments, the config says "
            f"{list(imported)}: the weights and config.json do not belong together"
        )
    empty = [names[i] for i in range(len(names)) if i not in imported and not bool(histograms[i].any())]
    if empty:
        raise ValueError(f"the statistics have no token at all for expert(s) {empty}")
    moments = {}
    if imported:
        stacked_a, stacked_b = tensors[MOMENT_KEYS[0]], tensors[MOMENT_KEYS[1]]
        if not (torch.isfinite(stacked_a).all() and torch.isfinite(stacked_b).all()):
            raise ValueError("the imported moments hold NaN or infinite values")
        moments = {position: (stacked_a[k], stacked_b[k]) for k, position in enumerate(imported)}
    store = ExpertStatisticsStore(embeddings, settings)
    for position, name in enumerate(names):
        if position in moments:
            store.add(name, moments=moments[position])
        else:
            store.add(name, histogram=histograms[position])
    if SET_KEYS[0] in tensors:
        _seed_verified(store, tensors[SET_KEYS[0]], tensors[SET_KEYS[1]], histograms, set(imported))
    return store


def _sparse_histograms(tensors: Mapping[str, torch.Tensor], num_experts: int, vocab_size: int) -> list[torch.Tensor]:
    offsets, ids, counts = (tensors[key] for key in SPARSE_KEYS)
    if offsets.shape != (num_experts + 1,):
        raise ValueError(f"{SPARSE_KEYS[0]} has {len(offsets) - 1} experts but the config lists {num_experts}")
    if ids.shape != counts.shape:
        raise ValueError(f"{SPARSE_KEYS[1]} and {SPARSE_KEYS[2]} have different lengths ({len(ids)}, {len(counts)})")
    if int(offsets[0]) != 0 or int(offsets[-1]) != len(ids) or bool((offsets.diff() < 0).any()):
        raise ValueError(f"{SPARSE_KEYS[0]} must rise from 0 to {len(ids)}, the number of stored counts")
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"{SPARSE_KEYS[1]} holds ids outside the vocabulary [0, {vocab_size})")
    if bool((counts < 0).any()):
        raise ValueError(f"{SPARSE_KEYS[2]} holds negative token counts")
    bounds = offsets.tolist()
    histograms = []
    for start, end in pairwise(bounds):
        histogram = torch.zeros(vocab_size, dtype=torch.int64)
        histogram.index_add_(0, ids[start:end].to(torch.int64), counts[start:end])
        histograms.append(histogram)
    return histograms


def _seed_verified(
    store: ExpertStatisticsStore,
    a: torch.Tensor,
    b: torch.Tensor,
    histograms: Sequence[torch.Tensor],
    imported: set[int],
) -> None:
    """Checks the stored ``A`` and ``B`` against the histograms with one random vector (a wrong entry is caught with
    probability 1), then hands them to the store."""
    embedding = store.embeddings.weight.detach()
    width = embedding.shape[1] + 1
    if a.shape != (width, width) or b.shape != (len(histograms), width):
        raise ValueError(f"{SET_KEYS[0]} / {SET_KEYS[1]} have shapes {list(a.shape)} / {list(b.shape)}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError(f"{SET_KEYS[0]} / {SET_KEYS[1]} hold NaN or infinite values")
    never = list(store.settings.never_counted_ids)
    totals = store.counted_totals().cpu()
    vector = torch.randn(width, dtype=torch.float64)
    projected, magnitude = _project(embedding, vector)  # Ẽ r and |Ẽ| |r| per vocabulary id
    weights = totals.to(torch.float64)
    expected_a, bound_a = _back_project(embedding, weights * projected, weights * magnitude)
    checks = [(SET_KEYS[0], a @ vector, expected_a, bound_a)]
    projected[never], magnitude[never] = 0, 0
    expected_b = torch.zeros(len(histograms), dtype=torch.float64)
    bound_b = torch.zeros(len(histograms), dtype=torch.float64)
    for position, histogram in enumerate(histograms):
        if position not in imported:  # one float64 copy at a time: N of them would be N x V x 8 bytes
            counts = histogram.to(torch.float64)
            expected_b[position], bound_b[position] = counts @ projected, counts @ magnitude
    checks.append((SET_KEYS[1], b @ vector, expected_b, bound_b))
    for key, stored, expected, bound in checks:
        if bool(((stored - expected).abs() > _TOLERANCE * bound + 1e-12).any()):
            raise ValueError(
                f"{key} does not match the histograms stored beside it (the file was edited or damaged); "
                "save the router again from its statistics"
            )
    gram = Gram(totals.to(embedding.device), a.to(embedding.device), 0, table_key(embedding))
    store.seed(gram, b.T.to(embedding.device))


def _project(embedding: torch.Tensor, vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Ẽ r`` and ``|Ẽ| |r|`` per vocabulary id (float64), one pass over the table in row blocks."""
    values, magnitudes = [], []
    for start in range(0, embedding.shape[0], _ROWS):
        rows = embedding[start : start + _ROWS].cpu().to(torch.float64)
        values.append(rows @ vector[:-1] + vector[-1])
        magnitudes.append(rows.abs_() @ vector[:-1].abs() + vector[-1].abs())
    return torch.cat(values), torch.cat(magnitudes)


def _back_project(
    embedding: torch.Tensor, weights: torch.Tensor, magnitudes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Ẽᵀ w`` and ``|Ẽ|ᵀ m`` ((d+1,), float64), one pass over the table in row blocks."""
    total = torch.zeros(embedding.shape[1] + 1, dtype=torch.float64)
    bound = torch.zeros_like(total)
    for start in range(0, embedding.shape[0], _ROWS):
        rows = embedding[start : start + _ROWS].cpu().to(torch.float64)
        block, scale = weights[start : start + _ROWS], magnitudes[start : start + _ROWS]
        total[:-1] += rows.T @ block
        total[-1] += block.sum()
        bound[:-1] += rows.abs_().T @ scale
        bound[-1] += scale.sum()
    return total, bound
