# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Files the package carries beside its code (the benchmark, the Space app and its demo experts, the card templates),
found both in a checkout and in an installed wheel.

The repository keeps them at its root (``data/ir3de-multidomain``, ``space_app``, ``hub_cards``), where the project
layout wants them. ``pyproject.toml`` maps those folders into the package with setuptools' ``package-dir``
(``ir3de_hf.benchmark`` -> ``data/ir3de-multidomain``, ...), so the wheel holds real copies under ``ir3de_hf/`` and
needs no checkout, and the source tree needs no symlink (nor a build step that copies files, which a checkout would
have to rerun after every edit). An installed package finds them beside its modules; a checkout (also an editable
install, whose ``ir3de_hf`` is ``src/ir3de_hf``) finds them at the repository root.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["resource_path"]

# folder in the package -> where the repository keeps it
PACKAGED = {"benchmark": "data/ir3de-multidomain", "space_app": "space_app", "hub_cards": "hub_cards"}
_PACKAGE = Path(__file__).resolve().parent


def resource_path(name: str) -> Path:
    """The path of packaged resource ``name``: ``"benchmark"``, ``"space_app"``, ``"hub_cards"`` or a path under one
    of them (``"space_app/app.py"``).

    In a checkout this is the repository's own folder (scripts that rebuild the benchmark write there).

    Raises:
        ValueError: ``name`` is under none of those folders.
        FileNotFoundError: neither the package nor the checkout holds it.
    """
    top, _, rest = name.partition("/")
    if top not in PACKAGED:
        raise ValueError(f"unknown resource {name!r}; expected a path under one of {sorted(PACKAGED)}")
    candidates = [_PACKAGE / name, _PACKAGE.parents[1] / PACKAGED[top] / rest]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise FileNotFoundError(
        f"{name} is not packaged with ir3de_hf (looked in {', '.join(str(c) for c in candidates)}); reinstall "
        f"ir3de_hf, or restore {PACKAGED[top]} in your checkout."
    )
