"""Seeded, order-free decisions of the builder: which groups come first, which windows a group keeps, which split
a group joins.

Every random choice is a sha256 of the seed and a stable name, never Python's randomised ``hash`` nor a shuffled
list, so nothing depends on filesystem order or on the interpreter's hash seed.
"""

from __future__ import annotations

import hashlib
import math

SPLITS: tuple[str, ...] = ("train", "validation", "test")


def unit_interval(*parts: object) -> float:
    """A reproducible number in [0, 1) for a tuple of names."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def processing_order(seed: int, names: list[str]) -> list[str]:
    """Seeded permutation of group names: groups earlier in it are used first, until every split is full."""
    return sorted(names, key=lambda name: (unit_interval(seed, "order", name), name))


def pick_windows(seed: int, name: str, count: int, cap: int) -> list[int]:
    """At most ``cap`` window indices of a document or group, spread by a seeded draw, in their original order."""
    if count <= cap:
        return list(range(count))
    ranked = sorted(range(count), key=lambda i: unit_interval(seed, "window", name, i))
    return sorted(ranked[:cap])


def choose_split(need: dict[str, int], quotas: dict[str, int]) -> str | None:
    """Split for the next group: the largest relative deficit (ties in ``SPLITS`` order), or None when all are full."""
    open_splits = [s for s in SPLITS if need[s] > 0]
    if not open_splits:
        return None
    return max(open_splits, key=lambda s: (need[s] / quotas[s], -SPLITS.index(s)))


def group_limit(split: str, quotas: dict[str, int], max_share: float) -> int | None:
    """Most windows one group may give a held-out split, so no single package or family dominates it."""
    return None if split == "train" else max(1, math.ceil(max_share * quotas[split]))
