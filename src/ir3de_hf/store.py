# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""ExpertStatisticsStore: each expert's statistics, the shared moments of the set, and the routing tables.

The store holds one immutable *state* (expert names, histograms, imported moments, solver settings, the summed
histogram, a version number). Every change (an expert added, replaced or removed, or a new ridge λ, normalisation or
set of never-counted tokens) builds a new state with the next version and swaps the reference under a lock. Routing
gets the [`RoutingTables`] of one version, so a route running while another thread edits the experts sees either the
router before the edit or the router after it, never a mix. Each version's tables are derived once, by one thread,
while the others wait for them; a thread that waited through an edit gets the newest version, so no thread derives a
version already replaced (8 threads routing during edits cost what one does).

What it costs scales with what changed, not with the number of experts N (design.md §2):

- ``A = Ẽᵀ diag(Σ_n c_n) Ẽ`` depends on the summed histogram only. The store keeps one ``A`` (the *Gram* of the last
  derived state) and moves it to a new state by the rows whose summed count changed: adding or removing an expert
  costs one product over the tokens that expert used, ``O(V_n d²)``, never N products. When 64 times more tokens
  have been moved in and out than the set now holds, ``A`` is rebuilt in one product, which bounds the rounding.
- ``b_n = Ẽᵀ c_n`` is (d+1) numbers per expert, cached on the expert.
- The score table is filled row by row as prompts need it (`ir3de_hf.routing_tables`).

Memory beyond the embedding table: the histograms (N x V), one ``A`` ((d+1)²), ``B`` ((d+1) x N), the table (V x N,
touched rows only), plus the moments of experts imported as moments.

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
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .routing_tables import RoutingTables
from .statistics import augmented_moments, naive_bayes_scores, ridge_solve, weighted_gram

__all__ = ["ExpertStatisticsStore", "Gram", "RoutingSettings"]

Moments = tuple[torch.Tensor, torch.Tensor]

# A is rebuilt in one product once the tokens moved in and out by updates pass this many times those it holds: the
# rounding of the updates then stays within about 65 float64 ulps of A's own scale (1e-14 relative).
_MOVED_LIMIT = 64
# With balanced experts every expert counts as much as 2^20 tokens (about a million, the size of the demo's experts,
# so λ keeps the scale it has for unweighted counts): its tokens weigh round(2^40 / its token count), an integer, so
# the summed histogram stays an exact int64 through any edits, and A and B are scaled by 2^-20 (exact) when solved.
_BALANCED_MASS = 2**40
_BALANCED_SCALE = 2.0**-20


@dataclass(frozen=True)
class RoutingSettings:
    """What the head depends on besides the statistics: the ridge penalty λ, the column normalisation, the ids
    that are never counted and never vote (padding, special tokens), the weight and smoothing of the naive-Bayes
    term added to the score table (0: the ridge head alone), and whether every expert weighs the same in the fit
    (``balance_experts``) instead of in proportion to its token count."""

    ridge_lambda: float
    normalize_columns: bool
    never_counted_ids: tuple[int, ...]
    naive_bayes_weight: float = 0.0
    naive_bayes_alpha: float = 1.0
    balance_experts: bool = False


@dataclass(frozen=True)
class Gram:
    """``A = Ẽᵀ diag(totals) Ẽ`` of the histogram experts for one embedding table.

    Attributes:
        totals: the summed histogram it was built from, never-counted ids already zeroed (V, int64; each expert's
            counts times its integer weight with ``balance_experts``).
        a: the matrix ((d+1) x (d+1), float64).
        moved: (weighted) tokens added or removed by updates since it was last built in one product.
        table: which table (``data_ptr``, in-place version) it belongs to: a table changed in place invalidates it.
    """

    totals: torch.Tensor
    a: torch.Tensor
    moved: int
    table: tuple[int, int]


def table_key(embedding: torch.Tensor) -> tuple[int, int]:
    """Identifies the contents of an embedding table: its storage and torch's counter of in-place writes."""
    return embedding.data_ptr(), embedding._version


