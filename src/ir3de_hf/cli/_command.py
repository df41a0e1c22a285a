# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""What one ``ir3de`` subcommand is: its name, help texts and the two functions that declare and run it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Command"]


@dataclass(frozen=True)
class Command:
    """An ``ir3de`` subcommand. ``configure`` declares its arguments (it may import heavy modules: it runs only for
    the command being run); ``run`` runs it and returns the exit code."""

    name: str
    help: str
    epilog: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
