# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The one counting path: every way of giving an expert's data becomes checked statistics here.

Texts, a `datasets.Dataset`, token-id tensors, a precomputed histogram or imported moments ``(A_n, b_n)`` all end
as [`CheckedStatistics`]: a token histogram (int64, V) with the never-counted ids at zero, or checked float64 moments.
Token ids become counts in one place, `statistics.TokenCounter`; a dataset is counted by the streaming fit's count
(`fitting.count_experts`), so ``add_expert(dataset=...)``, `fit_experts` and ``ir3de fit`` check and count text alike.

>>> import torch
>>> from ir3de_hf import IR3DERouterModel
>>> router = IR3DERouterModel.from_encoder(torch.nn.Embedding(5, 2))
>>> expert_data("e", router.config, input_ids=torch.tensor([[0, 1, 1, 4]])).histogram.tolist()
[1, 2, 0, 0, 1]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import torch
from tqdm.auto import tqdm

from .configuration_ir3de import IR3DEConfig
from .statistics import TokenCounter, token_histogram
from .tokenization import checked_id_lists, encode_texts, pad_token_ids

__all__ = [
    "DATA_ARGUMENTS",
    "CheckedStatistics",
    "ExpertInputs",
    "as_id_tensors",
    "expert_data",
]

_TEXT_BATCH = 1024


class ExpertInputs(TypedDict, total=False):
    """Keyword arguments of `IR3DERouterModel.add_expert` / `update_expert`.

    Give exactly one of ``texts`` (strings, tokenized with the router's tokenizer), ``input_ids`` (with an optional
    ``attention_mask``; masked positions are not counted), ``dataset`` (a `datasets.Dataset` or `IterableDataset`
    with a ``text_column``; ``show_progress_bar`` shows a tqdm bar of the count, by default for 2,048 texts or more
    and for streams of unknown length), ``histogram`` (precomputed token counts, a length-V vector) or ``moments``
    (``(A_n, b_n)``, shapes (d+1, d+1) and (d+1,), computed with this router's encoder; such an expert can be
    removed or replaced but not re-weighted by token). ``source``/``revision`` say where the expert model lives (Hub
    id or local path), ``description`` what it is for, and ``base_model`` marks a PEFT adapter.
    ``includes_padding`` (moments only) records that the moments counted padding and BOS/EOS rows, as IR3DE-AXL
    statistics do. ``None`` means not given.
    """

    texts: str | Sequence[str] | None
    input_ids: torch.Tensor | Sequence[Sequence[int]] | None
    attention_mask: torch.Tensor | Sequence[Sequence[int]] | None
    dataset: Any
    text_column: str
    show_progress_bar: bool | None
    histogram: torch.Tensor | None
    moments: tuple[torch.Tensor, torch.Tensor] | None
    source: str | os.PathLike[str] | None
    revision: str | None
    description: str | None
    base_model: str | os.PathLike[str] | None
    includes_padding: bool | None


DATA_ARGUMENTS = (
    "texts",
    "input_ids",
    "attention_mask",
    "dataset",
    "text_column",
    "show_progress_bar",
    "histogram",
    "moments",
)
PROGRESS_TEXTS = 2048  # below this many texts a count takes about a second: no progress bar by default


@dataclass(frozen=True)
class CheckedStatistics:
    """An expert's checked statistics: exactly one of ``histogram`` (int64, V) and ``moments`` (float64)."""

    histogram: torch.Tensor | None = None
    moments: tuple[torch.Tensor, torch.Tensor] | None = None


