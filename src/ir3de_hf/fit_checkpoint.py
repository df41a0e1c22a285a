# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Checkpoints of a fit in progress: one safetensors file per process with its partial histograms and, in the file's
metadata, the position each expert's stream reached.

Counts and position are written together in one file that replaces the previous one atomically (temporary file,
fsync, ``os.replace``), so a process killed at any moment leaves either the old or the new checkpoint, and the
counts in it are exactly those of the texts before its position: a resumed fit counts nothing twice.

A checkpoint whose fit ended is kept, marked ``finished``: it is never resumed (`FitCheckpoint.load` returns None),
so the next fit in the same directory counts afresh, and it does not block a fit with another number of processes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from .hub._atomic import atomic_file

__all__ = ["FitCheckpoint", "StreamProgress", "checkpoint_path"]

FORMAT = "ir3de-fit-state/2"  # 2: data identified by content; finished fits marked


@dataclass
class StreamProgress:
    """How far one expert's stream was counted on this process."""

    texts: int = 0
    tokens: int = 0
    done: bool = False
    position: dict[str, Any] | None = None  # IterableDataset.state_dict() after the last counted batch


@dataclass
class FitCheckpoint:
    """The state of one process: partial histograms (N x V, int64) and each expert's progress.

    ``identity`` describes the fit (experts and their data, vocabulary, process count, batching, budget); the fit
    compares it with its own before resuming. ``finished``: the fit ended and summed these counts.
    """

    identity: dict[str, Any]
    counts: torch.Tensor
    progress: list[StreamProgress] = field(default_factory=list)
    finished: bool = False

    def save(self, path: Path) -> None:
        metadata = {
            "format": FORMAT,
            "identity": json.dumps(self.identity, sort_keys=True),
            "progress": json.dumps([asdict(entry) for entry in self.progress]),
            "finished": json.dumps(self.finished),
        }
        with atomic_file(path) as temporary:
            save_file({"counts": self.counts.contiguous()}, temporary, metadata=metadata)
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())

    @classmethod
    def load(cls, path: Path) -> FitCheckpoint | None:
        """The checkpoint at ``path`` to resume from; None when there is none or its fit finished."""
        if not path.is_file():
            return None
        metadata = _metadata(path)
        if json.loads(metadata["finished"]):
            return None
        progress = [StreamProgress(**entry) for entry in json.loads(metadata["progress"])]
        return cls(json.loads(metadata["identity"]), load_file(str(path))["counts"], progress)


def _finished(path: Path) -> bool:
    return bool(json.loads(_metadata(path)["finished"]))


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a fit checkpoint of this version of ir3de_hf (format {metadata.get('format')!r}, "
            f"expected {FORMAT!r}); delete {path.parent} or pass another checkpoint directory."
        )
    return metadata


def checkpoint_path(directory: str | os.PathLike[str], rank: int, world_size: int) -> Path:
    """The checkpoint file of process ``rank``; unfinished checkpoints of other process counts in the same directory
    are refused."""
    directory = Path(directory)
    others = sorted(
        other.name
        for other in directory.glob("fit-state-*.safetensors")
        if not other.name.endswith(f"-of-{world_size:05d}.safetensors") and not _finished(other)
    )
    if others:
        raise ValueError(
            f"{directory} holds an unfinished fit checkpoint made with a different number of processes ({others[0]}); "
            f"resume it with that number of processes, or delete {directory} or pass another checkpoint directory."
        )
    return directory / f"fit-state-{rank:05d}-of-{world_size:05d}.safetensors"
