# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Per-visitor router snapshots for a Space that many visitors edit at once.

Every visitor session (a browser tab, or one `gradio_client.Client`: Gradio's ``session_hash``) starts on the SAME
starting router, which nobody edits. A session's first add / remove builds its own router with ``router.copy()``
(own registry and statistics; the frozen encoder, the tokenizer, the cached per-expert moments and the loaded expert
models are shared, so a copy costs its new statistics only), and later edits of that session build on its own router.
So one visitor's edit never changes another visitor's routing.

Routing calls take the session's router once and use it to the end; an edit builds a NEW router from the session's
current one, applies the change to it, derives its routing tables, and only then swaps the session's reference. A
request in flight therefore never sees a half-edited router, and a failed edit leaves nothing behind.

Memory is bounded: only sessions that edited hold a router of their own, at most ``max_sessions`` of them
(`MAX_SESSIONS`) and at most ``max_bytes`` together (`MAX_SESSION_BYTES`, each router counted by `router_bytes`: the
tensors it does not share with the starting router). An edit beyond either bound evicts the sessions used least
recently; an evicted session routes with the starting router again, and its visitor is told so on their next call
(`SessionRouters.session` raises `SessionEvicted` once), never left to find their experts gone. A session's router is
also dropped, without a notice, when the visitor resets it or closes the tab (`SessionRouters.end`, wired to
``demo.unload``).
"""

from __future__ import annotations

import threading
import types
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.experts import ExpertPool

__all__ = [
    "MAX_SESSIONS",
    "MAX_SESSION_BYTES",
    "RouterHolder",
    "SessionEvicted",
    "SessionRouters",
    "clone_router",
    "router_bytes",
]

# A session's own router costs its statistics: about 25 MB with one added expert (its cached (d+1)^2 moments and a
# V x N score table for SmolLM2), about 100 MB at the Space's 24-expert limit, so 32 sessions could reach ~3 GB: the
# byte bound keeps them under 2 GB (a free CPU Space has 16 GB, shared with the encoder and the expert models).
MAX_SESSIONS = 32
MAX_SESSION_BYTES = 2_000_000_000  # all sessions' own routers together (`router_bytes`)
_NOTICES = 4096  # evicted sessions remembered until their next call (a forgotten one is simply not told)


class SessionEvicted(LookupError):
    """The session's own router was evicted to bound the Space's memory: its visitor must be told, once."""


def router_bytes(router: IR3DERouterModel, shared: frozenset[int] = frozenset()) -> int:
    """The bytes of the tensors ``router`` holds (its parameters and buffers, its statistics and derived tables; the
    tokenizer and the loaded expert models are shared by every session and left out), each storage counted once and
    those in ``shared`` (storage pointers, see `storages`) not at all: what a session's router costs beyond the
    routers it shares tensors with."""
    seen: dict[int, int] = {}
    for tensor in _tensors([*router.parameters(), *router.buffers(), router.store]):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in shared:
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def storages(router: IR3DERouterModel) -> frozenset[int]:
    """The storage pointers of every tensor ``router`` holds (for `router_bytes`' ``shared``)."""
    everything = _tensors([*router.parameters(), *router.buffers(), router.store])
    return frozenset(tensor.untyped_storage().data_ptr() for tensor in everything)


def _tensors(root: object) -> Iterator[torch.Tensor]:
    """Every tensor reachable from ``root`` through containers, object attributes and closures, and a module's
    parameters and buffers (meta and empty tensors hold no memory and are left out); each object is visited once."""
    pending, visited = [root], set()
    while pending:
        value = pending.pop()
        if id(value) in visited or isinstance(value, str | bytes | int | float | bool | type(None)):
            continue
        visited.add(id(value))
        if isinstance(value, torch.Tensor):
            if value.device.type != "meta" and value.untyped_storage().nbytes():
                yield value
        elif isinstance(value, torch.nn.Module):
            pending += [*value.parameters(), *value.buffers()]
        elif isinstance(value, dict):
            pending += value.values()
        elif isinstance(value, list | tuple | set | frozenset):
            pending += value
        elif isinstance(value, types.FunctionType):
            pending += [cell.cell_contents for cell in value.__closure__ or ()]
        elif not isinstance(value, types.ModuleType | type):
            pending += vars(value).values() if hasattr(value, "__dict__") else []
            pending += [getattr(value, slot) for slot in getattr(type(value), "__slots__", ()) if hasattr(value, slot)]


def clone_router(router: IR3DERouterModel) -> IR3DERouterModel:
    """``router.copy()`` (its own config and statistics; the encoder, tokenizer and cached per-expert moments are
    shared) with a fresh, empty expert pool: `remove_expert` on the clone must not unload a model that the published
    snapshot still uses. `SessionRouters.edit` attaches the shared pool after the edit."""
    warm(router)  # the clone inherits the derived tables and the per-expert moments
    clone = router.copy()
    clone.expert_pool = ExpertPool(tokenizer_fingerprint=router.config.tokenizer_fingerprint)
    return clone


def warm(router: IR3DERouterModel) -> IR3DERouterModel:
    """Derives the routing tables now, so that concurrent routing calls only read them."""
    router.ridge_solution()
    return router


class SessionRouters:
    """The starting router, the routers of the sessions that edited it (least recently used first), and the expert
    pool all of them generate with.

    Args:
        load: builds the starting router (called once).
        max_sessions: how many sessions may hold a router of their own; one more evicts the least recently used.
        max_bytes: how many bytes their own routers may hold together (`router_bytes`); an edit beyond it evicts the
            least recently used others, and an edit that alone needs more is refused.
    """

    def __init__(
        self,
        load: Callable[[], IR3DERouterModel],
        max_sessions: int = MAX_SESSIONS,
        max_bytes: int = MAX_SESSION_BYTES,
    ) -> None:
        for name, value in (("max_sessions", max_sessions), ("max_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # guards the session table (short)
        self._editing = threading.Lock()  # edits take turns (each clones and re-solves: about a second at most)
        # Third-party loading code may patch torch.nn.Module globally for a moment (accelerate's init_empty_weights,
        # e.g. in peft's low_cpu_mem_usage path), so a router built meanwhile in another thread could get meta
        # tensors: loads and clones take turns.
        self.loading = threading.Lock()
        self._start = warm(load())
        self._start.eval()
        self.pool = self._start.expert_pool  # loaded expert models are shared by every session and survive edits
        self._sessions: OrderedDict[Hashable, tuple[IR3DERouterModel, int]] = OrderedDict()  # router, its bytes
        self._evicted: OrderedDict[Hashable, str] = OrderedDict()  # why, until the session's next call

    @property
    def start(self) -> IR3DERouterModel:
        """The starting router of every session; never modify it."""
        return self._start

    @property
    def sessions(self) -> list[Hashable]:
        """The sessions holding a router of their own, least recently used first."""
        with self._lock:
            return list(self._sessions)

    @property
    def held_bytes(self) -> int:
        """What the sessions' own routers hold together (`router_bytes` of each)."""
        with self._lock:
            return sum(size for _, size in self._sessions.values())

    def current(self, session: Hashable) -> IR3DERouterModel:
        """The router to use for one whole request of ``session``; never modify it."""
        with self._lock:
            entry = self._sessions.get(session)
            if entry is None:
                return self._start
            self._sessions.move_to_end(session)
            return entry[0]

    def edit(self, session: Hashable, change: Callable[[IR3DERouterModel], None]) -> IR3DERouterModel:
        """Applies ``change`` to a clone of ``session``'s router and publishes the clone for that session only; on
        error nothing changes. May evict the least recently used other sessions (see `MAX_SESSIONS` and
        `MAX_SESSION_BYTES`); an edit whose router alone is over ``max_bytes`` is refused (`ValueError`)."""
        with self._editing:
            with self.loading:
                clone = clone_router(self.current(session))
            change(clone)
            clone.expert_pool = self.pool
            size = router_bytes(warm(clone), storages(self._start))
            if size > self.max_bytes:
                raise ValueError(
                    f"This edit would make your session's router hold {_megabytes(size)}, more than the "
                    f"{_megabytes(self.max_bytes)} the Space keeps for all sessions; remove an expert or add less "
                    "text."
                )
            with self._lock:
                self._sessions[session] = (clone, size)
                self._sessions.move_to_end(session)
                self._evicted.pop(session, None)
                held = sum(size for _, size in self._sessions.values())
                while len(self._sessions) > self.max_sessions or held > self.max_bytes:
                    evicted, (_, freed) = self._sessions.popitem(last=False)
                    held -= freed
                    self._notice(evicted)
            return clone

    def reset(self, session: Hashable) -> IR3DERouterModel:
        """Puts ``session`` back on the starting router (and frees its own)."""
        self.end(session)
        return self._start

    def end(self, session: Hashable) -> None:
        """Forgets ``session``'s router: the visitor left (``demo.unload``) or reset."""
        with self._lock:
            self._sessions.pop(session, None)
            self._evicted.pop(session, None)

    def session(self, session: Hashable) -> RouterHolder:
        """The view of one session that the endpoint functions take.

        Raises:
            SessionEvicted: once, on the first call of a session whose router was evicted since its last call (the
                session is on the starting router from then on).
        """
        with self._lock:
            reason = self._evicted.pop(session, None)
        if reason is not None:
            raise SessionEvicted(reason)
        return RouterHolder(self, session)

    def _notice(self, session: Hashable) -> None:
        """Remembers why ``session`` lost its router (caller holds the lock)."""
        self._evicted[session] = (
            f"Your session's edits were cleared: the Space keeps its own router for at most {self.max_sessions} "
            f"sessions and {_megabytes(self.max_bytes)} in all, and yours was the least recently used. You now see "
            "the starting router; add your experts again to use them."
        )
        while len(self._evicted) > _NOTICES:
            self._evicted.popitem(last=False)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


class RouterHolder:
    """One session's view of `SessionRouters`: ``current`` is its router, ``edit`` / ``reset`` change only it.

    Args:
        routers: the Space's routers.
        session: the session's key (Gradio's ``session_hash``).
    """

    def __init__(self, routers: SessionRouters, session: Hashable) -> None:
        self.routers = routers
        self.session = session

    @property
    def current(self) -> IR3DERouterModel:
        """The snapshot to use for one whole request; never modify it."""
        return self.routers.current(self.session)

    @property
    def loading(self) -> threading.Lock:
        return self.routers.loading

    def edit(self, change: Callable[[IR3DERouterModel], None]) -> IR3DERouterModel:
        """Applies ``change`` to a clone of this session's router and publishes it for this session."""
        return self.routers.edit(self.session, change)

    def reset(self) -> IR3DERouterModel:
        """Puts this session back on the starting router."""
        return self.routers.reset(self.session)