class _Expert:
    """One expert's statistics: a token histogram, or moments imported from elsewhere. Immutable; it caches its
    ``b_n`` per (table, never-counted ids), shared by every state and copy that holds it."""

    __slots__ = ("_bias_moments", "histogram", "imported", "token_count")

    def __init__(self, histogram: torch.Tensor | None, imported: Moments | None) -> None:
        self.histogram = histogram
        self.imported = imported
        self._bias_moments: dict[tuple[tuple[int, int], tuple[int, ...]], torch.Tensor] = {}
        counted = round(float(imported[1][-1])) if imported is not None else int(histogram.sum())  # type: ignore[union-attr]
        self.token_count = counted  # tokens behind the statistics (for imported moments, the bias entry of b_n)

    def counted(self, device: torch.device, never_counted: tuple[int, ...]) -> torch.Tensor | None:
        """The histogram on ``device`` with the never-counted ids zeroed (None for imported moments)."""
        if self.histogram is None:
            return None
        counts = self.histogram.to(device)
        if never_counted:
            counts = counts.clone()
            counts[list(never_counted)] = 0
        return counts

    def bias_moment(self, embedding: torch.Tensor, never_counted: tuple[int, ...]) -> torch.Tensor:
        """``b_n = Ẽᵀ c_n`` ((d+1,), float64): one pass over the rows of the tokens this expert used."""
        key = (table_key(embedding), never_counted)
        cached = self._bias_moments.get(key)
        if cached is None:
            if self.imported is not None:
                cached = self.imported[1].to(embedding.device)
            else:
                counts = self.counted(embedding.device, never_counted)
                assert counts is not None
                support = torch.nonzero(counts, as_tuple=True)[0]
                weights = counts[support].to(torch.float64)
                rows = embedding[support].to(torch.float64)
                cached = torch.cat([rows.T @ weights, weights.sum()[None]])
            self._bias_moments[key] = cached
        return cached

    def weight(self, settings: RoutingSettings) -> int:
        """How much each of this expert's tokens weighs in the summed histogram: 1, or ``round(2^40 / tokens)`` with
        balanced experts (tokens counted without the never-counted ids; times 2^-20 in the solve: each expert then
        weighs 2^20 tokens, to 1 part in 1,000 up to a billion tokens), so a small expert is not outvoted."""
        if not settings.balance_experts:
            return 1
        tokens = self.token_count
        if self.histogram is not None and settings.never_counted_ids:
            tokens -= int(self.histogram[list(settings.never_counted_ids)].sum())
        return max(1, round(_BALANCED_MASS / tokens)) if tokens > 0 else 1

    def seed_bias_moment(self, embedding: torch.Tensor, never_counted: tuple[int, ...], value: torch.Tensor) -> None:
        """Records a ``b_n`` read from a checkpoint (and verified there) instead of computing it."""
        self._bias_moments[(table_key(embedding), never_counted)] = value


@dataclass(frozen=True)
class _State:
    version: int
    settings: RoutingSettings
    names: tuple[str, ...] = ()
    experts: tuple[_Expert, ...] = ()
    totals: torch.Tensor | None = None  # the summed (weighted) histograms (V, int64, CPU), never-counted ids included
    tables: list[RoutingTables] = field(default_factory=list)  # at most one, filled on first use


