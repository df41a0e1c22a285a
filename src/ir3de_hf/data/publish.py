"""Write a built benchmark as a Hub-ready dataset folder: parquet splits, sources table, card, license, build log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import DatasetDict

from ir3de_hf.assets import ARTIFACTS
from ir3de_hf.data.card import render_dataset_card, render_license_notice
from ir3de_hf.data.sources import SOURCES


def split_file(split: str) -> str:
    """Path of a split inside the folder, in the Hub's ``data/<split>-00000-of-00001.parquet`` layout."""
    return f"data/{split}-00000-of-00001.parquet"


SOURCES_FILE = "sources/sources.parquet"
BUILD_INFO_FILE = "build_info.json"


def sources_table() -> pa.Table:
    """The ``sources`` metadata table: one row per source with its pinned artifact, license and attribution."""
    rows = []
    for s in SOURCES:
        art = ARTIFACTS.get(s.artifact)
        pin = (art.registry, art.name, art.version, art.sha256) if art else ("", "", "", "")
        rows.append({**s.as_row(), **dict(zip(("registry", "package", "version", "sha256"), pin, strict=True))})
    return pa.Table.from_pylist(rows)


def save_benchmark(dataset: DatasetDict, report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write every file of the dataset folder; returns the paths written."""
    written = []
    for split, part in dataset.items():
        path = out_dir / split_file(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part.data.table, path, compression="zstd", compression_level=19)
        written.append(path)
    (out_dir / SOURCES_FILE).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(sources_table(), out_dir / SOURCES_FILE, compression="zstd")
    written.append(out_dir / SOURCES_FILE)
    texts = {
        BUILD_INFO_FILE: json.dumps(report, indent=2, sort_keys=True) + "\n",
        "README.md": render_dataset_card(dataset, report),
        "LICENSE.md": render_license_notice(),
    }
    for name, text in texts.items():
        (out_dir / name).write_text(text, encoding="utf-8")
        written.append(out_dir / name)
    return written
