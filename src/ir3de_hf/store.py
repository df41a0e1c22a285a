# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""ExpertStatisticsStore: each expert's statistics, their cached moments and the routing tables derived from them.

The store holds one immutable *state* (expert names, histograms, imported moments, solver settings, a version
number). Every change (an expert added, replaced or removed, or a new ridge λ, normalisation or set of never-counted
tokens) builds a new state with the next version and swaps the reference under a lock. Routing reads the state once
and gets the [`RoutingTables`] of exactly that version, so a route running while another thread edits the experts
sees either the router before the edit or the router after it, never a mix.

What is costly is shared rather than copied: the frozen embedding table, each expert's statistics (tensors are never
written in place) and each expert's moments ``(A_n, b_n)``, cached per expert, so adding an expert costs one product
over its own tokens and removing one costs a re-solve and the score table.

>>> import torch
>>> store = ExpertStatisticsStore(torch.nn.Embedding(6, 2), RoutingSettings(1e-2, True, ()))
>>> store.add("low", histogram=torch.tensor([5, 5, 0, 0, 0, 0]))
>>> store.add("high", histogram=torch.tensor([0, 0, 0, 0, 5, 5]))
>>> store.names, store.version
(('low', 'high'), 2)
>>> store.tables().scores.shape
torch.Size([6, 2])
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .statistics import (
    augmented_moments,
    check_token_ids,
    naive_bayes_scores,
    normalize_columns,
    ridge_solve,
    token_entropy,
)

__all__ = [
    "ExpertStatisticsStore",
    "RoutingSettings",
    "RoutingTables",
    "checkpoint_tensors",
    "placeholder_store",
    "store_from_checkpoint",
]

Moments = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class RoutingSettings:
    """What the head depends on besides the statistics: the ridge penalty λ, the column normalisation, the ids
    that are never counted and never vote (padding, special tokens), and the weight and smoothing of the naive-Bayes
    term added to the score table (0: the ridge head alone)."""

    ridge_lambda: float
    normalize_columns: bool
    never_counted_ids: tuple[int, ...]
    naive_bayes_weight: float = 0.0
    naive_bayes_alpha: float = 1.0


