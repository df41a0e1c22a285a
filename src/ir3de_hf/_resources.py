# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Files the package carries beside its code (the benchmark, the Space app and its demo experts), found both in a
checkout and in an installed wheel.

The repository keeps them at its root (``data/ir3de-multidomain``, ``space_app``); ``src/ir3de_hf/benchmark`` and
``src/ir3de_hf/space_app`` are symlinks to them, which setuptools follows when it builds the wheel (``package-data``
in ``pyproject.toml``), so an installed package holds real copies and needs no checkout. A checkout whose symlinks
were not kept (some Windows setups) still finds them at the repository root.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["resource_path"]

# package symlink -> where the repository keeps it
_CHECKOUT = {"benchmark": "data/ir3de-multidomain", "space_app": "space_app"}


def resource_path(name: str) -> Path:
    """The resolved path of packaged resource ``name``: ``"benchmark"``, ``"space_app"`` or a path under one of them.

    Resolved, so that a checkout gets the repository's own folder (scripts that rebuild the benchmark write there,
    never over the symlink).

    Raises:
        FileNotFoundError: neither the package nor the checkout holds it.
    """
    top, _, rest = name.partition("/")
    if top not in _CHECKOUT:
        raise ValueError(f"unknown resource {name!r}; expected a path under one of {sorted(_CHECKOUT)}")
    candidates = [
        Path(str(files("ir3de_hf"))) / name,
        Path(__file__).resolve().parents[2] / _CHECKOUT[top] / rest,
    ]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise FileNotFoundError(
        f"{name} is not packaged with ir3de_hf (looked in {', '.join(str(c) for c in candidates)}); reinstall "
        f"ir3de_hf, or restore {_CHECKOUT[top]} in your checkout."
    )
