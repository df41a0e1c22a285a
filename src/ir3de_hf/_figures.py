# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Writing a matplotlib `Figure` to a PNG: one place for the layout, the folder and the resolution of every plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["save_figure"]


def save_figure(figure: Any, path: str | os.PathLike[str]) -> Path:
    """Lays ``figure`` out, creates the folder of ``path`` and saves it there at 110 dpi; returns the path."""
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
