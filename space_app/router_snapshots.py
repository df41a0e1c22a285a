# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Immutable router snapshots for a Space that many visitors edit at once.

Routing calls take ``holder.current`` once and use that router to the end; an edit builds a NEW router from the
current one, applies the change to it, derives its routing tables, and only then swaps the reference under a lock.
A request in flight therefore never sees a half-edited router, and a failed edit leaves nothing behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ir3de_hf import IR3DERouterModel
from ir3de_hf.experts import ExpertPool

__all__ = ["RouterHolder", "clone_router"]


def clone_router(router: IR3DERouterModel) -> IR3DERouterModel:
    """``router.copy()`` (its own config and statistics; the encoder, tokenizer and cached per-expert moments are
    shared) with a fresh, empty expert pool: `remove_expert` on the clone must not unload a model that the published
    snapshot still uses. `RouterHolder.edit` attaches the shared pool after the edit."""
    warm(router)  # the clone inherits the derived tables and the per-expert moments
    clone = router.copy()
    clone.expert_pool = ExpertPool(tokenizer_fingerprint=router.config.tokenizer_fingerprint)
    return clone


def warm(router: IR3DERouterModel) -> IR3DERouterModel:
    """Derives the routing tables now, so that concurrent routing calls only read them."""
    router.ridge_solution()
    return router


class RouterHolder:
    """The published router snapshot, its edits (serialised) and the expert pool all snapshots generate with."""

    def __init__(self, load: Callable[[], IR3DERouterModel]) -> None:
        self._lock = threading.Lock()
        # Third-party loading code may patch torch.nn.Module globally for a moment (accelerate's init_empty_weights,
        # e.g. in peft's low_cpu_mem_usage path), so a router built meanwhile in another thread could get meta
        # tensors: loads and clones take turns.
        self.loading = threading.Lock()
        self._initial = warm(load())
        self._initial.eval()
        self.pool = self._initial.expert_pool  # loaded expert models survive edits and resets
        self._current = self._initial

    @property
    def current(self) -> IR3DERouterModel:
        """The snapshot to use for one whole request; never modify it."""
        return self._current

    def edit(self, change: Callable[[IR3DERouterModel], None]) -> IR3DERouterModel:
        """Applies ``change`` to a clone of the current router and publishes the clone; on error nothing changes."""
        with self._lock:
            with self.loading:
                clone = clone_router(self._current)
            change(clone)
            clone.expert_pool = self.pool
            self._current = warm(clone)
            return clone

    def reset(self) -> IR3DERouterModel:
        """Publishes the router the Space started with again."""
        with self._lock:
            self._current = self._initial
            return self._initial
