# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""What several commands do the same way: load a router, refuse a foreign output, require an optional extra."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["check_output", "load_encoder", "load_router", "require_extra"]


def require_extra(command: str, *requirements: tuple[str, str]) -> None:
    """Fails at once, in one line naming the extra to install, when a ``(module, extra)`` of ``command`` is missing
    (`ir3de_hf._extras.MissingExtraError`, which `main` prints without a traceback)."""
    from .._extras import require

    for module, extra in requirements:
        require(module, extra=extra, purpose=f"ir3de {command}")


def check_output(directory: str | Path, overwrite: bool) -> None:
    """Refuses a foreign ``--output`` before any work: a fit may count for hours before it saves."""
    from ..hub._router_files import check_save_target

    check_save_target(directory, overwrite)


def load_router(name_or_path: str) -> Any:
    """The router in a directory or Hub repository, with errors that say which of the two was not there."""
    from ..hub import local_path_or_hub_id
    from ..modeling_ir3de import IR3DERouterModel

    path = local_path_or_hub_id(name_or_path)
    if isinstance(path, Path):
        if not path.exists():
            raise FileNotFoundError(f"{name_or_path!r} is not a saved router (no such directory)")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{name_or_path!r} is not a saved router (no config.json there)")
        return IR3DERouterModel.from_pretrained(path)
    try:
        return IR3DERouterModel.from_pretrained(name_or_path)
    except OSError as error:
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a router directory nor a loadable Hub repository ({error})"
        ) from error


def load_encoder(load: Callable[..., Any], encoder: str, settings: dict[str, Any]) -> Any:
    """``load(encoder, **settings)``, with errors that name the encoder (transformers' often do not)."""
    try:
        return load(encoder, **settings)
    except OSError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise OSError(f"--encoder {encoder!r} cannot be loaded: {reason}") from error
