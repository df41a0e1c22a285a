# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Text to token ids for routing and counting, and the vocabulary fingerprint that ties statistics to a tokenizer."""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "beyond_table_special_ids",
    "checked_id_lists",
    "encode_texts",
    "is_blank",
    "pad_token_ids",
    "vocabulary_fingerprint",
]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Characters that show nothing and are not whitespace to `str.isspace`: zero-width space, non-joiner and joiner, word
# joiner, Mongolian vowel separator and the byte-order mark (zero-width no-break space).
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\u180e\ufeff"))


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: empty, or only whitespace and zero-width characters. A byte-level tokenizer
    turns ``"   "`` into real tokens, which vote like words; such a prompt has no evidence, like ``""``."""
    return not text.translate(_ZERO_WIDTH).strip()


def vocabulary_fingerprint(tokenizer: Any) -> str:
    """A sha256 of the tokenizer's (token, id) pairs: two tokenizers with the same fingerprint give the same ids, so
    histograms counted with one are valid for the other."""
    pairs = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    return "sha256:" + hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()


def beyond_table_special_ids(tokenizer: Any, vocab_size: int) -> set[int]:
    """The tokenizer's ids at or beyond the ``vocab_size`` rows of the embedding table, which must all be special
    tokens: they are never counted and never vote (the Llama-3 tokenizer declares 128,256 ids while the M2D2 experts'
    table has 128,002 rows, the rest being reserved special tokens). A non-special id there is a `ValueError`."""
    beyond = {i for i in tokenizer.get_vocab().values() if i >= vocab_size}
    if not beyond:
        return beyond
    special = set(tokenizer.all_special_ids)
    special.update(i for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if token.special)
    plain = sorted(beyond - special)
    if plain:
        tokens = tokenizer.convert_ids_to_tokens(plain[:3])
        raise ValueError(
            f"The tokenizer has {len(plain)} non-special token id(s) at or beyond the encoder's {vocab_size} "
            f"embedding rows (e.g. {plain[0]} = {tokens[0]!r}): the tokenizer and the encoder come from different "
            "models. Pass the encoder's own tokenizer."
        )
    return beyond


def encode_texts(tokenizer: Any, texts: Sequence[str], vocab_size: int | None = None) -> list[list[int]]:
    """Token ids of raw text, without special tokens: a BOS or chat marker says nothing about the domain.

    With ``vocab_size`` (the rows of the router's embedding table), special tokens written in the text whose ids lie
    beyond the table are dropped (see `beyond_table_special_ids`). Text that is not valid Unicode (a lone surrogate
    such as ``"\\ud800"``, which tokenizers refuse with an obscure `TypeError`) is refused with the index of the text
    and the position of the bad character."""
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
    rows = list(tokenizer(list(texts), add_special_tokens=False)["input_ids"])
    if vocab_size is None or max((max(row, default=-1) for row in rows), default=-1) < vocab_size:
        return rows
    beyond = beyond_table_special_ids(tokenizer, vocab_size)
    return [[token for token in row if token not in beyond] for row in rows]


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
