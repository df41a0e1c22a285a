"""Load the committed ir3de-multidomain benchmark from disk: no network, works with ``HF_HUB_OFFLINE=1``."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset

from ir3de_hf._resources import resource_path
from ir3de_hf.data.publish import SOURCES_FILE, split_file
from ir3de_hf.data.splits import SPLITS


def benchmark_path() -> Path:
    """The committed benchmark: ``data/ir3de-multidomain`` of a checkout, or its copy inside an installed wheel."""
    return resource_path("benchmark")


def _folder(path: str | Path | None) -> Path:
    folder = Path(path) if path is not None else benchmark_path()
    missing = [split_file(s) for s in SPLITS if not (folder / split_file(s)).is_file()]
    if missing:
        raise FileNotFoundError(
            f"ir3de-multidomain not found in {folder} (missing {', '.join(missing)}). Pass path= to a folder "
            "holding it, or rebuild it with `python scripts/build_benchmark.py`."
        )
    return folder


def load_benchmark(path: str | Path | None = None) -> DatasetDict:
    """The benchmark as a ``DatasetDict`` with train / validation / test splits, read from local parquet files."""
    folder = _folder(path)
    data_files = {split: str(folder / split_file(split)) for split in SPLITS}
    dataset = load_dataset("parquet", data_files=data_files)
    assert isinstance(dataset, DatasetDict)
    return dataset


def load_sources(path: str | Path | None = None) -> Dataset:
    """The ``sources`` metadata table (license, attribution and pinned artifact of every source)."""
    dataset = load_dataset("parquet", data_files=str(_folder(path) / SOURCES_FILE), split="train")
    assert isinstance(dataset, Dataset)
    return dataset
