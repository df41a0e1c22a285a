"""Build ir3de-multidomain: documents -> windows -> group-level splits -> a balanced ``DatasetDict``.

Per domain, documents are grouped (a group never straddles two splits), groups are visited in a seeded order, and
each group goes whole to the split with the largest relative deficit (see ``splits.choose_split``), contributing at
most ``max_windows_per_doc`` windows per document, ``max_windows_per_group`` per group, and ``max_group_share`` of a
validation or test quota, until every split is full.
If some domain cannot fill a split, that split is shrunk to the same size in every domain, so the benchmark stays
balanced.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value
from tqdm.auto import tqdm

from ir3de_hf.data.readers import READERS, Document
from ir3de_hf.data.sources import DOMAINS
from ir3de_hf.data.splits import SPLITS, choose_split, group_limit, pick_windows, processing_order
from ir3de_hf.data.windows import LINE_DOMAINS, WindowSpec, window_texts

FEATURES = Features(
    {
        "text": Value("string"),
        "domain": Value("string"),
        "source": Value("string"),
        "doc_id": Value("string"),
        "num_tokens": Value("int32"),
    }
)


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the benchmark's rows (with the pinned corpora and the tokenizer)."""

    seed: int = 0
    quotas: dict[str, int] = field(default_factory=lambda: {"train": 1600, "validation": 200, "test": 400})
    domains: tuple[str, ...] = DOMAINS
    min_tokens: int = 256  # every sample has at least this many SmolLM2 tokens (add_special_tokens=False)
    window: WindowSpec = field(default_factory=WindowSpec)
    max_windows_per_doc: int = 24
    max_windows_per_group: int = 96
    max_group_share: float = 0.25


@dataclass
class DomainPool:
    """Windows collected for one domain, per split, in processing order."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    groups: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in SPLITS})
    hard_cuts: int = 0
    documents_read: int = 0


def load_tokenizer() -> Any:
    """SmolLM2's tokenizer from the pinned, converted model directory."""
    from transformers import AutoTokenizer

    from ir3de_hf.assets import smollm2_path

    return AutoTokenizer.from_pretrained(smollm2_path())


def windows_of(docs: Sequence[Document], tokenizer: Any, config: BuildConfig, pool: DomainPool) -> list[list[dict]]:
    """Cut a batch of documents into rows, keeping at most ``max_windows_per_doc`` windows of each."""
    enc = tokenizer(
        [d.text for d in docs], add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False
    )
    per_doc: list[list[tuple[str, bool]]] = []
    for doc, offsets in zip(docs, enc["offset_mapping"], strict=True):
        by_line = doc.domain in LINE_DOMAINS
        cut = window_texts(doc.text, offsets, by_line, config.window, keep_indent=doc.domain == "code")
        keep = pick_windows(config.seed, doc.doc_id, len(cut), config.max_windows_per_doc)
        per_doc.append([cut[i] for i in keep])
    flat = [text for windows in per_doc for text, _ in windows]
    lengths = iter(len(ids) for ids in tokenizer(flat, add_special_tokens=False)["input_ids"]) if flat else iter(())
    out = []
    for doc, windows in zip(docs, per_doc, strict=True):
        rows = []
        for text, hard in windows:
            num_tokens = next(lengths)
            if num_tokens >= config.min_tokens:
                row = {"text": text, "domain": doc.domain, "source": doc.source, "doc_id": doc.doc_id}
                rows.append({**row, "num_tokens": num_tokens})
                pool.hard_cuts += hard
        out.append(rows)
    return out


def collect_domain(domain: str, tokenizer: Any, config: BuildConfig) -> DomainPool:
    """Fill one domain's splits group by group (seeded order), stopping as soon as every split is full."""
    groups: dict[str, list[Document]] = {}
    for doc in READERS[domain]():
        groups.setdefault(doc.group, []).append(doc)
    pool = DomainPool()
    need = dict(config.quotas)
    bar = tqdm(total=sum(config.quotas.values()), desc=f"windows {domain}", unit="sample", leave=False)
    for group in processing_order(config.seed, sorted(groups)):
        if all(n <= 0 for n in need.values()):
            break
        docs = groups[group]
        rows = [row for doc_rows in windows_of(docs, tokenizer, config, pool) for row in doc_rows]
        rows = [rows[i] for i in pick_windows(config.seed, f"group:{group}", len(rows), config.max_windows_per_group)]
        pool.documents_read += len(docs)
        split = choose_split(need, config.quotas)
        if split is None or not rows:
            continue
        limit = group_limit(split, config.quotas, config.max_group_share)
        if limit is not None and len(rows) > limit:  # the group still belongs to this split only
            rows = [rows[i] for i in pick_windows(config.seed, f"held-out:{group}", len(rows), limit)]
        taken = rows[: need[split]]
        pool.rows[split].extend(taken)
        pool.groups[split].add(group)
        need[split] -= len(taken)
        bar.update(len(taken))
    bar.close()
    return pool


def balance(pools: dict[str, DomainPool], quotas: dict[str, int]) -> dict[str, int]:
    """Per-split sizes every domain can fill: the quota, or the smallest domain's supply if that is less."""
    return {s: min([quotas[s], *(len(p.rows[s]) for p in pools.values())]) for s in SPLITS}


def build_benchmark(config: BuildConfig | None = None, tokenizer: Any = None) -> tuple[DatasetDict, dict[str, Any]]:
    """Build the benchmark; returns the ``DatasetDict`` and a JSON-able report (config, sizes, statistics)."""
    config = config or BuildConfig()
    tokenizer = tokenizer or load_tokenizer()
    pools = {domain: collect_domain(domain, tokenizer, config) for domain in tqdm(config.domains, desc="domains")}
    sizes = balance(pools, config.quotas)
    splits = {}
    for s in SPLITS:
        rows = [row for domain in config.domains for row in pools[domain].rows[s][: sizes[s]]]
        rows.sort(key=lambda r: (config.domains.index(r["domain"]), r["doc_id"]))  # stable: keeps window order
        splits[s] = Dataset.from_list(rows, features=FEATURES)
    dataset = DatasetDict(splits)
    report = {
        "config": {**asdict(config), "window": asdict(config.window)},
        "split_sizes_per_domain": sizes,
        "python": platform.python_version(),
        "hard_cuts": {d: p.hard_cuts for d, p in pools.items()},
        "documents_read": {d: p.documents_read for d, p in pools.items()},
        "supply": {d: {s: len(p.rows[s]) for s in SPLITS} for d, p in pools.items()},
    }
    return dataset, report
