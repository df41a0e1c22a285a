# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Fitting experts at scale: stream their text, count token histograms, sum them over processes, solve once.

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
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from datasets import IterableDataset
from tqdm.auto import tqdm

from .configuration_ir3de import ExpertSpec
from .distributed import process_state, sum_across_processes
from .fit_checkpoint import ExpertProgress, FitCheckpoint, checkpoint_path
from .inputs import TokenCounter
from .text_sources import describe_source, open_text_source, shard_for_process
from .tokenization import encode_texts, vocabulary_fingerprint

if TYPE_CHECKING:
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
        checkpoint_dir: where each process checkpoints its partial counts; a fit finds and resumes its checkpoint.
        checkpoint_every: checkpoint after this many batches (and after each expert).
        progress: show a progress bar with tokens/s on the main process.
    """
    if batch_size < 1 or checkpoint_every < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError("batch_size, checkpoint_every and max_tokens must be >= 1.")
    if not sources:
        raise ValueError("No expert to fit: give at least one name -> text source.")
    state = process_state()
    rank, world = state.process_index, state.num_processes
    ignored = sorted({int(i) for i in ignored_token_ids})
    identity = {
        "experts": [[name, describe_source(source)] for name, source in sources.items()],
        "tokenizer": vocabulary_fingerprint(tokenizer),
        "vocab_size": vocab_size,
        "ignored_token_ids": ignored,
        "text_column": text_column,
        "split": split,
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "world_size": world,
    }
    path = checkpoint_path(checkpoint_dir, rank, world) if checkpoint_dir is not None else None
    saved = FitCheckpoint.load(path, identity) if path is not None else None
    checkpoint = saved or FitCheckpoint(
        identity, torch.zeros(len(sources), vocab_size, dtype=torch.int64), [ExpertProgress() for _ in sources]
    )
    seconds = dict.fromkeys(STAGES, 0.0)
    budget = None if max_tokens is None else max_tokens // world + int(rank < max_tokens % world)
    with _Encoder(tokenizer, num_proc) as encoder:
        for index, (name, source) in enumerate(sources.items()):
            entry = checkpoint.progress[index]
            if entry.done:
                continue
            dataset = shard_for_process(open_text_source(source, text_column=text_column, split=split), rank, world)
            if entry.position is not None:
                dataset.load_state_dict(entry.position)
            bar = tqdm(
                desc=f"{name} ({rank + 1}/{world})" if world > 1 else name,
                total=budget,
                initial=entry.tokens,
                unit="tok",
                unit_scale=True,
                disable=not (progress and state.is_main_process),
            )
            batches = _batches(dataset, name, text_column, batch_size, seconds)
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
    totals = sum_across_processes(
        {
            "counts": checkpoint.counts,
            "texts": torch.tensor([entry.texts for entry in checkpoint.progress], dtype=torch.int64),
            "per_process": torch.nn.functional.one_hot(torch.tensor(rank), world) * int(checkpoint.counts.sum()),
        }
    )
    seconds["reduce"] += time.perf_counter() - start
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
    ``revision``, ``description``, ``base_model``); ``options`` go to [`count_experts`].
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
    for name, histogram in result.histograms.items():
        fields = dict((expert_fields or {}).get(name, {}))
        if name in router.expert_names:
            router.update_expert(name, histogram=histogram, **fields)
        else:
            router.add_expert(name, histogram=histogram, **fields)
    start = time.perf_counter()
    if process_state().is_main_process:
        router.ridge_solution()
    result.seconds["solve"] += time.perf_counter() - start
    return result


def _batches(
    dataset: IterableDataset, name: str, text_column: str, batch_size: int, seconds: dict[str, float]
) -> Iterator[tuple[list[str], dict[str, Any]]]:
    """Batches of texts with the stream position after each batch (what a checkpoint stores)."""
    iterator = dataset.iter(batch_size=batch_size)
    while True:
        start = time.perf_counter()
        batch = next(iterator, None)
        if batch is None:
            return
        if text_column not in batch:
            raise ValueError(f"Expert {name!r}: the data has no column {text_column!r} (columns: {', '.join(batch)}).")
        texts = batch[text_column]
        if not all(isinstance(text, str) for text in texts):
            raise ValueError(f"Expert {name!r}: column {text_column!r} holds values that are not strings.")
        position = dataset.state_dict()
        seconds["read"] += time.perf_counter() - start
        yield texts, position


class _Encoder:
    """Tokenizes batches in this process, or in ``num_proc`` worker processes with a bounded look-ahead (results come
    back in order, so the position that goes with each batch stays right)."""

    def __init__(self, tokenizer: Any, num_proc: int | None) -> None:
        self.tokenizer = tokenizer
        self.pool = None
        self.window = 0
        if num_proc is not None and num_proc > 1:
            # fork: a worker starts in milliseconds with the tokenizer already in memory (spawn re-imports
            # transformers, ~10 s per worker); tokenizers turns its thread pool off in forked children: no deadlock.
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.pool = ProcessPoolExecutor(num_proc, context, initializer=_init_worker, initargs=(tokenizer,))
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
                ids = _flat_ids(self.tokenizer, texts)
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


def _flat_ids(tokenizer: Any, texts: list[str]) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(encode_texts(tokenizer, texts)), dtype=np.int64)


_worker_tokenizer: Any = None


def _init_worker(tokenizer: Any) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _encode_in_worker(texts: list[str]) -> np.ndarray:
    return _flat_ids(_worker_tokenizer, texts)


def _save(checkpoint: FitCheckpoint, path: Path, seconds: dict[str, float]) -> None:
    start = time.perf_counter()
    checkpoint.save(path)
    seconds["checkpoint"] += time.perf_counter() - start
