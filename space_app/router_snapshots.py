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
(`MAX_SESSIONS`); one more evicts the session used least recently, which then routes with the starting router again.
A session's router is also dropped when the visitor resets it or closes the tab (`SessionRouters.end`, wired to
``demo.unload``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from ir3de_hf import IR3DERouterModel
from ir3de_hf.experts import ExpertPool

__all__ = ["MAX_SESSIONS", "RouterHolder", "SessionRouters", "clone_router"]

# A session's own router costs its statistics: about 25 MB with one added expert (its cached (d+1)^2 moments and a
# V x N score table for SmolLM2), about 100 MB at the Space's 24-expert limit; 32 sessions stay within ~3 GB.
MAX_SESSIONS = 32


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
    """

    def __init__(self, load: Callable[[], IR3DERouterModel], max_sessions: int = MAX_SESSIONS) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be an integer >= 1, got {max_sessions!r}.")
        self.max_sessions = max_sessions
        self._lock = threading.Lock()  # guards the session table (short)
        self._editing = threading.Lock()  # edits take turns (each clones and re-solves: about a second at most)
        # Third-party loading code may patch torch.nn.Module globally for a moment (accelerate's init_empty_weights,
        # e.g. in peft's low_cpu_mem_usage path), so a router built meanwhile in another thread could get meta
        # tensors: loads and clones take turns.
        self.loading = threading.Lock()
        self._start = warm(load())
        self._start.eval()
        self.pool = self._start.expert_pool  # loaded expert models are shared by every session and survive edits
        self._sessions: OrderedDict[Hashable, IR3DERouterModel] = OrderedDict()

    @property
    def start(self) -> IR3DERouterModel:
        """The starting router of every session; never modify it."""
        return self._start

    @property
    def sessions(self) -> list[Hashable]:
        """The sessions holding a router of their own, least recently used first."""
        with self._lock:
            return list(self._sessions)

    def current(self, session: Hashable) -> IR3DERouterModel:
        """The router to use for one whole request of ``session``; never modify it."""
        with self._lock:
            router = self._sessions.get(session)
            if router is None:
                return self._start
            self._sessions.move_to_end(session)
            return router

    def edit(self, session: Hashable, change: Callable[[IR3DERouterModel], None]) -> IR3DERouterModel:
        """Applies ``change`` to a clone of ``session``'s router and publishes the clone for that session only; on
        error nothing changes. May evict the least recently used other session (see `MAX_SESSIONS`)."""
        with self._editing:
            with self.loading:
                clone = clone_router(self.current(session))
            change(clone)
            clone.expert_pool = self.pool
            warm(clone)
            with self._lock:
                self._sessions[session] = clone
                self._sessions.move_to_end(session)
                while len(self._sessions) > self.max_sessions:
                    self._sessions.popitem(last=False)
            return clone

    def reset(self, session: Hashable) -> IR3DERouterModel:
        """Puts ``session`` back on the starting router (and frees its own)."""
        self.end(session)
        return self._start

    def end(self, session: Hashable) -> None:
        """Forgets ``session``'s router: the visitor left (``demo.unload``) or reset."""
        with self._lock:
            self._sessions.pop(session, None)

    def session(self, session: Hashable) -> RouterHolder:
        """The view of one session that the endpoint functions take."""
        return RouterHolder(self, session)


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