class _Shared:
    """What a store and its copies share: the latest ``A`` (valid for any state: a state's ``A`` is reached from it
    by the rows whose totals differ), the lock that lets one thread at a time derive tables, and how many tables
    were derived (each version at most once)."""

    def __init__(self) -> None:
        self.gram: Gram | None = None
        self.lock = threading.Lock()
        self.derived = 0


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
        self._shared = _Shared()

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

    @property
    def gram(self) -> Gram:
        """``A`` of the histogram experts of the current state (brought up to date, see the module docstring)."""
        with self._shared.lock:
            return self._gram(self._state, self.embeddings.weight.detach())

    def histogram(self, name: str) -> torch.Tensor | None:
        """Expert ``name``'s token histogram (int64, V), or None for an expert imported as moments."""
        return self._expert(name).histogram

    def imported_moments(self, name: str) -> Moments | None:
        """Expert ``name``'s imported ``(A_n, b_n)``, or None for a histogram expert."""
        return self._expert(name).imported

    def moments(self, name: str) -> Moments:
        """Expert ``name``'s own moments ``(A_n, b_n)`` (float64, (d+1, d+1) and (d+1,)) over the current embedding
        table and never-counted ids: what the reference implementation sums per domain (for export). Computed on each
        call (``O(V_n d²)``): routing never needs them."""
        expert = self._expert(name)
        if expert.imported is not None:
            return expert.imported
        embedding = self.embeddings.weight.detach()
        counts = expert.counted(embedding.device, self._state.settings.never_counted_ids)
        a_n, b_n = augmented_moments(embedding, counts[None])  # type: ignore[index]
        return a_n, b_n[:, 0]

    def bias_moments(self) -> torch.Tensor:
        """``B = [b_1 … b_N]`` ((d+1) x N, float64) of the current state."""
        return _bias_moments(self._state, self.embeddings.weight.detach())

    def counted_totals(self) -> torch.Tensor:
        """The summed histogram of the current state with the never-counted ids zeroed (V, int64; with balanced
        experts each histogram times its integer weight): what ``A`` is built from."""
        return _counted_totals(self._state, self.embeddings.weight)

    def token_counts(self) -> list[int]:
        """Tokens counted per expert, in order (for imported moments, the bias entry of ``b_n``)."""
        return [expert.token_count for expert in self._state.experts]

    def counts_matrix(self) -> torch.Tensor:
        """The histograms as one (N, V) int64 tensor; rows of imported experts are zero. Built on each call."""
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
            expert = _Expert(histogram, moments)
            self._publish(
                state,
                names=(*state.names, name),
                experts=(*state.experts, expert),
                totals=_plus(state.totals, expert, state.settings),
            )

    def replace(self, name: str, *, histogram: torch.Tensor | None = None, moments: Moments | None = None) -> None:
        """Replaces the statistics of expert ``name``, keeping its position."""
        with self._lock:
            state = self._state
            index = self._index(state, name)
            experts = list(state.experts)
            old, experts[index] = experts[index], _Expert(histogram, moments)
            totals = _plus(_minus(state.totals, old, state.settings), experts[index], state.settings)
            self._publish(state, experts=tuple(experts), totals=totals)

    def remove(self, name: str) -> None:
        """Drops expert ``name``; the others keep their statistics and cached ``b_n``."""
        with self._lock:
            state = self._state
            index = self._index(state, name)
            keep = [i for i in range(len(state.names)) if i != index]
            self._publish(
                state,
                names=tuple(state.names[i] for i in keep),
                experts=tuple(state.experts[i] for i in keep),
                totals=_minus(state.totals, state.experts[index], state.settings),
            )

    def configure(self, settings: RoutingSettings) -> None:
        """Sets the solver settings; a new version only if they differ from the current ones (and new summed
        histograms if the experts' weights changed with them)."""
        if settings != self._state.settings:
            with self._lock:
                state = self._state
                if settings != state.settings:
                    totals = state.totals
                    old = state.settings
                    if any(expert.weight(settings) != expert.weight(old) for expert in state.experts):
                        totals = None
                        for expert in state.experts:
                            totals = _plus(totals, expert, settings)
                    self._publish(state, settings=settings, totals=totals)

    def seed(self, gram: Gram, bias_moments: torch.Tensor) -> None:
        """Adopts ``A`` and ``B`` ((d+1) x N) read from a checkpoint and verified against its histograms (see
        `ir3de_hf.checkpoint`), so that loading costs a solve, not the products."""
        embedding = self.embeddings.weight.detach()
        never = self._state.settings.never_counted_ids
        for expert, column in zip(self._state.experts, bias_moments.T, strict=True):
            if expert.histogram is not None:
                expert.seed_bias_moment(embedding, never, column.to(embedding.device))
        self._shared.gram = gram

    def copy(self) -> ExpertStatisticsStore:
        """An independent store with the same experts: edits of one never show in the other. Cheap: the embedding
        table, the statistics, ``A`` and the current tables are shared, not copied."""
        twin = ExpertStatisticsStore(self.embeddings, self._state.settings)
        twin._state = self._state
        twin._shared = self._shared
        return twin

    # ------------------------------------------------------------------ solving

    def tables(self, settings: RoutingSettings | None = None) -> RoutingTables:
        """The routing tables of the current state (derived on first use, then cached with the state).

        ``settings``, when given, are applied first (see [`configure`]): the router passes its config here, so a
        changed ``ridge_lambda`` or ``ignored_token_ids`` takes effect on the next route.
        """
        if settings is not None:
            self.configure(settings)
        embedding = self.embeddings.weight.detach()
        tables = _current(self._state, embedding)
        if tables is not None:
            return tables
        # One thread derives, the others wait for it. The state is read again once the lock is held: a thread that
        # waited through an edit derives (or finds) the newest version, never one already replaced, so while experts
        # change each version's tables are derived at most once and only while it is current.
        with self._shared.lock:
            state = self._state
            tables = _current(state, embedding)
            if tables is None:
                if not state.names:
                    raise ValueError(
                        "The router has no experts yet; add one with router.add_expert(name, texts=[...])."
                    )
                tables = self._derive(state, embedding)
                state.tables[:] = [tables]
                self._shared.derived += 1
        return tables

    @property
    def tables_derived(self) -> int:
        """How many routing tables this store and its copies have derived (each version at most once; a version
        replaced before any route needed it is never derived)."""
        return self._shared.derived

    def _derive(self, state: _State, embedding: torch.Tensor) -> RoutingTables:
        """Solves the head of ``state``: ``A`` brought up to date, ``B`` from the cached ``b_n``, one solve."""
        settings = state.settings
        never = settings.never_counted_ids
        scale = _BALANCED_SCALE if settings.balance_experts else 1.0
        a = scale * self._gram(state, embedding).a
        weights = [scale * expert.weight(settings) for expert in state.experts]
        for expert, expert_weight in zip(state.experts, weights, strict=True):
            if expert.imported is not None:
                a = a + expert_weight * expert.imported[0].to(embedding.device)
        b = _bias_moments(state, embedding) * torch.tensor(weights, dtype=torch.float64, device=embedding.device)
        weight, bias = ridge_solve(a, b, settings.ridge_lambda)
        usable = torch.ones(embedding.shape[0], dtype=torch.bool, device=embedding.device)
        usable[list(never)] = False
        extra = _naive_bayes_rows(state, embedding.shape[0], embedding.device) if settings.naive_bayes_weight else None
        return RoutingTables(
            state.version,
            state.names,
            weight,
            bias,
            embedding,
            usable,
            normalize=settings.normalize_columns,
            extra_scores=extra,
        )

    def _gram(self, state: _State, embedding: torch.Tensor) -> Gram:
        """``A`` of ``state``'s histogram experts, from the latest ``A`` by the rows whose totals changed (caller holds
        the shared lock)."""
        target = _counted_totals(state, embedding)
        key = table_key(embedding)
        latest = self._shared.gram
        if latest is not None and latest.table == key and latest.totals.device == target.device:
            delta = target - latest.totals
            changed = torch.nonzero(delta, as_tuple=True)[0]
            moved = latest.moved + int(delta[changed].abs().sum())
            if not len(changed):
                return latest
            if moved <= _MOVED_LIMIT * int(target.sum()):
                gram = Gram(target, latest.a + weighted_gram(embedding, changed, delta[changed]), moved, key)
                self._shared.gram = gram
                return gram
        seen = torch.nonzero(target, as_tuple=True)[0]
        gram = Gram(target, weighted_gram(embedding, seen, target[seen]), 0, key)
        self._shared.gram = gram
        return gram

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


