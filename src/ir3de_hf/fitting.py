# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Fitting experts at scale: stream their text, count token histograms, sum them over processes, solve once.

The one fit of the package: `fit_experts` (all experts or none, a progress bar, checkpoints when asked) is what
``ir3de fit`` and ``ir3de add-expert`` run, and its count (`count_experts`) is what ``add_expert(dataset=...)`` runs
on one process; token ids become counts in `statistics.TokenCounter` only.

IR3DE's statistics are token histograms (see `statistics.py`), so a fit is a pass of batched tokenisation and
``bincount`` over each expert's text, and a fit split over P processes is exact: each process counts its shard of
every stream, one ``all_reduce`` sums the int64 histograms, and the result equals the single-process histograms
bit for bit. Run the same code plainly or under ``torchrun`` / ``accelerate launch``:

>>> from ir3de_hf.fitting import fit_experts
>>> result = fit_experts(router, {"code": "data/code/", "legal": "legal.parquet"})  # doctest: +SKIP
>>> result.tokens, result.tokens_per_second  # doctest: +SKIP
({'code': 1204511, 'legal': 880210}, 251000.0)

With ``checkpoint_dir`` every process saves its partial histograms and stream positions atomically every
``checkpoint_every`` batches; a fit started again with the same arguments continues where the last checkpoint left
off and counts nothing twice.

A checkpoint belongs to its data: it records each source's identity (`text_sources.source_identity`: every file's
name, size, modification time and a hash of its ends; a hash of a list's texts; a Dataset's length and end rows; a Hub
dataset's id and split) with the fit's arguments, and a rerun whose data or arguments differ is refused with a
`ValueError` that names the expert and the file added, removed or changed, rather than resumed on counts of other
data. A fit that ends marks its checkpoints finished instead of deleting them (they record what was counted, and a
fit on several processes would race to delete them); a finished checkpoint is never resumed, so the next fit in the
same directory counts afresh.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .configuration_ir3de import ExpertSpec
from .fit_checkpoint import FitCheckpoint, StreamProgress, checkpoint_path
from .statistics import TokenCounter
from .text_sources import (
    describe_change,
    invalid_text,
    open_text_source,
    read_errors,
    shard_for_process,
    source_identity,
    unreadable,
)
from .tokenization import encode_texts, vocabulary_fingerprint

if TYPE_CHECKING:
    from datasets import IterableDataset

    from .modeling_ir3de import IR3DERouterModel

__all__ = ["FitResult", "count_experts", "fit_experts"]

STAGES = ("read", "tokenize", "count", "checkpoint", "reduce", "solve")


@dataclass
class FitResult:
    """What a fit counted (summed over all processes) and where the main process spent its time."""

    histograms: dict[str, torch.Tensor]
    texts: dict[str, int]
    tokens: dict[str, int]
    tokens_per_process: list[int]
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @property
    def num_processes(self) -> int:
        return len(self.tokens_per_process)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def tokens_per_second(self) -> float:
        """Tokens counted by all processes per second of fit time (reading to solving)."""
        return sum(self.tokens.values()) / max(self.total_seconds, 1e-9)


