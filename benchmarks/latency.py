"""Latency percentiles, as every serving benchmark reports them (imported from this folder)."""

from __future__ import annotations

import statistics


def percentiles(seconds: list[float]) -> dict[str, float | None]:
    """p50 and p99 in milliseconds (p99: the nearest rank); None for no values."""
    if not seconds:
        return {"p50_ms": None, "p99_ms": None}
    ordered = sorted(seconds)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
    }
