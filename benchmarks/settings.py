"""Router settings the quality benchmarks compare against, shared by them (imported from this folder)."""

from __future__ import annotations

from typing import Any

# Issue 15's defaults where they differ from today's: chosen on a fixed validation set, replaced by the
# leave-one-source-out choice of generalisation.py.
ISSUE_15_DEFAULTS: dict[str, Any] = {"naive_bayes_weight": 0.1, "balance_experts": False}
