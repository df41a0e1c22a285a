"""The examples in the docstrings run and print what they say (doctest)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "ir3de_hf._extras",
    "ir3de_hf.aggregation",
    "ir3de_hf.calibration",
    "ir3de_hf.checkpoint",
    "ir3de_hf.configuration_ir3de",
    "ir3de_hf.data.protocol",
    "ir3de_hf.evaluation",
    "ir3de_hf.experts",
    "ir3de_hf.fitting",
    "ir3de_hf.inputs",
    "ir3de_hf.modeling_ir3de",
    "ir3de_hf.outputs",
    "ir3de_hf.perplexity",
    "ir3de_hf.routing_tables",
    "ir3de_hf.statistics",
    "ir3de_hf.store",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
