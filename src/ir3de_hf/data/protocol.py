"""Leave-one-source-out: the protocol that measures routing on sources a router never saw.

Every window of ir3de-multidomain (its train, validation and test splits, the out-of-source halves and the
additional sources) belongs to one *source*: a corpus with its own authors, style and documents (CPython's stdlib,
click, requests, SPDX licenses, ...). A fold holds one source out: the router is fitted on the windows of every other
source and tested on the held-out one. Averaged over the held-out sources, accuracy rewards what users need (routing
text of a new origin) and cannot be won by fitting the quirks of the sources one happened to validate on.

>>> folds = leave_one_source_out(
...     domains=["code", "code", "code", "legal", "legal"],
...     sources=["stdlib", "stdlib", "click", "spdx", "debian"],
...     doc_ids=["os.py", "re.py", "core.py", "MIT", "constitution"],
... )
>>> for fold in folds:
...     print(fold.source, fold.train, fold.test)
click (0, 1, 3, 4) (2,)
debian (0, 1, 2, 3) (4,)
spdx (0, 1, 2, 4) (3,)
stdlib (2, 3, 4) (0, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ir3de_hf.data.splits import pick_windows

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = ["HeldOutSource", "leave_one_source_out", "protocol_source", "source_pool"]

# Sources the benchmark stores under one key but that are separate corpora: (key, doc_id prefix) -> source.
_PARTS = {
    ("pypi-click-requests", "click:"): "pypi-click",
    ("pypi-click-requests", "requests:"): "pypi-requests",
    ("brown-editorial-government", "brown:cb"): "brown-editorial",
    ("brown-editorial-government", "brown:ch"): "brown-government",
}


@dataclass(frozen=True)
class HeldOutSource:
    """One fold: the held-out ``source`` (of ``domain``), the rows to fit on and the rows to test on."""

    source: str
    domain: str
    train: tuple[int, ...]
    test: tuple[int, ...]


def protocol_source(source: str, doc_id: str) -> str:
    """The protocol's source of a window: its ``source`` column, with the two composite keys split into their corpora
    (click and requests; Brown editorials and government documents)."""
    for (key, prefix), part in _PARTS.items():
        if source == key and doc_id.startswith(prefix):
            return part
    return source


def leave_one_source_out(
    domains: Sequence[str],
    sources: Sequence[str],
    doc_ids: Sequence[str],
    *,
    max_train_per_source: int | None = None,
    max_test_per_source: int | None = None,
    seed: int = 0,
) -> list[HeldOutSource]:
    """One fold per source, in sorted order. Rows are indices into the three parallel sequences.

    Each source keeps the same seeded choice of at most ``max_train_per_source`` training rows in every fold where it
    is not held out (so per-source statistics are counted once), and gives a seeded choice of at most
    ``max_test_per_source`` test rows in its own fold. Refused: a source of two domains, a document of two sources
    (it would be on both sides) and a domain with fewer than two sources (its fold would have nothing to fit on).
    """
    if not len(domains) == len(sources) == len(doc_ids):
        raise ValueError(
            f"{len(domains)} domains, {len(sources)} sources and {len(doc_ids)} doc ids: they must pair up."
        )
    rows: dict[str, list[int]] = {}
    domain_of: dict[str, str] = {}
    source_of_doc: dict[str, str] = {}
    for index, (domain, source, doc_id) in enumerate(zip(domains, sources, doc_ids, strict=True)):
        if domain_of.setdefault(source, domain) != domain:
            raise ValueError(f"Source {source!r} has rows of two domains ({domain_of[source]!r}, {domain!r}).")
        if source_of_doc.setdefault(doc_id, source) != source:
            raise ValueError(
                f"Document {doc_id!r} appears in sources {source_of_doc[doc_id]!r} and {source!r}: a held-out source "
                "would share it with the training side. Give every document one source."
            )
        rows.setdefault(source, []).append(index)
    per_domain: dict[str, list[str]] = {}
    for source, domain in domain_of.items():
        per_domain.setdefault(domain, []).append(source)
    single = sorted(domain for domain, names in per_domain.items() if len(names) < 2)
    if single:
        raise ValueError(f"Domains {single} have one source only: holding it out leaves nothing to fit on.")
    train = {
        source: _choice(seed, f"train:{source}", indices, max_train_per_source) for source, indices in rows.items()
    }
    return [
        HeldOutSource(
            source=source,
            domain=domain_of[source],
            train=tuple(sorted(i for other in sorted(rows) if other != source for i in train[other])),
            test=_choice(seed, f"test:{source}", rows[source], max_test_per_source),
        )
        for source in sorted(rows)
    ]


def _choice(seed: int, name: str, indices: list[int], cap: int | None) -> tuple[int, ...]:
    if cap is None or len(indices) <= cap:
        return tuple(indices)
    return tuple(sorted(indices[i] for i in pick_windows(seed, name, len(indices), cap)))


def source_pool() -> Dataset:
    """Every window of ir3de-multidomain (train, validation, test, the out-of-source halves and the additional
    sources) with its ``protocol_source`` column: the material the folds are drawn from."""
    from datasets import concatenate_datasets

    from ir3de_hf.data.load import load_benchmark
    from ir3de_hf.data.more_sources import load_more_sources
    from ir3de_hf.data.out_of_source import load_out_of_source

    pool = concatenate_datasets([*load_benchmark().values(), *load_out_of_source().values(), load_more_sources()])
    keys = [protocol_source(source, doc_id) for source, doc_id in zip(pool["source"], pool["doc_id"], strict=True)]
    return pool.add_column("protocol_source", keys)
