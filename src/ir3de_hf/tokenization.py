# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Text to token ids for routing and counting, and the vocabulary fingerprint that ties statistics to a tokenizer."""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["checked_id_lists", "encode_texts", "pad_token_ids", "vocabulary_fingerprint"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def vocabulary_fingerprint(tokenizer: Any) -> str:
    """A sha256 of the tokenizer's (token, id) pairs: two tokenizers with the same fingerprint give the same ids, so
    histograms counted with one are valid for the other."""
    pairs = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    return "sha256:" + hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of raw text, without special tokens: a BOS or chat marker says nothing about the domain.

    Text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which tokenizers refuse with an obscure
    `TypeError`) is refused with the index of the text and the position of the bad character."""
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise TypeError("texts must be a list of strings.")
    for index, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"Text {index} is not valid Unicode: {text[error.start]!r} at position {error.start} is a lone "
                "surrogate (often text decoded with errors='surrogateescape'). Decode the source as UTF-8 first."
            ) from None
    return list(tokenizer(list(texts), add_special_tokens=False)["input_ids"])


def checked_id_lists(sequences: Sequence[Any]) -> list[list[int]]:
    """Lists of token ids after checking that every id is an integer (not a float, bool or string, which
    ``torch.as_tensor`` would truncate or refuse obscurely) that fits in int64; the vocabulary range is checked later.
    """
    rows = []
    for row_index, sequence in enumerate(sequences):
        if isinstance(sequence, str | bytes) or not isinstance(sequence, Sequence | torch.Tensor):
            raise TypeError(
                f"Prompt {row_index} is a {type(sequence).__name__}; token ids are given as a list of integer lists."
            )
        row = sequence.tolist() if isinstance(sequence, torch.Tensor) else list(sequence)
        for position, token in enumerate(row):
            if isinstance(token, bool) or not isinstance(token, numbers.Integral):
                hint = " A list of lists of strings is not a batch: give one string per prompt." * isinstance(
                    token, str
                )
                raise TypeError(
                    f"Prompt {row_index}, position {position}: token ids must be integers, got {token!r} "
                    f"({type(token).__name__}).{hint}"
                )
            if not _INT64_MIN <= int(token) <= _INT64_MAX:
                raise ValueError(f"Prompt {row_index}, position {position}: token id {token} does not fit in int64.")
        rows.append([int(token) for token in row])
    return rows


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
