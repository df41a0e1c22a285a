# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``ir3de recipe``: one of the paper's routers built from the authors' artifacts; the recipe parses its own options
(`ir3de_hf.recipes.m2d2.build_parser`, also behind ``python -m ir3de_hf.recipes.m2d2`` and ``torchrun``)."""

from __future__ import annotations

import argparse

from ._command import Command

__all__ = ["COMMANDS"]


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    from ..recipes import RECIPES

    parser.add_argument("recipe", choices=RECIPES, help="which of the paper's routers to build")
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER, help="the recipe's own options (see its --help)")


def _recipe(args: argparse.Namespace) -> int:
    from ..recipes.m2d2 import main as m2d2

    return m2d2(args.recipe_args, prog=f"ir3de recipe {args.recipe}")


COMMANDS = [
    Command(
        "recipe",
        "build one of the paper's routers from the authors' artifacts (m2d2: convert, count, evaluate, push)",
        """examples:
  ir3de recipe m2d2 --data dataset/ --output m2d2 --push-to gensyn
  ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 4 -m ir3de_hf.recipes.m2d2 --data dataset/ --output m2d2
  ir3de recipe m2d2 --help""",
        _recipe_arguments,
        _recipe,
    ),
]
