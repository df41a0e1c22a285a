# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Card templates of ``hub_cards/``, found both in a checkout and in an installed wheel (`resource_path` says how)."""

from __future__ import annotations

from pathlib import Path

from ._resources import resource_path

__all__ = ["template_path"]


def template_path(name: str) -> Path:
    """The path of template ``name`` (e.g. ``"model_card.md"``).

    Raises:
        FileNotFoundError: no such template in the package or the checkout.
    """
    path = resource_path(f"hub_cards/{name}")
    if not path.is_file():
        raise FileNotFoundError(f"Card template {name!r} not found in {path.parent}; reinstall ir3de_hf.")
    return path