def expert_data(
    name: str,
    config: IR3DEConfig,
    *,
    tokenizer: Any = None,
    texts: str | Sequence[str] | None = None,
    input_ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    attention_mask: torch.Tensor | Sequence[Sequence[int]] | None = None,
    dataset: Any = None,
    text_column: str = "text",
    show_progress_bar: bool | None = None,
    histogram: torch.Tensor | None = None,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> CheckedStatistics:
    """Checks and counts what was given for expert ``name`` (see [`ExpertInputs`]); every problem is a
    `ValueError` or `TypeError` naming the expert. ``config`` gives the vocabulary, width and never-counted ids."""
    vocab_size, never_counted = config.vocab_size, config.never_counted_ids
    given = {
        "texts=": texts,
        "input_ids=": input_ids,
        "dataset=": dataset,
        "histogram=": histogram,
        "moments=": moments,
    }
    named = [label for label, value in given.items() if value is not None]
    if len(named) != 1:
        raise ValueError(
            f"Expert {name!r}: give exactly one of texts=, input_ids=, dataset= or histogram= (got "
            f"{', '.join(named) or 'none'}); imported (A_n, b_n) statistics go in moments= instead."
        )
    if attention_mask is not None and input_ids is None:
        raise ValueError(f"Expert {name!r}: attention_mask= only goes with input_ids=.")
    if moments is not None:
        return CheckedStatistics(moments=_checked_moments(name, moments, config.hidden_size))
    if histogram is not None:
        counts = checked_histogram(histogram, vocab_size).clone()
        counts[list(never_counted)] = 0
    elif input_ids is not None:
        ids, mask = as_id_tensors(input_ids, attention_mask)
        counts = token_histogram(ids, mask, vocab_size=vocab_size, ignored_token_ids=never_counted)
    else:
        if tokenizer is None:
            raise ValueError(
                f"Expert {name!r}: this router has no tokenizer, which is needed to count text. Pass tokenizer= to "
                "IR3DERouterModel.from_encoder(...), set router.tokenizer, or give token ids instead of text."
            )
        counts = (
            _count_texts(name, texts, tokenizer, config, show_progress_bar)
            if texts is not None
            else _count_dataset(name, dataset, tokenizer, config, text_column, show_progress_bar)
        )
    if int(counts.sum()) == 0:
        raise ValueError(
            f"Expert {name!r} has no usable token (empty text, all padding or only ignored special tokens)."
        )
    return CheckedStatistics(histogram=counts)


def checked_histogram(histogram: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``histogram`` as int64 after checking it is a length-V vector of non-negative integer counts."""
    counts = torch.as_tensor(histogram)
    if counts.ndim != 1 or counts.shape[0] != vocab_size:
        raise ValueError(
            f"A histogram must be a vector of {vocab_size} counts (the router's vocabulary), got shape "
            f"{tuple(counts.shape)}: it was counted with a different tokenizer."
        )
    if counts.dtype.is_floating_point or counts.dtype == torch.bool or bool((counts < 0).any()):
        raise ValueError("A histogram must hold non-negative integer token counts.")
    return counts.to(torch.int64)


def as_id_tensors(
    input_ids: torch.Tensor | Sequence[Sequence[int]], attention_mask: torch.Tensor | Sequence[Sequence[int]] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids as a tensor, or as lists of ids (then right-padded with a mask) -> ``(input_ids, attention_mask)``."""
    if isinstance(input_ids, torch.Tensor):
        ids = input_ids
    elif isinstance(input_ids, Sequence) and not isinstance(input_ids, str):
        rows = checked_id_lists(input_ids)
        if attention_mask is not None:
            ids = torch.as_tensor(rows)
        else:
            ids, attention_mask = pad_token_ids(rows)
    else:
        raise TypeError("Expected text (a string or a list of strings) or token ids (a tensor or a list of id lists).")
    mask = torch.as_tensor(attention_mask) if attention_mask is not None else None
    return ids, mask


def _checked_moments(
    name: str, moments: tuple[torch.Tensor, torch.Tensor], hidden_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A_n, b_n)`` as float64 after checking what the math guarantees: shapes (d+1, d+1) and (d+1,), finite, ``A_n``
    symmetric, and a positive token count (``A_n[d, d] == b_n[d]``, both the number of tokens)."""
    if not isinstance(moments, tuple | list) or len(moments) != 2:
        raise TypeError(f"Expert {name!r}: moments= must be a pair (A_n, b_n) of tensors.")
    a, b = (torch.as_tensor(value).detach().to(torch.float64).cpu() for value in moments)
    width = hidden_size + 1
    if a.shape != (width, width) or b.shape != (width,):
        raise ValueError(
            f"Expert {name!r}: moments must have shapes ({width}, {width}) and ({width},) for this router's encoder "
            f"(hidden size {hidden_size} plus the bias feature), got {tuple(a.shape)} and {tuple(b.shape)}: they "
            "were computed with a different encoder."
        )
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError(f"Expert {name!r}: moments contain NaN or infinite values.")
    scale = float(a.abs().max())
    if not torch.allclose(a, a.T, rtol=1e-6, atol=1e-9 * max(scale, 1.0)):
        raise ValueError(f"Expert {name!r}: A_n must be symmetric (it is a sum of x x^T).")
    tokens = float(b[-1])
    if not tokens > 0 or abs(float(a[-1, -1]) - tokens) > 1e-6 * max(tokens, 1.0):
        raise ValueError(
            f"Expert {name!r}: the bias entries of the moments must both hold the token count (A_n[d, d] = "
            f"{float(a[-1, -1])}, b_n[d] = {tokens}); these are not IR3DE moments over [x, 1] features."
        )
    return a, b


def _count_texts(
    name: str, texts: str | Sequence[str], tokenizer: Any, config: IR3DEConfig, show_progress_bar: bool | None
) -> torch.Tensor:
    """Counts texts held in memory (no `datasets` needed), in batches, with a bar of the texts counted."""
    items = [texts] if isinstance(texts, str) else list(texts)
    counter = TokenCounter(config.vocab_size, config.never_counted_ids)
    with tqdm(
        total=len(items),
        desc=f"Counting tokens of {name!r}",
        unit=" texts",
        disable=not _shows(show_progress_bar, len(items)),
    ) as bar:
        for start in range(0, len(items), _TEXT_BATCH):
            batch = items[start : start + _TEXT_BATCH]
            flat = [token for sequence in encode_texts(tokenizer, batch, config.vocab_size) for token in sequence]
            counter.add(torch.as_tensor(flat, dtype=torch.long))
            bar.update(len(batch))
    return counter.counts


def _count_dataset(
    name: str, dataset: Any, tokenizer: Any, config: IR3DEConfig, text_column: str, show_progress_bar: bool | None
) -> torch.Tensor:
    """Counts a `datasets.Dataset` or `IterableDataset` with the streaming fit's count (`fitting.count_experts`: the
    same checks, batches and bar as ``ir3de fit``), all of it in this process."""
    from .fitting import count_experts  # streams need `datasets`, which a dataset argument comes with

    length = len(dataset) if hasattr(dataset, "__len__") else None
    result = count_experts(
        {name: dataset},
        tokenizer=tokenizer,
        vocab_size=config.vocab_size,
        ignored_token_ids=config.never_counted_ids,
        text_column=text_column,
        batch_size=_TEXT_BATCH,
        progress=_shows(show_progress_bar, length),
        distributed=False,
    )
    return result.histograms[name]


def _shows(show_progress_bar: bool | None, texts: int | None) -> bool:
    """Whether to show a bar: as asked, else for 2,048 texts or more and for streams of unknown length."""
    if show_progress_bar is not None:
        return show_progress_bar
    return texts is None or texts >= PROGRESS_TEXTS
