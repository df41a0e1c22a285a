"""Seeded, order-free decisions of the builder: which groups come first, which windows a group keeps, which split
a group joins.

Every random choice is a sha256 of the seed and a stable name, never Python's randomised ``hash`` nor a shuffled
list, so nothing depends on filesystem order or on the interpreter's hash seed.
"""

from __future__ import annotations

import hashlib

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


def choose_split(need: dict[str, int], quotas: dict[str, int], size: int, max_share: float) -> str | None:
    """Split for the next group: the largest relative deficit among splits it suits, or None when all are full.

    A group larger than ``max_share`` of a held-out split's quota only goes to train, so one big package or license
    family can never make up most of a validation or test split.
    """
    eligible = [s for s in SPLITS if need[s] > 0 and (s == "train" or size <= max_share * quotas[s])]
    if not eligible:
        return None
    return max(eligible, key=lambda s: (need[s] / quotas[s], -SPLITS.index(s)))
