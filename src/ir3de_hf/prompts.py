# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Prompts to route: checked, tokenized, and cut into length-bucketed chunks.

Routing pads a chunk of prompts to its longest one, and the per-token tensors (ids, scores for N experts, votes,
entropies) cost about 70 bytes per padded position at N = 6. Padding a whole batch to its longest prompt makes one
200 kB prompt among 2,000 short ones cost gigabytes; chunks of prompts of similar length, each at most
`CHUNK_POSITIONS` padded positions, keep the memory of routing bounded by the batch's own tokens.

>>> import torch
>>> batch = PromptBatch.from_inputs([[1, 2, 3], [4], [5, 6]], None, tokenizer=None)
>>> [(rows, ids.shape[1]) for rows, ids, _ in batch.chunks(positions=4)]
[([1, 2], 2), ([0], 3)]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .tokenization import checked_id_lists, encode_texts, is_blank, pad_token_ids

__all__ = ["CHUNK_POSITIONS", "PromptBatch"]

CHUNK_POSITIONS = 1 << 20  # padded positions per chunk: about 70 MB of per-token tensors at N = 6

Prompts = str | Sequence[str] | torch.Tensor | Sequence[Sequence[int]]
Chunk = tuple[list[int], torch.Tensor, torch.Tensor | None]  # the batch rows it holds, their ids, their mask


@dataclass
class PromptBatch:
    """A batch of prompts: unpadded id lists (``rows``), or the caller's own padded tensors (``ids``, ``mask``)."""

    rows: list[list[int]] | None = None
    ids: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @classmethod
    def from_inputs(
        cls, prompts: Prompts, attention_mask: Any, tokenizer: Any, vocab_size: int | None = None
    ) -> PromptBatch:
        """Text (a string or a list of strings: tokenized without special tokens), lists of token ids, or a tensor
        of ids (B x L or L) with an optional attention mask. Text loses the special tokens beyond the ``vocab_size``
        rows of the embedding table (see `encode_texts`); a blank text (only whitespace or zero-width characters,
        see `is_blank`) has no token, like an empty one. Any other type is a `TypeError`."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if isinstance(prompts, torch.Tensor):
            if prompts.ndim == 0:
                raise ValueError(
                    f"A 0-d tensor ({prompts.item()!r}) is one number, not a prompt: give token ids as a (length,) or "
                    "(batch, length) tensor, e.g. torch.tensor([[5]])."
                )
            ids = prompts[None] if prompts.ndim == 1 else prompts
            mask = torch.as_tensor(attention_mask) if attention_mask is not None else None
            if mask is not None and mask.ndim == 1:
                mask = mask[None]
            return cls(ids=ids, mask=mask)
        if not isinstance(prompts, Sequence) or isinstance(prompts, bytes | bytearray):
            hint = " (decode bytes to str first)" if isinstance(prompts, bytes | bytearray) else ""
            raise TypeError(
                "Prompts must be text (a string or a list of strings) or token ids (lists of ids or a tensor), got "
                f"{type(prompts).__name__}{hint}."
            )
        if not prompts:
            raise ValueError(
                "No prompts to route: give a string, a list of strings, lists of token ids or a tensor of ids."
            )
        texts = [isinstance(prompt, str) for prompt in prompts]
        if all(texts):
            if attention_mask is not None:
                raise ValueError("attention_mask= only goes with token ids, not with text.")
            if tokenizer is None:
                raise ValueError(
                    "This router has no tokenizer, which is needed to route text. Pass tokenizer= to "
                    "IR3DERouterModel.from_encoder(...), set router.tokenizer, or give token ids instead of text."
                )
            strings: list[str] = list(prompts)  # type: ignore[arg-type]
            rows = encode_texts(tokenizer, strings, vocab_size)
            return cls(rows=[[] if is_blank(text) else row for text, row in zip(strings, rows, strict=True)])
        if any(texts):
            first = texts.index(False)
            raise TypeError(f"Prompt {first} is a {type(prompts[first]).__name__} among strings; give only strings.")
        rows = checked_id_lists(prompts)
        if attention_mask is None:
            return cls(rows=rows)
        if len({len(row) for row in rows}) > 1:
            raise ValueError("With attention_mask=, the id lists must all have the same (padded) length.")
        return cls(ids=torch.as_tensor(rows, dtype=torch.long), mask=torch.as_tensor(attention_mask))

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.ids)  # type: ignore[arg-type]

    @property
    def longest(self) -> int:
        """Length of the padded (B x L) layout the per-token outputs use."""
        if self.rows is not None:
            return max([len(row) for row in self.rows] + [1])
        return int(self.ids.shape[-1])  # type: ignore[union-attr]

    @property
    def tokens(self) -> int:
        """The prompts' own tokens (without padding)."""
        if self.rows is not None:
            return sum(len(row) for row in self.rows)
        return int(self.mask.sum()) if self.mask is not None else self.ids.numel()  # type: ignore[union-attr]

    def chunks(self, positions: int = CHUNK_POSITIONS) -> Iterator[Chunk]:
        """``(row indices, ids, mask)`` per chunk of at most ``positions`` padded positions (or one prompt): id lists
        are grouped by length, so a chunk pads each prompt only up to similar ones; the caller's tensors keep their
        layout and are cut by rows."""
        if self.rows is None:
            assert self.ids is not None
            step = max(1, positions // max(self.longest, 1))
            for start in range(0, len(self.ids), step):
                indices = list(range(start, min(start + step, len(self.ids))))
                mask = self.mask[start : start + step] if self.mask is not None else None
                yield indices, self.ids[start : start + step], mask
            return
        order = sorted(range(len(self.rows)), key=lambda index: len(self.rows[index]))  # type: ignore[index]
        chunk: list[int] = []
        for index in order:
            width = max(len(self.rows[index]), 1)
            if chunk and (len(chunk) + 1) * width > positions:
                yield chunk, *pad_token_ids([self.rows[i] for i in chunk])
                chunk = []
            chunk.append(index)
        if chunk:
            yield chunk, *pad_token_ids([self.rows[i] for i in chunk])
