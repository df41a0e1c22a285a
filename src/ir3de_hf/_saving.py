# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Atomic saves: a failed save never leaves a half-written router where a good one was."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_directory"]


@contextmanager
def atomic_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields an empty staging directory; when the block succeeds its files replace those of ``target``.

    The staging directory lives inside ``target`` (same filesystem), so each file is moved with an atomic
    ``os.replace`` only after everything was written. If the block raises, nothing in ``target`` changes. Files of
    ``target`` that the save does not write (a user's notes, a ``.git`` folder) are left alone.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ir3de-staging-", dir=target))
    try:
        yield staging
        for source in sorted(path for path in staging.rglob("*") if path.is_file()):
            destination = target / source.relative_to(staging)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