def _current(state: _State, embedding: torch.Tensor) -> RoutingTables | None:
    """The tables already derived for ``state`` on the embedding's device, if any."""
    tables = state.tables[0] if state.tables else None
    return tables if tables is not None and tables.device == embedding.device else None


def _weighted(expert: _Expert, settings: RoutingSettings) -> torch.Tensor | None:
    """The expert's histogram as it enters the summed totals: its counts times its (integer) weight."""
    if expert.histogram is None:
        return None
    counts = expert.histogram.to(device="cpu", dtype=torch.int64)
    weight = expert.weight(settings)
    return counts if weight == 1 else counts * weight


def _plus(totals: torch.Tensor | None, expert: _Expert, settings: RoutingSettings) -> torch.Tensor | None:
    counts = _weighted(expert, settings)
    if counts is None:
        return totals
    return counts.clone() if totals is None else totals + counts


def _minus(totals: torch.Tensor | None, expert: _Expert, settings: RoutingSettings) -> torch.Tensor | None:
    counts = _weighted(expert, settings)
    return totals if counts is None or totals is None else totals - counts


def _counted_totals(state: _State, embedding: torch.Tensor) -> torch.Tensor:
    if state.totals is None:
        return torch.zeros(embedding.shape[0], dtype=torch.int64, device=embedding.device)
    target = state.totals.to(embedding.device)
    if state.settings.never_counted_ids:
        target = target.clone()
        target[list(state.settings.never_counted_ids)] = 0
    return target


def _bias_moments(state: _State, embedding: torch.Tensor) -> torch.Tensor:
    never = state.settings.never_counted_ids
    columns = [expert.bias_moment(embedding, never) for expert in state.experts]
    if not columns:
        return torch.zeros(embedding.shape[1] + 1, 0, dtype=torch.float64, device=embedding.device)
    return torch.stack(columns, dim=1)


def _naive_bayes_rows(state: _State, vocab_size: int, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The weighted naive-Bayes term for some rows of the table: each row needs only that token's count per expert
    (gathered from the histograms as they are; never-counted ids are zeroed in the gathered columns only)."""
    settings = state.settings
    never = list(settings.never_counted_ids)
    histograms = [expert.histogram.to(device) if expert.histogram is not None else None for expert in state.experts]
    expert_totals = torch.tensor(
        [
            expert.token_count - int(h[never].sum()) if h is not None else 0
            for expert, h in zip(state.experts, histograms, strict=True)
        ],
        device=device,
    )
    never_ids = torch.tensor(never, dtype=torch.long, device=device)

    def rows(ids: torch.Tensor) -> torch.Tensor:
        columns = torch.stack([h[ids] if h is not None else torch.zeros_like(ids) for h in histograms])
        columns[:, torch.isin(ids, never_ids)] = 0
        term = naive_bayes_scores(
            columns, settings.naive_bayes_alpha, expert_totals=expert_totals, vocab_size=vocab_size
        )
        return (settings.naive_bayes_weight * term).to(torch.float32)

    return rows