def count_experts(
    sources: Mapping[str, Any],
    *,
    tokenizer: Any,
    vocab_size: int,
    ignored_token_ids: Iterable[int] = (),
    text_column: str = "text",
    split: str = "train",
    batch_size: int = 1024,
    max_tokens: int | None = None,
    num_proc: int | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    progress: bool = True,
    distributed: bool = True,
) -> FitResult:
    """Counts the token histogram of each expert's text; under torch.distributed, each process counts its shard and
    every process receives the sums.

    Args:
        sources: expert name -> text: a path (directory of ``.txt``, ``.parquet`` / ``.jsonl`` / ``.txt`` file, glob),
            a dataset id, a `datasets.Dataset` / `IterableDataset` or a list of strings (see `open_text_source`).
        tokenizer: the router's tokenizer (text is tokenized without special tokens, as when routing).
        vocab_size: length of the histograms (rows of the router's embedding table).
        ignored_token_ids: ids never counted (padding, special tokens).
        text_column, split: the column holding the text; the split of a Hub dataset.
        batch_size: texts tokenized at once.
        max_tokens: token budget per expert (counted tokens; split evenly over processes). None: all the text.
        num_proc: tokenizer worker processes per fitting process (None: tokenize in the process; a fast tokenizer
            already uses several threads on long batches).
        checkpoint_dir: where each process checkpoints its partial counts; a fit resumes an unfinished checkpoint of
            the same data and arguments, refuses one of other data or arguments, and marks its own finished at the end.
        checkpoint_every: checkpoint after this many batches (and after each expert).
        progress: show a progress bar with tokens/s on the main process.
        distributed: False counts all the text in this process, whatever torch.distributed says (what
            ``add_expert(dataset=...)`` does: it may run on one process of several).

    Raises:
        FileNotFoundError: a path that is not there, or a folder without text files.
        TypeError: a source of no kind a fit reads.
        ValueError: bad data, named by expert and file (not UTF-8, a broken JSON line, no text column, values that
            are not strings, a lone surrogate), an option below 1, or a checkpoint of another fit.
    """
    _check_counts(batch_size=batch_size, checkpoint_every=checkpoint_every, max_tokens=max_tokens)
    if not sources:
        raise ValueError("No expert to fit: give at least one name -> text source.")
    rank, world, main = _process(distributed)
    ignored = sorted({int(i) for i in ignored_token_ids})
    identity: dict[str, Any] = {"experts": _source_identities(sources, text_column, split)}  # checks the sources
    path = checkpoint_path(checkpoint_dir, rank, world) if checkpoint_dir is not None else None
    if path is not None:
        identity.update(
            tokenizer=vocabulary_fingerprint(tokenizer),
            vocab_size=vocab_size,
            ignored_token_ids=ignored,
            text_column=text_column,
            split=split,
            batch_size=batch_size,
            max_tokens=max_tokens,
            world_size=world,
        )
    saved = _resumable(path, identity) if path is not None else None
    checkpoint = saved or FitCheckpoint(
        identity, torch.zeros(len(sources), vocab_size, dtype=torch.int64), [StreamProgress() for _ in sources]
    )
    streams = _open_pending(sources, checkpoint.progress, text_column, split, rank, world)
    seconds = dict.fromkeys(STAGES, 0.0)
    budget = None if max_tokens is None else max_tokens // world + int(rank < max_tokens % world)
    with _Encoder(tokenizer, num_proc, vocab_size) as encoder:
        for index, (name, source) in enumerate(sources.items()):
            entry = checkpoint.progress[index]
            if entry.done:
                continue
            dataset = streams[index]
            if entry.position is not None:
                dataset.load_state_dict(entry.position)
            bar = tqdm(
                desc=f"Counting tokens of {name!r}" + (f" ({rank + 1}/{world})" if world > 1 else ""),
                total=budget,
                initial=entry.tokens,
                unit="tok",
                unit_scale=True,
                disable=not (progress and main),
            )
            label = f"Expert {name!r}" + (f" (in the share of process {rank})" if world > 1 else "")
            batches = _batches(dataset, source, label, text_column, batch_size, entry.texts, seconds)
            counter = TokenCounter(vocab_size, ignored, budget, counts=checkpoint.counts[index])  # counts in place
            with bar:
                for done, (count, flat_ids, position) in enumerate(encoder.encode(batches, seconds), start=1):
                    start = time.perf_counter()
                    counted = counter.add(torch.from_numpy(flat_ids))
                    entry.texts += count
                    entry.tokens += counted
                    entry.position = position
                    seconds["count"] += time.perf_counter() - start
                    bar.update(counted)
                    if counter.full:
                        break
                    if path is not None and done % checkpoint_every == 0:
                        _save(checkpoint, path, seconds)
            entry.done = True
            if path is not None:
                _save(checkpoint, path, seconds)
    start = time.perf_counter()
    mine = {
        "counts": checkpoint.counts,
        "texts": torch.tensor([entry.texts for entry in checkpoint.progress], dtype=torch.int64),
        "per_process": torch.nn.functional.one_hot(torch.tensor(rank), world) * int(checkpoint.counts.sum()),
    }
    totals = _summed(mine) if world > 1 else mine
    seconds["reduce"] += time.perf_counter() - start
    if path is not None:  # every process has summed: the next fit in this directory counts afresh
        checkpoint.finished = True
        _save(checkpoint, path, seconds)
    names = list(sources)
    return FitResult(
        histograms={name: totals["counts"][i] for i, name in enumerate(names)},
        texts={name: int(totals["texts"][i]) for i, name in enumerate(names)},
        tokens={name: int(totals["counts"][i].sum()) for i, name in enumerate(names)},
        tokens_per_process=[int(count) for count in totals["per_process"]],
        seconds=seconds,
    )


