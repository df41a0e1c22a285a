# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Text to token ids for routing and counting, and the vocabulary fingerprint that ties statistics to a tokenizer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["encode_texts", "pad_token_ids", "vocabulary_fingerprint"]


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
