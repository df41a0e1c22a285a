# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Text to token ids for routing and counting, and the vocabulary fingerprint that ties statistics to a tokenizer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .statistics import token_histogram

__all__ = ["count_text_tokens", "encode_texts", "pad_token_ids", "vocabulary_fingerprint"]


def vocabulary_fingerprint(tokenizer: Any) -> str:
    """A sha256 of the tokenizer's (token, id) pairs: two tokenizers with the same fingerprint give the same ids, so
    histograms counted with one are valid for the other."""
    pairs = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    return "sha256:" + hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of raw text, without special tokens: a BOS or chat marker says nothing about the domain."""
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise TypeError("texts must be a list of strings.")
    return list(tokenizer(list(texts), add_special_tokens=False)["input_ids"])


def pad_token_ids(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads id lists into ``(input_ids, attention_mask)``; the pad value is irrelevant since it is masked."""
    length = max([len(sequence) for sequence in sequences] + [1])
    input_ids = torch.zeros(len(sequences), length, dtype=torch.long)
    attention_mask = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if len(sequence):
            input_ids[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
            attention_mask[row, : len(sequence)] = 1
    return input_ids, attention_mask


def count_text_tokens(
    tokenizer: Any,
    text_batches: Iterable[Sequence[str]],
    *,
    vocab_size: int,
    ignored_token_ids: Iterable[int] = (),
    total: int | None = None,
    desc: str = "Counting tokens",
) -> torch.Tensor:
    """Histogram of the token ids of every text in ``text_batches`` (an iterable of lists of strings)."""
    ignored = list(ignored_token_ids)
    counts = torch.zeros(vocab_size, dtype=torch.int64)
    with tqdm(total=total, desc=desc, unit=" texts", disable=total is not None and total < 2048) as progress:
        for batch in text_batches:
            ids = [token for sequence in encode_texts(tokenizer, batch) for token in sequence]
            counts += token_histogram(
                torch.as_tensor(ids, dtype=torch.long), vocab_size=vocab_size, ignored_token_ids=ignored
            )
            progress.update(len(batch))
    return counts
