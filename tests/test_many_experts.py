"""ir3de-many-experts (`ir3de_hf.data.many_experts`): the committed build's splits share no document, it has at least
100 experts, and it is what a fresh build from the pinned corpora gives."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ir3de_hf.data import many_experts
from ir3de_hf.data.many_experts import SPLITS, ManyExpertsConfig, build_many_experts, load_many_experts

DATA = Path(__file__).resolve().parents[1] / "data" / "ir3de-many-experts" / "data"


@pytest.fixture(scope="module")
def built() -> tuple[dict[str, list[dict]], dict]:
    dataset, report = load_many_experts(DATA, build=False)
    return {split: dataset[split].to_list() for split in SPLITS}, report


def test_committed_build_matches_the_default_config(built) -> None:
    _, report = built
    assert report["fingerprint"] == ManyExpertsConfig().fingerprint()
    assert sum(path.stat().st_size for path in DATA.glob("*.parquet")) < 3_000_000


def test_at_least_100_experts_with_train_and_test_rows(built) -> None:
    rows, report = built
    names = [e["name"] for e in report["experts"]]
    assert len(names) == len(set(names)) >= 100
    families = Counter(e["family"] for e in report["experts"])
    assert families["udhr"] >= 100 and families["icd10cm"] >= 20 and families["brown"] == 15
    for split in ("train", "test"):
        assert set(Counter(row["expert"] for row in rows[split])) == set(names)
    assert {row["expert"] for row in rows["heldout_source"]} <= set(names)


def test_splits_are_document_disjoint(built) -> None:
    rows, report = built
    train_docs = {row["doc_id"] for row in rows["train"]}
    test_docs = {row["doc_id"] for row in rows["test"]}
    assert not train_docs & test_docs  # across experts too: a UDHR test article is test in every language
    assert {d for d in test_docs if d.startswith("udhr:")} == {
        f"udhr:article-{n:02d}" for n in report["udhr_test_articles"]
    }
    heldout_docs = {row["doc_id"] for row in rows["heldout_source"]}
    assert heldout_docs and all(d.startswith("chatterbot:") for d in heldout_docs)
    assert not heldout_docs & (train_docs | test_docs)
    assert not {row["source"] for row in rows["heldout_source"]} & {row["source"] for row in rows["train"]}
    train_texts = {row["text"] for row in rows["train"]}
    assert not any(row["text"] in train_texts for split in ("test", "heldout_source") for row in rows[split])


def test_udhr_reading_is_deterministic() -> None:
    config = ManyExpertsConfig()
    assert many_experts._udhr(config) == many_experts._udhr(config)
    assert many_experts.udhr_test_articles(config) != many_experts.udhr_test_articles(ManyExpertsConfig(seed=1))


@pytest.mark.slow
def test_a_fresh_build_gives_the_committed_rows(built) -> None:
    rows, report = built
    dataset, experts, fresh = build_many_experts()
    assert [e.name for e in experts] == [e["name"] for e in report["experts"]]
    assert fresh == report
    for split in SPLITS:
        assert dataset[split].to_list() == rows[split]
