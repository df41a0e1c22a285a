# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The paper's settings as runnable builders: each recipe turns the authors' published artifacts into a Hub-ready
router with its experts, its evaluation and its card.

- `ir3de_hf.recipes.m2d2`: the CLM setting over the five M2D2 Llama-115M experts (``ir3de recipe m2d2`` or
  ``python -m ir3de_hf.recipes.m2d2``).
"""

RECIPES = ("m2d2",)
