"""ir3de-multidomain: the committed benchmark (schema, balance, splits, card) and the builder that makes it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
import yaml

from ir3de_hf.data import (
    DOMAINS,
    SOURCES,
    SPLITS,
    BuildConfig,
    benchmark_path,
    build_benchmark,
    load_benchmark,
    load_sources,
    render_dataset_card,
)
from ir3de_hf.data.publish import BUILD_INFO_FILE, split_file
from ir3de_hf.data.splits import choose_split, group_limit, pick_windows, processing_order
from ir3de_hf.data.windows import WindowSpec, boundaries, token_spans

FOLDER = benchmark_path()
SIZES = {"train": 1600, "validation": 200, "test": 400}


@pytest.fixture(scope="module")
def bench():
    return load_benchmark()


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads((FOLDER / BUILD_INFO_FILE).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------- the committed dataset


def test_schema(bench) -> None:
    assert list(bench) == list(SPLITS)
    for split in SPLITS:
        features = bench[split].features
        assert list(features) == ["text", "domain", "source", "doc_id", "num_tokens"]
        assert {name: features[name].dtype for name in features} == {
            "text": "string",
            "domain": "string",
            "source": "string",
            "doc_id": "string",
            "num_tokens": "int32",
        }


def test_balanced_per_domain(bench) -> None:
    for split in SPLITS:
        counts = bench[split].to_pandas()["domain"].value_counts().to_dict()
        assert counts == {domain: SIZES[split] for domain in DOMAINS}, split


def test_lengths_fit_the_prompt_cuts(bench) -> None:
    for split in SPLITS:
        frame = bench[split].to_pandas()
        assert frame["num_tokens"].min() >= 256, "every sample must survive a cut to 256 tokens"
        assert 300 <= frame["num_tokens"].mean() <= 400
        assert (frame["text"].str.rstrip() == frame["text"]).all()
        assert not frame["text"].str.startswith("\n").any()
        prose = frame[frame["domain"] != "code"]["text"]  # code keeps the indentation of its first line
        assert (prose.str.strip() == prose).all()
        assert frame["text"].str.len().min() > 50  # 256 tokens of Chinese are under 100 characters


def test_no_document_in_two_splits(bench) -> None:
    docs = {split: set(bench[split]["doc_id"]) for split in SPLITS}
    for a, b in combinations(SPLITS, 2):
        assert not docs[a] & docs[b], f"{a} and {b} share documents"
    for split in SPLITS:  # a doc_id names one document of one domain and source
        frame = bench[split].to_pandas()
        assert (frame.groupby("doc_id")[["domain", "source"]].nunique() == 1).all().all()


def test_sources_cover_every_sample(bench) -> None:
    table = load_sources()
    assert list(table["key"]) == [s.key for s in SOURCES]
    assert all(table["license"]) and all(table["attribution"])
    pinned = [row for row in table if row["artifact"] != "python-stdlib"]
    assert all(len(row["sha256"]) == 64 and row["version"] for row in pinned)
    by_domain = {row["key"]: row["domain"] for row in table}
    for split in SPLITS:
        frame = bench[split].to_pandas()
        assert set(frame["source"]) <= set(by_domain)
        assert all(by_domain[s] == d for s, d in zip(frame["source"], frame["domain"], strict=True))
    train_sources = set(bench["train"]["source"])
    assert train_sources == set(by_domain), "every source contributes to train"


def test_load_benchmark_offline_without_network(tmp_path: Path) -> None:
    """In a fresh interpreter with the Hub switched off and every socket refused."""
    code = (
        "import socket\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network disabled by the test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from ir3de_hf.data import load_benchmark\n"
        "ds = load_benchmark()\n"
        "print({split: len(part) for split, part in ds.items()})\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "{'train': 9600, 'validation': 1200, 'test': 2400}"


def test_load_benchmark_from_an_explicit_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ir3de-multidomain not found"):
        load_benchmark(tmp_path)
    copy = tmp_path / "copy"
    for split in SPLITS:
        (copy / split_file(split)).parent.mkdir(parents=True, exist_ok=True)
        (copy / split_file(split)).write_bytes((FOLDER / split_file(split)).read_bytes())
    assert len(load_benchmark(copy)["test"]) == 2400


def test_card_is_complete_and_up_to_date(bench, report) -> None:
    card = (FOLDER / "README.md").read_text(encoding="utf-8")
    assert card == render_dataset_card(bench, report), "re-render with scripts/build_benchmark.py --card-only"
    header = yaml.safe_load(card.split("---\n")[1])
    for key in ("license", "language", "task_categories", "pretty_name", "configs"):
        assert header[key], key
    default = next(c for c in header["configs"] if c["config_name"] == "default")
    assert [f["split"] for f in default["data_files"]] == list(SPLITS)
    for config in header["configs"]:
        for entry in config["data_files"]:
            assert (FOLDER / entry["path"]).is_file(), entry["path"]
    for source in SOURCES:
        assert source.license in card and source.attribution in card
    assert (FOLDER / header["license_link"]).is_file()
    size = sum(p.stat().st_size for p in FOLDER.rglob("*") if p.is_file())
    assert size <= 20 * 2**20


# ------------------------------------------------------------------------------------------------- builder pieces


def test_windows_end_at_boundaries_within_budget() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(400))
    starts = [i for i, ch in enumerate(text) if ch != " " and (i == 0 or text[i - 1] == " ")]  # one token per word
    spec = WindowSpec(min_tokens=40, max_tokens=60, overflow_tokens=80)
    cuts = boundaries(text, by_line=False)
    spans = token_spans(starts, cuts, spec)
    assert spans[0][0] == 0
    for (first, end, hard), nxt in zip(spans, [*spans[1:], None], strict=True):
        assert not hard
        assert 40 <= end - first <= 60
        assert text[starts[end - 1] :].startswith("here.")  # ends on a sentence
        if nxt:
            assert nxt[0] == end
    assert len(starts) - spans[-1][1] < 40  # only a short tail is dropped


def test_windows_cut_hard_only_without_boundaries() -> None:
    starts = list(range(0, 1000, 2))  # 500 tokens, no boundary at all
    spans = token_spans(starts, [], WindowSpec(min_tokens=100, max_tokens=150, overflow_tokens=200))
    assert spans == [(0, 150, True), (150, 300, True), (300, 500, False)]  # the document's end is a boundary


def test_split_decisions_are_seeded_and_order_free() -> None:
    names = [f"doc-{i}" for i in range(50)]
    assert processing_order(0, names) == processing_order(0, list(reversed(names)))
    assert processing_order(0, names) != processing_order(1, names)
    assert pick_windows(0, "d", 40, 10) == pick_windows(0, "d", 40, 10) == sorted(pick_windows(0, "d", 40, 10))
    quotas = {"train": 80, "validation": 10, "test": 20}
    assert choose_split(dict(quotas), quotas) == "train"  # a tie goes to the first split
    assert choose_split({"train": 40, "validation": 10, "test": 20}, quotas) == "validation"
    assert choose_split({"train": 40, "validation": 4, "test": 20}, quotas) == "test"
    assert choose_split({"train": 0, "validation": 0, "test": 0}, quotas) is None
    assert group_limit("train", quotas, 0.25) is None
    assert (group_limit("validation", quotas, 0.25), group_limit("test", quotas, 0.25)) == (3, 5)


# ------------------------------------------------------------------------------------------------ full builds


@pytest.mark.slow
def test_builder_is_deterministic() -> None:
    config = BuildConfig(quotas={"train": 24, "validation": 6, "test": 12})
    first, first_report = build_benchmark(config)
    second, second_report = build_benchmark(config)
    assert first_report == second_report
    for split in SPLITS:
        assert first[split].to_list() == second[split].to_list()
        assert len(first[split]) == len(DOMAINS) * config.quotas[split]
    docs = {split: set(first[split]["doc_id"]) for split in SPLITS}
    for a, b in combinations(SPLITS, 2):
        assert not docs[a] & docs[b]


@pytest.mark.slow
def test_committed_benchmark_is_reproducible(bench, report) -> None:
    """A full rebuild from the pinned corpora gives the committed rows (the code domain needs the same Python)."""
    rebuilt, rebuilt_report = build_benchmark(BuildConfig())
    same_python = platform.python_version() == report["python"]
    rebuilt_report = json.loads(json.dumps(rebuilt_report))
    assert rebuilt_report["config"] == report["config"]
    if same_python:
        assert rebuilt_report == report
    for split in SPLITS:
        old, new = bench[split].to_pandas(), rebuilt[split].to_pandas()
        if not same_python:
            old, new = old[old["domain"] != "code"], new[new["domain"] != "code"]
        assert old.reset_index(drop=True).equals(new.reset_index(drop=True)), split
