# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The few torch.distributed operations a fit needs, through accelerate's `PartialState`.

Launched plainly this is a single process and every call is a no-op; without accelerate (the ``experts`` extra) a
plain launch gets `_OneProcess`, which answers the same questions, so the core fits without it. Under ``torchrun`` or
``accelerate launch`` (``ACCELERATE_USE_CPU=1`` for gloo on CPU) the process group is set up by accelerate, and counts
are summed with one ``all_reduce``: integer sums are exact, so a fit on P processes equals the fit on one.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from ._extras import require

if TYPE_CHECKING:
    from accelerate import PartialState

__all__ = ["broadcast_from_main", "end_processes", "process_state", "sum_across_processes"]

_PURPOSE = "a multi-process fit"


class _OneProcess:
    """What a fit asks `PartialState` about, answered for a single process launched without accelerate."""

    process_index = 0
    num_processes = 1
    is_main_process = True

    @property
    def device(self) -> torch.device:
        """Where `PartialState(cpu=not torch.cuda.is_available())` would put this process."""
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def wait_for_everyone(self) -> None:
        """Nothing to wait for."""

    @contextmanager
    def main_process_first(self) -> Iterator[None]:
        """The one process is the main one."""
        yield


def process_state() -> PartialState | _OneProcess:
    """accelerate's process state (rank, world size, device); initialises the process group on first use."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and importlib.util.find_spec("accelerate") is None:
        return _OneProcess()
    accelerate = require("accelerate", extra="experts", purpose=_PURPOSE)
    return accelerate.PartialState(cpu=not torch.cuda.is_available())


def sum_across_processes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sums every tensor over all processes in one reduce call; the result is on every process, on the CPU.

    Tensors go to the process device first (NCCL reduces CUDA tensors only) and keep their dtype: int64 counts are
    summed exactly, never through floats.
    """
    state = process_state()
    if state.num_processes == 1:
        return {key: value.clone() for key, value in tensors.items()}
    moved = {key: value.to(state.device) for key, value in tensors.items()}
    summed = require("accelerate.utils", extra="experts", purpose=_PURPOSE).reduce(moved, reduction="sum")
    return {key: value.cpu() for key, value in summed.items()}


def broadcast_from_main(value: Any) -> Any:
    """Returns the main process's ``value`` on every process (a small picklable object such as a list of ints)."""
    state = process_state()
    if state.num_processes == 1:
        return value
    holder = [value]
    require("accelerate.utils", extra="experts", purpose=_PURPOSE).broadcast_object_list(holder, from_process=0)
    return holder[0]


def end_processes(wait: bool) -> None:
    """Ends a multi-process run cleanly: waits for every process (``wait``; a process that failed does not) and
    destroys the process group, whose gloo threads otherwise abort the interpreter at exit (``terminate called
    without an active exception``) while another process still works. A no-op on one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()
