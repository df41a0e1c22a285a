# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The live router: the version a server answers with, swapped atomically by an edit or by another worker's save.

Each request reads `LiveRouter.current` once, after its body is parsed, and routes, forces and answers with that
`Version` (named in the answer): one router version per request. The event loop is the only thread that swaps and
reads the version, and a request counts itself in flight (`hold`) before its first ``await``, so a remove that swaps
first and drains next sees every request that could still be using the removed expert.

Edits run one at a time (an asyncio lock, shared with the directory watcher); counting and solving run in a thread on
a copy, so routing never waits for them and never sees a half-made version.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .decision import Decider
from .errors import ServeError

if TYPE_CHECKING:
    import torch

    from .. import IR3DERouterModel
    from .backends import Backend, Delta

__all__ = ["DRAIN_SECONDS", "Hold", "LiveRouter", "Version", "content_id", "released"]

_LOG = logging.getLogger("ir3de_hf.serve")
SHARED_GRACE_INTERVALS = 3  # a shared engine unloads once the other workers had 3 watch intervals to follow
DRAIN_SECONDS = 600.0  # longest wait for a removed expert's requests (a stream never started is closed by the GC)


@dataclass(frozen=True)
class Version:
    """One router version: what routes (``decider``) and its id (the same in every worker that loaded one save)."""

    router: IR3DERouterModel
    decider: Decider
    id: str


class Hold:
    """One request in flight on ``expert``; `release` is idempotent, so every way a request ends may call it."""

    def __init__(self, counts: Counter[str], drained: asyncio.Event, expert: str) -> None:
        self._counts, self._drained, self.expert = counts, drained, expert
        self._held = True
        counts[expert] += 1

    def release(self) -> None:
        if self._held:
            self._held = False
            self._counts[self.expert] -= 1
            if self._counts[self.expert] <= 0:
                del self._counts[self.expert]
                self._drained.set()


async def released(pieces: AsyncGenerator[Delta, None], hold: Hold) -> AsyncGenerator[Delta, None]:
    """``pieces``, releasing ``hold`` when the stream ends however it ends (closed, failed, or collected)."""
    try:
        async for delta in pieces:
            yield delta
    finally:
        hold.release()
        await pieces.aclose()


class LiveRouter:
    """The served version and its edits; ``directory`` (a local router directory) makes it editable and watched."""

    def __init__(
        self,
        router: IR3DERouterModel,
        backend: Backend,
        *,
        name: str | None = None,
        fallback_expert: str | None = None,
        directory: str | os.PathLike[str] | None = None,
        watch_interval: float = 1.0,
    ) -> None:
        self.backend = backend
        self.directory = None if directory is None else Path(directory)
        self.watch_interval = watch_interval
        self._name, self._fallback = name, fallback_expert
        self._edits = asyncio.Lock()
        self._in_flight: Counter[str] = Counter()
        self._drained = asyncio.Event()
        self._seen = self._signature()
        version_id = content_id(self.directory) if self.directory is not None else _memory_id(router)
        self.current = self._version(_routing_copy(router), version_id)

    @classmethod
    def fixed(cls, decider: Decider, backend: Backend) -> LiveRouter:
        """A version that never changes (no directory): what `create_app` serves when given a `Decider`."""
        return cls(decider.router, backend, name=decider.meta_models[-1], fallback_expert=decider.fallback_expert)

    def hold(self, expert: str) -> Hold:
        """Counts a request on ``expert`` until its `Hold` is released; call it before the request's first await."""
        return Hold(self._in_flight, self._drained, expert)

    # ------------------------------------------------------------------ edits

    async def add(self, name: str, apply: Callable[[IR3DERouterModel], None]) -> Version:
        """Adds expert ``name`` with ``apply(copy)`` (an ``add_expert`` call), makes the backend answer for it, saves
        the directory and swaps; any failure leaves the served version, the backend and the directory as they were."""
        async with self._edits:
            await self._follow()
            current = self.current
            if name in current.router.expert_names or name in current.decider.meta_models:
                raise ServeError(
                    409,
                    f"An expert or model named {name!r} exists already; remove it first or choose another name.",
                    param="name",
                    code="expert_exists",
                )
            edited = await asyncio.to_thread(_edited, current.router, apply)
            spec = edited.config.expert_specs[edited.expert_names.index(name)]
            await self.backend.add_expert(name, spec)
            try:
                version = self._version(edited, await asyncio.to_thread(self._save, edited))
            except BaseException:
                await self.backend.remove_expert(name)
                raise
            self.current = version
            return version

    async def remove(self, name: str) -> Version:
        """Stops routing and forcing to ``name`` at once (swap), saves, drains its requests, then unloads it."""
        async with self._edits:
            await self._follow()
            current = self.current
            if name not in current.router.expert_names:
                raise ServeError(
                    404,
                    f"No expert named {name!r}; the experts are: {', '.join(current.router.expert_names)}.",
                    param="name",
                    code="expert_not_found",
                )
            if len(current.router.expert_names) == 1:
                raise ServeError(409, f"{name!r} is the router's last expert; add another before removing it.")
            if name == self._fallback:
                raise ServeError(409, f"{name!r} is this server's --fallback-expert; it cannot be removed live.")
            edited = await asyncio.to_thread(_edited, current.router, lambda router: router.remove_expert(name))
            version = self._version(edited, await asyncio.to_thread(self._save, edited))
            self.current = version
            grace = SHARED_GRACE_INTERVALS * self.watch_interval if self.backend.shared else 0.0
            await self._retire([name], grace=grace)
            return version

    def _save(self, router: IR3DERouterModel) -> str:
        """Saves ``router`` atomically over the directory (worker thread) and returns its content id."""
        assert self.directory is not None, "edits need a router directory (checked when the server starts)"
        try:  # a directory saved without its embedding table stays so (a loaded router holds the table)
            router.save_pretrained(self.directory, encoder_by_reference=_by_reference(self.directory))
        except (OSError, ValueError) as error:
            raise ServeError(500, f"Could not save the router to {self.directory}: {error}") from error
        self._seen = self._signature()
        return content_id(self.directory)

    async def _retire(self, names: list[str], *, grace: float = 0.0, unload: bool = True) -> None:
        """Waits until no request is in flight on ``names`` (at most `DRAIN_SECONDS`) and ``grace`` seconds more (the
        other workers of a shared engine follow the removal meanwhile), then unloads them (none if not ``unload``)."""
        if not unload:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while any(self._in_flight[name] > 0 for name in names) and loop.time() < deadline:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), deadline - loop.time())
        await asyncio.sleep(grace)
        for name in names:
            await self.backend.remove_expert(name)

    def _version(self, router: IR3DERouterModel, version_id: str) -> Version:
        return Version(router, Decider(router, name=self._name, fallback_expert=self._fallback), version_id)

    # ------------------------------------------------------------------ other workers' saves

    async def watch(self) -> None:
        """Follows the directory every ``watch_interval`` seconds until cancelled (a directory that fails to load is
        logged once, and read again when it changes)."""
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                async with self._edits:
                    await self._follow()
            except Exception:
                _LOG.exception(
                    "could not follow the router saved in %s; still serving %s", self.directory, self.current.id
                )

    async def _follow(self) -> None:
        """Swaps to the directory's version if another worker saved one: its new experts are made answerable first,
        its removed ones retired after the swap. Cheap when nothing changed (one ``stat``)."""
        if self.directory is None or (signature := self._signature()) == self._seen:
            return
        self._seen = signature
        found = await asyncio.to_thread(_load, self.directory)
        if found is None:  # a save was under way: its end changes the signature again
            return
        router, version_id = found
        current = self.current
        if version_id == current.id:
            return
        specs = {spec.name: spec for spec in router.config.expert_specs}
        added = [name for name in router.expert_names if name not in current.router.expert_names]
        for name in added:
            await self.backend.add_expert(name, specs[name])
        self.current = self._version(router, version_id)
        _LOG.warning("now serving router version %s saved by another worker (%s)", version_id, self.directory)
        removed = [name for name in current.router.expert_names if name not in router.expert_names]
        await self._retire(removed, unload=not self.backend.shared)  # a shared engine's: the editing worker unloads

    def _signature(self) -> tuple[int, ...] | None:
        if self.directory is None:
            return None
        try:
            folder, config = os.stat(self.directory), os.stat(self.directory / "config.json")
        except OSError:
            return None
        return folder.st_ino, config.st_ino, config.st_mtime_ns, config.st_size


