# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Card templates of ``hub_cards/``, found both in a checkout and in an installed wheel.

The repository keeps the templates in ``hub_cards/`` at its root; ``src/ir3de_hf/hub_cards`` is a symlink to it, which
setuptools follows when it builds the wheel (``package-data``), so an installed package carries real copies. A checkout
whose symlinks were not kept (some Windows setups) still finds them at the repository root.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["template_path"]


def template_path(name: str) -> Path:
    """The path of template ``name`` (e.g. ``"model_card.md"``)."""
    candidates = [
        Path(str(files("ir3de_hf"))) / "hub_cards" / name,
        Path(__file__).resolve().parents[2] / "hub_cards" / name,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Card template {name!r} not found (looked in {', '.join(str(c.parent) for c in candidates)}); reinstall "
        "ir3de_hf, or restore hub_cards/ in your checkout."
    )
