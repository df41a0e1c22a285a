# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The few torch.distributed operations a fit needs, through accelerate's `PartialState`.

Launched plainly this is a single process and every call is a no-op. Under ``torchrun`` or ``accelerate launch``
(``ACCELERATE_USE_CPU=1`` for gloo on CPU) the process group is set up by accelerate, and counts are summed with one
``all_reduce``: integer sums are exact, so a fit on P processes equals the fit on one.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, reduce

__all__ = ["broadcast_from_main", "end_processes", "process_state", "sum_across_processes"]


def process_state() -> PartialState:
    """accelerate's process state (rank, world size, device); initialises the process group on first use."""
    return PartialState(cpu=not torch.cuda.is_available())


def sum_across_processes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sums every tensor over all processes in one reduce call; the result is on every process, on the CPU.

    Tensors go to the process device first (NCCL reduces CUDA tensors only) and keep their dtype: int64 counts are
    summed exactly, never through floats.
    """
    state = process_state()
    if state.num_processes == 1:
        return {key: value.clone() for key, value in tensors.items()}
    moved = {key: value.to(state.device) for key, value in tensors.items()}
    summed = reduce(moved, reduction="sum")
    return {key: value.cpu() for key, value in summed.items()}


def broadcast_from_main(value: Any) -> Any:
    """Returns the main process's ``value`` on every process (a small picklable object such as a list of ints)."""
    state = process_state()
    if state.num_processes == 1:
        return value
    holder = [value]
    broadcast_object_list(holder, from_process=0)
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