@dataclass(frozen=True)
class RoutingTables:
    """Everything routing needs, derived from one version of the store.

    Attributes:
        version: the store version these tables were derived from.
        names: the experts, in column order.
        weight, bias: the unnormalised ridge solution ``W`` (d x N) and ``beta`` (N), float64.
        scores: ``E W + beta`` per vocabulary id (V x N, float32), column-normalised if the settings say so, plus
            ``naive_bayes_weight`` times the centred naive-Bayes log-likelihoods of the histograms.
        entropy: entropy of the softmax over experts of each row of ``scores`` (V).
        votes: the argmax expert of each vocabulary id (V).
        usable: the ids that may vote (V, bool): all but the never-counted ones.
    """

    version: int
    names: tuple[str, ...]
    weight: torch.Tensor
    bias: torch.Tensor
    scores: torch.Tensor
    entropy: torch.Tensor
    votes: torch.Tensor
    usable: torch.Tensor

    def lookup(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked ids (B x L, int64, on the tables' device; masked positions set to 0) and which positions vote (B x
        L, bool: present and not a never-counted id). A 1-D input is one prompt."""
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
            attention_mask = attention_mask[None] if attention_mask is not None else None
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}.")
        input_ids = input_ids.to(self.scores.device)
        if attention_mask is None:
            ids = check_token_ids(input_ids, len(self.usable))
            return ids, self.usable[ids]
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
                f"{tuple(input_ids.shape)}; they must match."
            )
        present = attention_mask.to(device=self.scores.device, dtype=torch.bool)
        check_token_ids(input_ids[present], len(self.usable))
        ids = input_ids.masked_fill(~present, 0).to(torch.long)
        return ids, present & self.usable[ids]


class _Expert:
    """One expert's statistics: a token histogram, or moments imported from elsewhere. Immutable; it carries the cache
    of its moments ``(A_n, b_n)`` per (device, never-counted ids), shared by every state and copy that holds it."""

    __slots__ = ("_moments", "histogram", "imported")

    def __init__(self, histogram: torch.Tensor | None, imported: Moments | None) -> None:
        self.histogram = histogram
        self.imported = imported
        self._moments: dict[tuple[torch.device, tuple[int, ...]], Moments] = {}

    @property
    def token_count(self) -> int:
        if self.imported is not None:
            return round(float(self.imported[1][-1]))
        return int(self.histogram.sum())  # type: ignore[union-attr]

    def moments(self, embedding: torch.Tensor, never_counted: tuple[int, ...]) -> Moments:
        key = (embedding.device, never_counted)
        cached = self._moments.get(key)
        if cached is None:
            if self.imported is not None:
                cached = (self.imported[0].to(embedding.device), self.imported[1].to(embedding.device))
            else:
                counts = self.histogram.to(embedding.device).clone()  # type: ignore[union-attr]
                counts[list(never_counted)] = 0
                a_n, b_n = augmented_moments(embedding, counts[None])
                cached = (a_n, b_n[:, 0])
            self._moments[key] = cached
        return cached


@dataclass(frozen=True)
class _State:
    version: int
    settings: RoutingSettings
    names: tuple[str, ...] = ()
    experts: tuple[_Expert, ...] = ()
    tables: list[RoutingTables] = field(default_factory=list)  # at most one, filled on first use


class ExpertStatisticsStore:
    """Per-expert statistics of a router and the routing tables derived from them (see the module docstring).

    Args:
        embeddings: the frozen token-embedding module (V x d); shared, never modified.
        settings: the solver settings of the first state.
    """

    def __init__(self, embeddings: nn.Embedding, settings: RoutingSettings) -> None:
        self.embeddings = embeddings
        self._state = _State(0, settings)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reading

    @property
    def version(self) -> int:
        """Bumped by every change of statistics or settings."""
        return self._state.version

    @property
    def names(self) -> tuple[str, ...]:
        return self._state.names

    @property
    def settings(self) -> RoutingSettings:
        return self._state.settings

    def histogram(self, name: str) -> torch.Tensor | None:
        """Expert ``name``'s token histogram (int64, V), or None for an expert imported as moments."""
        return self._expert(name).histogram

    def imported_moments(self, name: str) -> Moments | None:
        """Expert ``name``'s imported ``(A_n, b_n)``, or None for a histogram expert."""
        return self._expert(name).imported

    def moments(self, name: str) -> Moments:
        """Expert ``name``'s moments ``(A_n, b_n)`` (float64, (d+1, d+1) and (d+1,)) over the current embedding table
        and never-counted ids: what the reference implementation sums per domain. Cached."""
        embedding = self.embeddings.weight.detach()
        return self._expert(name).moments(embedding, self._state.settings.never_counted_ids)

    def token_counts(self) -> list[int]:
        """Tokens counted per expert, in order (for imported moments, the bias entry of ``b_n``)."""
        return [expert.token_count for expert in self._state.experts]

    def counts_matrix(self) -> torch.Tensor:
        """The histograms as one (N, V) int64 tensor; rows of imported experts are zero."""
        vocab_size = self.embeddings.weight.shape[0]
        rows = [
            expert.histogram if expert.histogram is not None else torch.zeros(vocab_size, dtype=torch.int64)
            for expert in self._state.experts
        ]
        return torch.stack(rows) if rows else torch.zeros(0, vocab_size, dtype=torch.int64)

    # ------------------------------------------------------------------ editing

    def add(self, name: str, *, histogram: torch.Tensor | None = None, moments: Moments | None = None) -> None:
        """Appends expert ``name`` with a histogram (int64, V) or imported moments ``(A_n, b_n)``."""
        with self._lock:
            state = self._state
            if name in state.names:
                raise ValueError(f"The store already has an expert named {name!r}.")
            self._publish(state, names=(*state.names, name), experts=(*state.experts, _Expert(histogram, moments)))

    def replace(self, name: str, *, histogram: torch.Tensor | None = None, moments: Moments | None = None) -> None:
        """Replaces the statistics of expert ``name``, keeping its position."""
        with self._lock:
            state = self._state
            index = self._index(state, name)
            experts = list(state.experts)
            experts[index] = _Expert(histogram, moments)
            self._publish(state, experts=tuple(experts))

    def remove(self, name: str) -> None:
        """Drops expert ``name``; the others keep their statistics and cached moments."""
        with self._lock:
            state = self._state
            index = self._index(state, name)
            keep = [i for i in range(len(state.names)) if i != index]
            self._publish(
                state,
                names=tuple(state.names[i] for i in keep),
                experts=tuple(state.experts[i] for i in keep),
            )

    def configure(self, settings: RoutingSettings) -> None:
        """Sets the solver settings; a new version only if they differ from the current ones."""
        if settings != self._state.settings:
            with self._lock:
                if settings != self._state.settings:
                    self._publish(self._state, settings=settings)

    def copy(self) -> ExpertStatisticsStore:
        """An independent store with the same experts: edits of one never show in the other. Cheap: the embedding
        table, the statistics, the cached moments and the current tables are shared, not copied."""
        twin = ExpertStatisticsStore(self.embeddings, self._state.settings)
        twin._state = self._state
        return twin

    # ------------------------------------------------------------------ solving

    def tables(self, settings: RoutingSettings | None = None) -> RoutingTables:
        """The routing tables of the current state (derived on first use, then cached with the state).

        ``settings``, when given, are applied first (see [`configure`]): the router passes its config here, so a
        changed ``ridge_lambda`` or ``ignored_token_ids`` takes effect on the next route.
        """
        if settings is not None:
            self.configure(settings)
        state = self._state
        embedding = self.embeddings.weight
        if state.tables and state.tables[0].scores.device == embedding.device:
            return state.tables[0]
        if not state.names:
            raise ValueError("The router has no experts yet; add one with router.add_expert(name, texts=[...]).")
        tables = _derive(state, embedding)
        state.tables[:] = [tables]
        return tables

    def _publish(self, state: _State, **changes: object) -> None:
        self._state = replace(state, version=state.version + 1, tables=[], **changes)  # type: ignore[arg-type]

    def _expert(self, name: str) -> _Expert:
        state = self._state
        return state.experts[self._index(state, name)]

    @staticmethod
    def _index(state: _State, name: str) -> int:
        if name not in state.names:
            known = ", ".join(state.names) or "none"
            raise ValueError(f"No expert named {name!r}; the router's experts are: {known}.")
        return state.names.index(name)


def _derive(state: _State, embedding: torch.Tensor) -> RoutingTables:
    """Solves the head of ``state`` and tabulates its scores over the vocabulary."""
    settings = state.settings
    embedding = embedding.detach()
    moments = [expert.moments(embedding, settings.never_counted_ids) for expert in state.experts]
    a = torch.stack([a_n for a_n, _ in moments]).sum(dim=0)
    b = torch.stack([b_n for _, b_n in moments], dim=1)
    weight, bias = ridge_solve(a, b, settings.ridge_lambda)
    scaled_weight, scaled_bias = normalize_columns(weight, bias) if settings.normalize_columns else (weight, bias)
    # float32 product: the table is memory-bound (one pass over E); its error (~1e-6 relative) is below float32's
    # own rounding of a float64 product.
    scores = torch.addmm(scaled_bias.to(torch.float32), embedding.float(), scaled_weight.to(torch.float32))
    usable = torch.ones(embedding.shape[0], dtype=torch.bool, device=embedding.device)
    usable[list(settings.never_counted_ids)] = False
    if settings.naive_bayes_weight:
        counts = torch.stack(
            [
                expert.histogram.to(embedding.device) * usable
                if expert.histogram is not None
                else torch.zeros(embedding.shape[0], dtype=torch.int64, device=embedding.device)
                for expert in state.experts
            ]
        )
        bayes = naive_bayes_scores(counts, settings.naive_bayes_alpha)
        scores = scores + (settings.naive_bayes_weight * bayes).to(torch.float32)
    return RoutingTables(
        state.version, state.names, weight, bias, scores, token_entropy(scores), scores.argmax(dim=1), usable
    )


# ---------------------------------------------------------------------------------------------- checkpoint layout

COUNTS_KEY = "expert_counts"
MOMENT_KEYS = ("imported_moments_a", "imported_moments_b", "imported_moments_index")


def checkpoint_tensors(store: ExpertStatisticsStore, with_index: bool = True) -> dict[str, torch.Tensor]:
    """The store's statistics as the tensors of ``model.safetensors``: ``expert_counts`` (N, V; zero rows for
    imported experts) and, when some experts were imported as moments, ``imported_moments_a`` (M, d+1, d+1),
    ``imported_moments_b`` (M, d+1) and ``imported_moments_index`` (M,: the position of each among the experts;
    format 1 had no index and relied on the registry's order)."""
    tensors = {COUNTS_KEY: store.counts_matrix()}
    imported = [(i, store.imported_moments(name)) for i, name in enumerate(store.names)]
    pairs = [(i, pair) for i, pair in imported if pair is not None]
    if pairs:
        tensors[MOMENT_KEYS[0]] = torch.stack([a for _, (a, _) in pairs])
        tensors[MOMENT_KEYS[1]] = torch.stack([b for _, (_, b) in pairs])
        if with_index:
            tensors[MOMENT_KEYS[2]] = torch.tensor([i for i, _ in pairs], dtype=torch.int64)
    return tensors


def store_from_checkpoint(
    embeddings: nn.Embedding,
    settings: RoutingSettings,
    names: Sequence[str],
    imported: Sequence[int],
    tensors: dict[str, torch.Tensor],
) -> ExpertStatisticsStore:
    """The inverse of [`checkpoint_tensors`]; ``imported`` are the positions the registry marks as moments."""
    counts = tensors[COUNTS_KEY]
    if counts.shape[0] != len(names):
        raise ValueError(f"{COUNTS_KEY} has {counts.shape[0]} rows but the config lists {len(names)} experts")
    index = tensors.get(MOMENT_KEYS[2])
    if index is not None and index.tolist() != list(imported):
        raise ValueError(
            f"{MOMENT_KEYS[2]} says experts {index.tolist()} were imported as moments, the config says "
            f"{list(imported)}: the weights and config.json do not belong together"
        )
    if bool((counts < 0).any()):
        raise ValueError(f"{COUNTS_KEY} holds negative token counts")
    empty = [names[i] for i in range(len(names)) if i not in imported and not bool(counts[i].any())]
    if empty:
        raise ValueError(f"{COUNTS_KEY} has no token at all for expert(s) {empty}")
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
            store.add(name, histogram=counts[position])
    return store


def placeholder_store(
    embeddings: nn.Embedding, settings: RoutingSettings, names: Sequence[str], imported: Sequence[int]
) -> ExpertStatisticsStore:
    """A store of zeros with the layout of a checkpoint (what a router is built with before its weights load)."""
    vocab_size, width = embeddings.weight.shape[0], embeddings.weight.shape[1] + 1
    store = ExpertStatisticsStore(embeddings, settings)
    for position, name in enumerate(names):
        if position in imported:
            zeros = torch.zeros(width, width, dtype=torch.float64), torch.zeros(width, dtype=torch.float64)
            store.add(name, moments=zeros)
        else:
            store.add(name, histogram=torch.zeros(vocab_size, dtype=torch.int64))
    return store