def content_id(directory: Path) -> str:
    """12 hex of the sha256 of ``config.json`` and the statistics in ``model.safetensors`` (not the encoder, which
    edits never change): equal in every worker that reads one save, cheap to compute."""
    from safetensors import safe_open

    from ..hub._router_files import ENCODER_KEY, WEIGHTS_FILE

    digest = hashlib.sha256((directory / "config.json").read_bytes())
    with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as tensors:
        for key in sorted(key for key in tensors.keys() if key != ENCODER_KEY):  # noqa: SIM118 -- not a dict
            digest.update(key.encode())
            digest.update(_bytes(tensors.get_tensor(key)))
    return digest.hexdigest()[:12]


def _by_reference(directory: Path) -> bool:
    return bool(json.loads((directory / "config.json").read_text()).get("encoder_by_reference"))


def _memory_id(router: IR3DERouterModel) -> str:
    """The id of a router that is not a local directory (a Hub id, the demo): its experts and statistics."""
    digest = hashlib.sha256(" ".join(router.expert_names).encode())
    for key, tensor in sorted(router.statistics_tensors().items()):
        digest.update(key.encode())
        digest.update(_bytes(tensor))
    return digest.hexdigest()[:12]


def _load(directory: Path) -> tuple[IR3DERouterModel, str] | None:
    """The router saved in ``directory`` and its id, or None when a save changed it while it was read."""
    from .. import IR3DERouterModel

    before = content_id(directory)
    router = IR3DERouterModel.from_pretrained(directory)
    return (router, before) if content_id(directory) == before else None


def _edited(router: IR3DERouterModel, apply: Callable[[IR3DERouterModel], None]) -> IR3DERouterModel:
    """``apply`` on a copy of ``router`` whose routing tables are derived already (worker thread)."""
    edited = _routing_copy(router)
    try:
        apply(edited)
    except ValueError as error:  # a bad source, histogram or statistics: the client's to fix
        raise ServeError(400, f"{error}") from error
    edited.ridge_solution()
    return edited


def _routing_copy(router: IR3DERouterModel) -> IR3DERouterModel:
    """A copy with an empty pool of its own: ``remove_expert`` unregisters from the router's pool at once, and the
    backend's pool must keep the expert until its requests drained (`LiveRouter._retire`)."""
    from ..experts import ExpertPool

    edited = router.copy()
    edited.expert_pool = ExpertPool(tokenizer_fingerprint=router.config.tokenizer_fingerprint)
    return edited


def _bytes(tensor: torch.Tensor) -> bytes:
    import torch

    return tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
