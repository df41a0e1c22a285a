# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Argument types and options shared by the ``ir3de`` commands, ``ir3de serve`` and the recipes' own parser.

A type raises `argparse.ArgumentTypeError`, so a bad value is a usage error (exit 2) that names the argument:

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="ir3de x")
>>> _ = parser.add_argument("--batch-size", type=positive_int)
>>> parser.parse_args(["--batch-size", "8"]).batch_size
8
>>> positive_int("0")
Traceback (most recent call last):
argparse.ArgumentTypeError: expected an integer >= 1, got '0'
"""

from __future__ import annotations

import argparse
import math

__all__ = ["add_overwrite_argument", "expert_spec", "fraction", "milliseconds", "port", "positive_int"]


def positive_int(value: str) -> int:
    """An integer >= 1 (a count, a size)."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return int(value)


def port(value: str) -> int:
    """A TCP port to listen on, 1 to 65535 (0, "any free port", would hide where the server is)."""
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {value!r}")
    return int(value)


def expert_spec(value: str) -> tuple[str, str]:
    """``NAME=PATH`` -> ``(NAME, PATH)``."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def fraction(value: str, *, one: bool) -> float:
    """A number in (0, 1], or in (0, 1) without ``one``."""
    try:
        share = float(value)
    except ValueError:
        share = math.nan
    if not (0 < share <= 1 if one else 0 < share < 1):
        raise argparse.ArgumentTypeError(f"expected a number in (0, {'1]' if one else '1)'}, got {value!r}")
    return share


def milliseconds(value: str) -> float:
    """A wait from 0 to 1000 milliseconds."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 1000:
        raise argparse.ArgumentTypeError(f"expected milliseconds from 0 to 1000, got {value!r}")
    return number


def add_overwrite_argument(parser: argparse.ArgumentParser, where: str) -> None:
    """``--overwrite``: replace ``where`` even when it holds something other than a router."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {where} even when it holds something other than an IR3DE router (a model checkpoint, a "
        "dataset...): its files are deleted. Without it such a directory is refused and left as it is",
    )
