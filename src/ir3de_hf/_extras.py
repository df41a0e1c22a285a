# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Optional dependencies: the core routes with torch, transformers, safetensors and huggingface_hub; everything else
comes with an extra, and a missing one is named in one line (``pip install 'ir3de_hf[space]'``), not a traceback.

>>> require("json", extra="data", purpose="reading JSON").__name__
'json'
>>> try:
...     require("no_such_module_xyz", extra="serve", purpose="ir3de serve")
... except MissingExtraError as error:
...     print(error)
ir3de serve needs no_such_module_xyz, which is not installed: pip install 'ir3de_hf[serve]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "require"]

# extra -> what it adds (pyproject.toml's [project.optional-dependencies] holds the packages)
EXTRAS = {
    "experts": "loading expert models and LoRA adapters, routed generation (accelerate, peft)",
    "data": "fitting from datasets, the benchmark and asset builders, plots (datasets, gguf, matplotlib, jinja2)",
    "space": "the Gradio Space and `ir3de demo` (gradio, with [experts] and [data])",
    "serve": "`ir3de serve` (fastapi, uvicorn, httpx, with [experts])",
    "bench": "the comparison baselines of benchmarks/ (model2vec, scikit-learn)",
    "dev": "tests, lint and type checks (every extra, pytest, ruff, mypy, selenium, openai)",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Imports ``module``, or raises `MissingExtraError` saying which extra of ir3de_hf installs it.

    Args:
        module: the top-level module to import (``"gradio"``, ``"datasets"``...).
        extra: the ir3de_hf extra that provides it (a key of `EXTRAS`).
        purpose: what needs it, for the message (``"ir3de demo"``).
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; expected one of {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and error.name != module and not module.startswith(f"{error.name}."):
            raise  # the module is installed but one of its own imports is broken: that traceback is the news
        raise MissingExtraError(
            f"{purpose} needs {module}, which is not installed: pip install 'ir3de_hf[{extra}]'"
        ) from None
