# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Immutable router snapshots for a Space that many visitors edit at once.

Routing calls take ``holder.current`` once and use that router to the end; an edit builds a NEW router from the
current one, applies the change to it, derives its routing tables, and only then swaps the reference under a lock.
A request in flight therefore never sees a half-edited router, and a failed edit leaves nothing behind.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable

import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.experts import ExpertPool

__all__ = ["RouterHolder", "clone_router"]


def clone_router(router: IR3DERouterModel) -> IR3DERouterModel:
    """A router with its own config and statistics that shares what edits never change: the frozen embedding table
    (113 MB for SmolLM2), the tokenizer and the cached per-expert moments (immutable tensors, so an added expert costs
    one product over its own tokens instead of recounting all experts). The expert pool is NOT shared yet: a fresh
    empty pool keeps `remove_expert` on the clone from unloading a model that the published snapshot still uses;
    `RouterHolder.edit` attaches the shared pool after the edit.
    """
    warm(router)  # fills the moment cache that the clone inherits
    with torch.device("meta"):  # no 113 MB allocation: every tensor is replaced by load_state_dict(assign=True)
        clone = IR3DERouterModel(copy.deepcopy(router.config))
    state = router.state_dict()
    state["expert_counts"] = state["expert_counts"].clone()
    clone.load_state_dict(state, assign=True)
    clone.eval()
    clone.tokenizer = router.tokenizer
    clone._expert_moments = list(router._expert_moments)  # the load hook forgot them; they are still exact
    clone.expert_pool = ExpertPool(tokenizer_fingerprint=router.config.tokenizer_fingerprint)
    if any(tensor.is_meta for tensor in clone.state_dict().values()):
        raise RuntimeError("A router snapshot kept a meta tensor: a model was loaded while it was being cloned.")
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
