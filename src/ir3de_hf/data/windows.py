"""Cut a document into token windows that end at natural boundaries (line ends or sentence ends).

Works on one tokenization of the whole document: boundaries are character positions, mapped to token indices through
the tokenizer's offsets, so a window's length in tokens is known without re-tokenizing every candidate.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

# Right after a newline, or right after sentence-final punctuation (and closing quotes/brackets) followed by space.
_LINE_END = re.compile(r"\n")
_SENTENCE_END = re.compile(r"\n|[.!?;:。！？؟।॥።]['\"”’)\]]*(?=\s)|[。！？]")

LINE_DOMAINS = frozenset({"code", "biomedical"})


@dataclass(frozen=True)
class WindowSpec:
    """Token budget of a window: cut at the last boundary in [min_tokens, max_tokens], else past max up to overflow."""

    min_tokens: int = 264
    max_tokens: int = 384
    overflow_tokens: int = 448


def boundaries(text: str, by_line: bool) -> list[int]:
    """Character positions where a window may end."""
    pattern = _LINE_END if by_line else _SENTENCE_END
    return [m.end() for m in pattern.finditer(text)]


def token_spans(token_starts: Sequence[int], cuts: Sequence[int], spec: WindowSpec) -> list[tuple[int, int, bool]]:
    """Greedy windows ``(first_token, end_token, hard_cut)`` over ``len(token_starts)`` tokens.

    ``cuts`` are character boundaries. A window ends at the last boundary that keeps it within
    ``[min_tokens, max_tokens]``; failing that, at the first boundary before ``overflow_tokens``; failing that (one
    enormous sentence or line) it is cut hard at ``max_tokens``. A tail shorter than ``min_tokens`` is dropped.
    """
    n = len(token_starts)
    stops = sorted({bisect_left(token_starts, c) for c in cuts} | {n})
    spans = []
    start = 0
    while n - start >= spec.min_tokens:
        hi = start + spec.max_tokens
        i = bisect_right(stops, hi) - 1
        if i >= 0 and stops[i] >= start + spec.min_tokens:
            spans.append((start, stops[i], False))
        elif (j := i + 1) < len(stops) and stops[j] <= start + spec.overflow_tokens:
            spans.append((start, stops[j], False))
        else:
            spans.append((start, min(hi, n), True))
        start = spans[-1][1]
    return spans


def window_texts(
    text: str, offsets: Sequence[tuple[int, int]], by_line: bool, spec: WindowSpec, keep_indent: bool = False
) -> list[tuple[str, bool]]:
    """Window texts of one document, given the tokenizer's ``(start, end)`` character offsets of each token.

    ``keep_indent`` keeps the leading spaces of the first line (code); otherwise windows are fully stripped.
    """
    starts = [start for start, _ in offsets]
    spans = token_spans(starts, boundaries(text, by_line), spec)
    out = []
    for first, end, hard in spans:
        chunk = text[starts[first] : starts[end] if end < len(starts) else len(text)]
        chunk = chunk.strip("\n").rstrip() if keep_indent else chunk.strip()
        if chunk:
            out.append((chunk, hard))
    return out
