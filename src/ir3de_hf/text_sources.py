# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Every kind of expert text a fit accepts, opened as one streaming `datasets.IterableDataset`.

A single kind of stream keeps the fit loop simple: it can be sharded over processes without repeating a sample
(`split_dataset_by_node`), and its `state_dict()` is the exact position to resume from after a crash. Files are
streamed, never copied into an Arrow cache, so a fit on billions of tokens runs in constant memory.
"""

from __future__ import annotations

import glob
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, IterableDataset, load_dataset
from datasets.distributed import split_dataset_by_node

from ._hub_files import local_path_or_hub_id

__all__ = ["describe_source", "open_text_source", "shard_for_process"]

_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_FORMATS = {".txt": "text", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}


def open_text_source(source: Any, *, text_column: str = "text", split: str = "train") -> IterableDataset:
    """Opens expert text as an `IterableDataset` with a ``text_column`` of strings.

    ``source`` may be a `datasets.Dataset` or `IterableDataset`, a list of strings, or a path: a directory of ``.txt``
    files (each file is one text; ``.parquet`` / ``.jsonl`` files are used when it has no ``.txt``), a ``.parquet``,
    ``.jsonl`` or ``.txt`` file, a glob pattern of such files, or else a dataset id on the Hub (``split`` is used).
    """
    if isinstance(source, str | Path):
        dataset = _open_path(source, text_column, split)
    elif isinstance(source, Dataset):
        dataset = source.to_iterable_dataset()
    elif isinstance(source, IterableDataset):
        dataset = source
    elif isinstance(source, Sequence) and all(isinstance(text, str) for text in source):
        dataset = Dataset.from_dict({text_column: list(source)}).to_iterable_dataset()
    else:
        raise TypeError(
            "Expert text must be a path, a dataset id, a datasets.Dataset / IterableDataset or a list of strings, got "
            f"{type(source).__name__}."
        )
    if dataset.features is not None:
        if text_column not in dataset.features:
            raise ValueError(
                f"{describe_source(source)} has no column {text_column!r} (columns: "
                f"{', '.join(dataset.features)}); choose the text column with text_column= (CLI: --text-column)."
            )
        dataset = dataset.select_columns([text_column])
    return dataset


def shard_for_process(dataset: IterableDataset, rank: int, world_size: int) -> IterableDataset:
    """The part of ``dataset`` that process ``rank`` counts. Every sample goes to exactly one process, none twice
    (unlike a DataLoader with ``even_batches=True``): whole files when their number is a multiple of
    ``world_size``, else every ``world_size``-th sample."""
    return dataset if world_size == 1 else split_dataset_by_node(dataset, rank=rank, world_size=world_size)


def describe_source(source: Any) -> str:
    """A short, stable description of a source, used in messages and to tie a checkpoint to its data."""
    if isinstance(source, str | Path):
        path = Path(source)
        return str(path.resolve()) if path.exists() else str(source)
    if isinstance(source, Dataset):
        return f"Dataset(fingerprint={source._fingerprint}, rows={len(source)})"
    if isinstance(source, IterableDataset):
        return f"IterableDataset(name={source.info.dataset_name}, features={source.features})"
    digest = hashlib.sha256("\x00".join(source).encode("utf-8")).hexdigest()[:16]
    return f"list of {len(source)} texts (sha256 {digest})"


def _open_path(source: str | Path, text_column: str, split: str) -> IterableDataset:
    """Files or a Hub dataset; `local_path_or_hub_id` decides which (a `Path` is always local), and ``_DATASET_ID``
    also requires a dataset id to start with a letter or digit."""
    located = local_path_or_hub_id(source)
    if isinstance(located, str) and _DATASET_ID.match(located):
        return _open_hub_dataset(located, split)
    path = Path(located)
    source = str(source)
    if path.is_dir():
        files = _files_in(path)
    elif path.is_file():
        files = [path]
    elif glob.has_magic(source):
        files = sorted(Path(match) for match in glob.glob(str(path), recursive=True) if Path(match).is_file())
        if not files:
            raise FileNotFoundError(f"No file matches {source!r}.")
    else:
        raise FileNotFoundError(
            f"No such file or directory: {source!r} (expected a directory of .txt files, a .parquet / .jsonl / .txt "
            "file, a glob pattern or a dataset id)."
        )
    kinds = {_FORMATS.get(file.suffix.lower()) for file in files}
    if None in kinds or len(kinds) != 1:
        suffixes = sorted({file.suffix or file.name for file in files})
        raise ValueError(f"{source!r}: expected files of one kind among .txt, .parquet, .jsonl, got {suffixes}.")
    kind = kinds.pop()
    options: dict[str, Any] = {"sample_by": "document"} if kind == "text" else {}
    dataset = load_dataset(kind, data_files=[str(file) for file in files], split="train", streaming=True, **options)
    if kind == "text" and text_column != "text":
        dataset = dataset.rename_column("text", text_column)
    return dataset


def _files_in(directory: Path) -> list[Path]:
    for suffixes in ((".txt",), (".parquet",), (".jsonl", ".json")):
        files = sorted(file for file in directory.rglob("*") if file.is_file() and file.suffix.lower() in suffixes)
        if files:
            return files
    raise FileNotFoundError(f"{str(directory)!r} holds no .txt, .parquet or .jsonl file.")


def _open_hub_dataset(dataset_id: str, split: str) -> IterableDataset:
    try:
        return load_dataset(dataset_id, split=split, streaming=True)
    except Exception as error:  # the Hub client raises many types; the user needs one message
        raise FileNotFoundError(
            f"{dataset_id!r} is neither a local path nor a loadable dataset id ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'})."
        ) from error
