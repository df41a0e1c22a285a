# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""How a command reports an error it expects: one line on stderr (``PROG: error: ...``), exit code 1; with
``IR3DE_DEBUG=1`` the traceback first. Shared by ``ir3de`` and the recipes' own entry points."""

from __future__ import annotations

import os
import sys
import traceback

from .._extras import MissingExtraError

__all__ = ["DEBUG_ENV", "EXPECTED_ERRORS", "report_error"]

DEBUG_ENV = "IR3DE_DEBUG"
# Bad input (a missing file, bad data, an unknown expert) and a missing optional extra: what the user can fix.
EXPECTED_ERRORS = (ValueError, OSError, MissingExtraError)


def report_error(prog: str, error: BaseException) -> int:
    """Prints ``error`` for the user of ``prog`` and returns the exit code: 130 for an interrupt, else 1."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        traceback.print_exception(error)
    if isinstance(error, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1