def fit_experts(
    router: IR3DERouterModel,
    sources: Mapping[str, Any],
    *,
    replace: bool = False,
    expert_fields: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> FitResult:
    """Counts each expert's text with the router's tokenizer and adds the experts to ``router`` (``replace=True``:
    replaces the statistics of experts it already has), then solves the head on the main process.

    Every process must call it (under torch.distributed) with the same router and sources; afterwards every
    process's router holds the summed histograms. ``expert_fields`` gives registry fields per expert (``source``,
    ``revision``, ``description``, ``base_model``); ``options`` go to [`count_experts`]. On any error the router is
    left as it was: the experts are added all or none.
    """
    if router.tokenizer is None:
        raise ValueError("The router has no tokenizer, which a fit from text needs; pass tokenizer= to from_encoder.")
    existing = [name for name in sources if name in router.expert_names]
    if existing and not replace:
        raise ValueError(f"The router already has expert(s) {existing}; pass replace=True to refit them.")
    for name in sources:
        ExpertSpec(name, **(expert_fields or {}).get(name, {}))  # a bad name fails before the counting, not after
    result = count_experts(
        sources,
        tokenizer=router.tokenizer,
        vocab_size=router.config.vocab_size,
        ignored_token_ids=router.config.never_counted_ids,
        **options,
    )
    _add_all(router, result.histograms, expert_fields or {})
    start = time.perf_counter()
    if _process(distributed=True)[2]:
        router.ridge_solution()
    result.seconds["solve"] += time.perf_counter() - start
    return result


def _process(distributed: bool) -> tuple[int, int, bool]:
    """``(rank, world size, is main)`` of this process; ``(0, 1, True)`` when the count is not ``distributed``."""
    if not distributed:
        return 0, 1, True
    from .distributed import process_state  # accelerate: only a distributed count needs it

    state = process_state()
    return state.process_index, state.num_processes, state.is_main_process


def _summed(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from .distributed import sum_across_processes

    return sum_across_processes(tensors)


def _add_all(
    router: IR3DERouterModel, histograms: Mapping[str, torch.Tensor], expert_fields: Mapping[str, Mapping[str, Any]]
) -> None:
    """Adds or updates every counted expert, all or nothing: the edits are made on a copy first, so one that fails
    (an expert without a usable token, a model ``source`` that is not there) leaves ``router`` as it was."""
    for target in (router.copy(), router):
        for name, histogram in histograms.items():
            fields = dict(expert_fields.get(name, {}))
            if name in target.expert_names:
                target.update_expert(name, histogram=histogram, **fields)
            else:
                target.add_expert(name, histogram=histogram, **fields)


def _check_counts(**options: int | None) -> None:
    """Refuses a batch size, checkpoint interval or token budget below 1 (None: no budget), naming the option."""
    for option, value in options.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{option} must be an integer >= 1, got {value!r}.")


@contextmanager
def _about_expert(name: str) -> Iterator[None]:
    """Prefixes the message of an error about one expert's source with the expert's name (a list or a Dataset has no
    path that would tell which expert it is)."""
    try:
        yield
    except (FileNotFoundError, TypeError, ValueError) as error:
        kind = next(kind for kind in (FileNotFoundError, TypeError, ValueError) if isinstance(error, kind))
        raise kind(f"Expert {name!r}: {error}") from error


def _source_identities(sources: Mapping[str, Any], text_column: str, split: str) -> list[list[Any]]:
    """``[name, source_identity]`` per expert; a missing path or a bad text fails here, before any counting."""
    identities = []
    for name, source in sources.items():
        with _about_expert(name):
            identities.append([name, source_identity(source, text_column=text_column, split=split)])
    return identities


def _resumable(path: Path, identity: dict[str, Any]) -> FitCheckpoint | None:
    """The unfinished checkpoint of this very fit at ``path``, or None when there is none (or its fit finished). One
    of other data or arguments is refused, naming what differs: resuming it would mix the counts of two fits."""
    saved = FitCheckpoint.load(path)
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as the saved identity was read back from JSON
    if saved is None or saved.identity == identity:
        return saved
    changes = "; ".join(_identity_changes(saved.identity, identity))
    raise ValueError(
        f"The checkpoint in {path.parent} belongs to a different fit ({changes}). Delete {path.parent} to count "
        "afresh, or pass another checkpoint directory (CLI: --checkpoint-dir)."
    )


def _identity_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two fit identities, expert by expert for the data, in words."""
    changes = []
    for key in sorted(saved.keys() | current.keys()):
        before, after = saved.get(key), current.get(key)
        if before == after:
            continue
        if key == "experts":  # both have it: every identity does
            changes += _expert_changes(saved[key], current[key])
        else:
            changes.append(f"{key}: {before!r} -> {after!r}")
    return changes


def _expert_changes(before: list[list[Any]], after: list[list[Any]]) -> list[str]:
    names = [name for name, _ in before]
    if names != [name for name, _ in after]:
        return [f"experts: {names} -> {[name for name, _ in after]}"]
    return [
        f"the data of expert {name!r} changed: {describe_change(old, new)}"
        for (name, old), (_, new) in zip(before, after, strict=True)
        if old != new
    ]


def _open_pending(
    sources: Mapping[str, Any], progress: list[StreamProgress], text_column: str, split: str, rank: int, world: int
) -> dict[int, IterableDataset]:
    """This process's stream of every expert still to count, by expert index. All are opened before any counting, so
    that a missing column or an unreadable parquet file fails in seconds, not after hours of counting the others."""
    streams = {}
    for index, (name, source) in enumerate(sources.items()):
        if not progress[index].done:
            with _about_expert(name):
                dataset = open_text_source(source, text_column=text_column, split=split)
            streams[index] = shard_for_process(dataset, rank, world)
    return streams


def _batches(
    dataset: IterableDataset,
    source: Any,
    label: str,
    text_column: str,
    batch_size: int,
    first_index: int,
    seconds: dict[str, float],
) -> Iterator[tuple[list[str], dict[str, Any]]]:
    """Batches of texts with the stream position after each batch (what a checkpoint stores).

    A file that `datasets` fails to read is named (`unreadable`), and a text that is not valid Unicode by its index in
    the stream (``first_index``: texts counted before a resume); ``label`` names the expert in these messages.
    """
    iterator = dataset.iter(batch_size=batch_size)
    index = first_index
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator, None)
        except read_errors() as error:
            raise ValueError(f"{label}: {unreadable(source, error)}") from error
        if batch is None:
            return
        if text_column not in batch:
            raise ValueError(f"{label}: the data has no column {text_column!r} (columns: {', '.join(batch)}).")
        texts = batch[text_column]
        if not all(isinstance(text, str) for text in texts):
            raise ValueError(f"{label}: column {text_column!r} holds values that are not strings.")
        problem = invalid_text(texts, index)
        if problem is not None:
            raise ValueError(f"{label}: {problem}")
        index += len(texts)
        position = dataset.state_dict()
        seconds["read"] += time.perf_counter() - start
        yield texts, position


class _Encoder:
    """Tokenizes batches in this process, or in ``num_proc`` worker processes with a bounded look-ahead (results come
    back in order, so the position that goes with each batch stays right)."""

    def __init__(self, tokenizer: Any, num_proc: int | None, vocab_size: int) -> None:
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self.pool = None
        self.window = 0
        if num_proc is not None and num_proc > 1:
            # fork: a worker starts in milliseconds with the tokenizer already in memory (spawn re-imports
            # transformers, ~10 s per worker); tokenizers turns its thread pool off in forked children: no deadlock.
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.pool = ProcessPoolExecutor(
                num_proc, context, initializer=_init_worker, initargs=(tokenizer, vocab_size)
            )
            self.window = 2 * num_proc

    def __enter__(self) -> _Encoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def encode(
        self, batches: Iterator[tuple[list[str], dict[str, Any]]], seconds: dict[str, float]
    ) -> Iterator[tuple[int, np.ndarray, dict[str, Any]]]:
        """Yields ``(number of texts, flat token ids, position)`` per batch, in order."""
        if self.pool is None:
            for texts, position in batches:
                start = time.perf_counter()
                ids = _flat_ids(self.tokenizer, texts, self.vocab_size)
                seconds["tokenize"] += time.perf_counter() - start
                yield len(texts), ids, position
            return
        pending: deque[tuple[int, Future[np.ndarray], dict[str, Any]]] = deque()
        for item in itertools.chain(batches, [None]):
            if item is not None:
                texts, position = item
                pending.append((len(texts), self.pool.submit(_encode_in_worker, texts), position))
            while pending and (len(pending) >= self.window or item is None):
                count, future, at = pending.popleft()
                start = time.perf_counter()
                ids = future.result()
                seconds["tokenize"] += time.perf_counter() - start
                yield count, ids, at


def _flat_ids(tokenizer: Any, texts: list[str], vocab_size: int) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(encode_texts(tokenizer, texts, vocab_size)), dtype=np.int64)


_worker_tokenizer: Any = None
_worker_vocab_size = 0


def _init_worker(tokenizer: Any, vocab_size: int) -> None:
    global _worker_tokenizer, _worker_vocab_size
    _worker_tokenizer, _worker_vocab_size = tokenizer, vocab_size


def _encode_in_worker(texts: list[str]) -> np.ndarray:
    return _flat_ids(_worker_tokenizer, texts, _worker_vocab_size)


def _save(checkpoint: FitCheckpoint, path: Path, seconds: dict[str, float]) -> None:
    start = time.perf_counter()
    checkpoint.save(path)
    seconds["checkpoint"] += time.perf_counter() - start
