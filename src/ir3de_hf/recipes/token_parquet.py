# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Pre-tokenised parquet splits, as the authors keep M2D2: ``<root>/<domain>/{train,validation,test}/*.parquet``
with an ``input_ids`` list column (and ``label``, the ids shifted by one) per row.

Rows are read in file order and cut into batches of ``batch_size`` rows, dropping an incomplete last batch as the
authors' data loaders do. Token ids go straight into histograms (no tokenizer pass). Row ``i`` belongs to process
``i % world_size``, the authors' sharding, so every row is counted exactly once over all processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from ..distributed import process_state, sum_across_processes
from ..inputs import TokenCounter

__all__ = ["IDS_COLUMN", "LABELS_COLUMN", "Budget", "count_split", "count_train_splits", "load_split", "split_files"]

IDS_COLUMN, LABELS_COLUMN = "input_ids", "label"


@dataclass(frozen=True)
class Budget:
    """How much of a split to read: ``batches`` batches of ``batch_size`` rows, each row cut to ``sequence_length``."""

    batches: int
    batch_size: int
    sequence_length: int

    def rows(self, files: Sequence[Path], where: str) -> int:
        """Rows used: the budget, or all complete batches of a smaller split; an error if not even one batch."""
        available = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
        used = min(available, self.batches * self.batch_size) // self.batch_size * self.batch_size
        if used == 0:
            raise ValueError(
                f"{where} has {available} row(s), fewer than one batch of {self.batch_size}; lower --batch-size."
            )
        return used


def split_files(root: Path, domain: str, split: str) -> list[Path]:
    """The parquet files of one split, sorted; a missing split is a `ValueError` saying where it was looked for."""
    files = sorted((root / domain / split).glob("*.parquet"))
    if not files:
        raise ValueError(
            f"No parquet files for domain {domain!r}, split {split!r} (expected {domain}/{split}/*.parquet under the "
            "--data folder)."
        )
    return files


def count_split(
    files: Sequence[Path], budget: Budget, counter: TokenCounter, *, rank: int = 0, world_size: int = 1
) -> int:
    """Counts this process's rows of the split's budget into ``counter``; returns the number of rows counted."""
    rows = budget.rows(files, f"{files[0].parent}")
    counted = 0
    for start, table in _row_batches(files, [IDS_COLUMN], rows):
        mine = np.nonzero((np.arange(start, start + table.num_rows) % world_size) == rank)[0]
        if mine.size:
            ids = _flat_ids(table.column(IDS_COLUMN).take(pa.array(mine)), budget.sequence_length)
            counter.add(torch.from_numpy(ids))
            counted += int(mine.size)
    return counted


def count_train_splits(
    root: Path, domains: Sequence[str], budget: Budget, vocab_size: int, never_counted: Sequence[int]
) -> tuple[dict[str, torch.Tensor], dict[str, int], list[int]]:
    """Counts this process's rows of every domain's ``train`` budget and sums over all processes in one reduce.

    Returns, on every process: the histograms, the rows counted per domain, and the tokens each process counted.
    """
    state = process_state()
    tensors: dict[str, torch.Tensor] = {}
    mine = 0
    for domain in domains:
        counter = TokenCounter(vocab_size, never_counted)
        files = split_files(root, domain, "train")
        rows = count_split(files, budget, counter, rank=state.process_index, world_size=state.num_processes)
        tensors[f"histogram/{domain}"] = counter.counts
        tensors[f"rows/{domain}"] = torch.tensor([rows], dtype=torch.int64)
        mine += counter.tokens
    share = torch.zeros(state.num_processes, dtype=torch.int64)
    share[state.process_index] = mine
    summed = sum_across_processes({**tensors, "tokens_per_process": share})
    histograms = {domain: summed[f"histogram/{domain}"] for domain in domains}
    counted = {domain: int(summed[f"rows/{domain}"]) for domain in domains}
    return histograms, counted, summed["tokens_per_process"].tolist()


def load_split(files: Sequence[Path], budget: Budget) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's budget as ``(input_ids, labels)``, both (rows x length) int64. Without a ``label`` column the labels
    are the ids shifted by one (and the inputs lose their last position)."""
    rows = budget.rows(files, f"{files[0].parent}")
    schema = pq.ParquetFile(files[0]).schema_arrow
    columns = [IDS_COLUMN] + ([LABELS_COLUMN] if LABELS_COLUMN in schema.names else [])
    parts: dict[str, list[np.ndarray]] = {column: [] for column in columns}
    for _, table in _row_batches(files, columns, rows):
        for column in columns:
            parts[column].append(_matrix(table.column(column), budget.sequence_length, files[0].parent))
    ids = torch.from_numpy(np.concatenate(parts[IDS_COLUMN]))
    if LABELS_COLUMN in parts:
        labels = torch.from_numpy(np.concatenate(parts[LABELS_COLUMN]))
        if labels.shape != ids.shape:
            raise ValueError(f"{files[0].parent}: the label rows do not have the shape of the input_ids rows.")
        return ids, labels
    return ids[:, :-1], ids[:, 1:]


def _row_batches(files: Sequence[Path], columns: list[str], rows: int) -> Iterator[tuple[int, pa.Table]]:
    """``(index of the first row, table)`` chunks of the first ``rows`` rows of ``files``, checked column by column."""
    start = 0
    for path in files:
        handle = pq.ParquetFile(path)
        for column in columns:
            _check_column(handle.schema_arrow, column, path)
        for batch in handle.iter_batches(batch_size=4096, columns=columns):
            if start >= rows:
                return
            table = pa.Table.from_batches([batch]).slice(0, rows - start)
            yield start, table
            start += table.num_rows


def _check_column(schema: pa.Schema, column: str, path: Path) -> None:
    if column not in schema.names:
        raise ValueError(
            f"{path.name} has no {column!r} column (columns: {', '.join(schema.names)}); the recipe reads "
            "pre-tokenised rows of token ids."
        )
    kind = schema.field(column).type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_integer(kind.value_type):
        raise ValueError(f"{path.name}: column {column!r} holds {kind}, not lists of integer token ids.")


def _flat_ids(column: pa.ChunkedArray, length: int) -> np.ndarray:
    """Every row's first ``length`` ids, concatenated, as int64."""
    cut = pc.list_slice(column, 0, length)
    return pc.list_flatten(cut).to_numpy(zero_copy_only=False).astype(np.int64)


def _matrix(column: pa.ChunkedArray, length: int, where: Path) -> np.ndarray:
    cut = pc.list_slice(column, 0, length)
    lengths = pc.list_value_length(cut).to_numpy(zero_copy_only=False)
    if lengths.size and (lengths != lengths[0]).any():
        raise ValueError(
            f"{where}: rows have {lengths.min()} to {lengths.max()} ids after the cut to --sequence-length {length}; "
            "evaluation needs rows of one length (the authors' fixed-length chunks)."
        )
    return _flat_ids(column, length).reshape(len(lengths), -1)
