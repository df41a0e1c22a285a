# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""What the Space's API endpoints do, as plain functions of a `RouterHolder` (the Gradio events only bind them).

Every function takes the current snapshot ONCE and uses it to the end, so an expert added or removed meanwhile by
another visitor never changes a decision halfway. Bad input raises `gr.Error` with a message for the visitor
(and no server traceback).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import torch
from router_snapshots import RouterHolder

from ir3de_hf import ExpertSpec, IR3DERouterModel

__all__ = [
    "MAX_EXPERTS",
    "MAX_EXPERT_TEXT_BYTES",
    "MAX_NEW_TOKENS",
    "MAX_PROMPT_CHARS",
    "add_expert",
    "experts",
    "generate",
    "remove_expert",
    "reset",
    "route",
]

MAX_PROMPT_CHARS = 4_000
MAX_EXPERT_TEXT_BYTES = 2_000_000
MAX_NEW_TOKENS = 256
MAX_EXPERTS = 24  # each expert keeps a V-long histogram and a (d+1)^2 moment matrix in memory

# Experts of one base model share ONE model in the pool (peft adapter switching): one generation at a time.
_GENERATION = threading.Lock()


def route(holder: RouterHolder, prompt: str) -> dict[str, Any]:
    """The routing decision for one prompt, as JSON.

    ``{"expert": str | None, "margin": float | None, "no_evidence": bool, "can_generate": bool,
    "aggregation": str, "scores": {expert: float}, "tokens": [{"text": str, "vote": str | None}]}``: ``tokens`` are
    the prompt's tokens in order (their texts concatenate to the prompt, gaps included with vote None); ``vote`` is
    the expert the token's own score prefers, None for special tokens. ``margin`` is None with a single expert.
    """
    prompt = _checked_prompt(prompt)
    router = holder.current
    encoded = router.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids, spans = encoded["input_ids"], encoded["offset_mapping"]
    output = router.route(torch.tensor([ids], dtype=torch.long).reshape(1, len(ids)))
    names = router.expert_names
    assert output.logits is not None and output.margins is not None and output.token_votes is not None
    votes = [names[v] if v >= 0 else None for v in output.token_votes[0].tolist()]
    expert = None if output.expert_names is None else output.expert_names[0]
    margin = float(output.margins[0])
    return {
        "expert": expert,
        "margin": margin if math.isfinite(margin) else None,
        "no_evidence": bool(output.no_evidence is not None and output.no_evidence[0]),
        "can_generate": expert is not None and _has_model(router, expert),
        "aggregation": router.config.aggregation,
        "scores": {name: round(float(score), 6) for name, score in zip(names, output.logits[0].tolist(), strict=True)},
        "tokens": _token_pieces(prompt, spans, votes),
    }


def generate(holder: RouterHolder, prompt: str, expert: str | None, max_new_tokens: int = 64) -> Iterator[str]:
    """Streams the answer of ``expert`` (or, when empty, of the expert the router chooses): yields the text so far.

    An expert added from text in the Space has statistics but no model, so it routes but cannot answer: asking it
    to is an error naming it (force a model-backed expert to compare instead).
    """
    prompt = _checked_prompt(prompt)
    limit = int(max_new_tokens)
    if not 1 <= limit <= MAX_NEW_TOKENS:
        raise _refusal(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}, got {max_new_tokens}.")
    router = holder.current
    name = expert or route(holder, prompt)["expert"]
    if name is None:
        raise _refusal("The prompt has no token the router can use (only special tokens); nothing to answer.")
    if name not in router.expert_names:
        raise _refusal(f"No expert named {name!r}; the experts are: {', '.join(router.expert_names)}.")
    if not _has_model(router, name):
        raise _refusal(
            f"Expert {name!r} was added from text: it has routing statistics but no model to answer with. "
            "Pick an expert with a model under 'Compare with' to hear an answer."
        )
    with _GENERATION:
        with holder.loading:  # load (or find) the expert's model while no snapshot is being cloned
            pool = router.expert_pool
            if name not in pool.names:
                pool.register(router.config.expert_specs[router.expert_names.index(name)])
            pool.get(name)
        stream = router.generate_stream(prompt, expert=name, max_new_tokens=limit, do_sample=False)
        text, finished = "", False
        try:
            for chunk in stream:
                text += chunk
                yield text
            finished = True
        finally:  # a visitor who left early: the worker still uses the shared model until it stops, wait for it
            if not finished:
                for _ in stream:
                    pass


def add_expert(holder: RouterHolder, name: str, text: str | None, file: str | None = None) -> dict[str, Any]:
    """Fits a new expert on pasted text and/or an uploaded ``.txt`` / ``.jsonl`` file (one JSON object with a
    ``text`` field per line) and publishes the new router; returns the expert table (see `experts`)."""
    name = (name or "").strip()
    try:
        ExpertSpec(name)  # the registry's own name rule
    except ValueError as error:
        raise _refusal(str(error)) from error
    texts = [text] if text and text.strip() else []
    if file:
        texts += _read_upload(Path(file))
    if not texts:
        raise _refusal(f"Give expert {name!r} some text: paste it, or upload a .txt or .jsonl file.")
    size = sum(len(part.encode()) for part in texts)
    if size > MAX_EXPERT_TEXT_BYTES:
        raise _refusal(f"{size:,} bytes of text: an expert added here takes at most {MAX_EXPERT_TEXT_BYTES:,} bytes.")
    if len(holder.current.expert_names) >= MAX_EXPERTS:
        raise _refusal(f"The router already has {MAX_EXPERTS} experts, the Space's limit; remove one first.")
    description = "added in the Space from text (routes only, no model)"
    _edit(holder, lambda router: router.add_expert(name, texts=texts, description=description))
    return experts(holder)


def remove_expert(holder: RouterHolder, name: str) -> dict[str, Any]:
    """Removes expert ``name`` and publishes the new router; returns the expert table (see `experts`)."""
    name = (name or "").strip()
    current = holder.current.expert_names
    if name not in current:
        raise _refusal(f"No expert named {name!r}; the experts are: {', '.join(current)}.")
    if len(current) == 1:
        raise _refusal("The router needs at least one expert; add another before removing the last one.")
    _edit(holder, lambda router: router.remove_expert(name))
    return experts(holder)


def reset(holder: RouterHolder) -> dict[str, Any]:
    """Publishes the router the Space started with; returns the expert table."""
    holder.reset()
    return experts(holder)


def experts(holder: RouterHolder) -> dict[str, Any]:
    """``{"experts": [{"name", "source", "tokens", "can_generate"}]}``: the registry of the current snapshot, with
    the number of tokens behind each expert's statistics (the bias entry of imported moments counts them too)."""
    router = holder.current
    rows = []
    for index, spec in enumerate(router.config.expert_specs):
        rows.append(
            {
                "name": spec.name,
                "source": spec.source or "text (added here)",
                "tokens": int(router.expert_counts[index].sum()),
                "can_generate": spec.source is not None,
            }
        )
    return {"experts": rows}


def _refusal(message: str) -> gr.Error:
    """A visitor's mistake: shown to them, not logged as a server traceback."""
    return gr.Error(message, print_exception=False)


def _edit(holder: RouterHolder, change: Any) -> None:
    try:
        holder.edit(change)
    except ValueError as error:  # duplicate name, no usable token...: the published router is unchanged
        raise _refusal(str(error)) from error


def _checked_prompt(prompt: str | None) -> str:
    if not prompt or not prompt.strip():
        raise _refusal("Type a prompt first.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _refusal(f"The prompt has {len(prompt):,} characters; the Space takes at most {MAX_PROMPT_CHARS:,}.")
    return prompt


def _has_model(router: IR3DERouterModel, name: str) -> bool:
    return router.config.expert_specs[router.expert_names.index(name)].source is not None


def _token_pieces(prompt: str, spans: list[tuple[int, int]], votes: list[str | None]) -> list[dict[str, str | None]]:
    """Splits the prompt at its tokens' character spans; text between tokens becomes an unlabelled piece."""
    pieces: list[dict[str, str | None]] = []
    cursor = 0
    for (start, end), vote in zip(spans, votes, strict=True):
        if start > cursor:
            pieces.append({"text": prompt[cursor:start], "vote": None})
        start = max(start, cursor)  # byte-level tokens of one character share its span: keep the first
        if end > start:
            pieces.append({"text": prompt[start:end], "vote": vote})
            cursor = end
    if cursor < len(prompt):
        pieces.append({"text": prompt[cursor:], "vote": None})
    return pieces


def _read_upload(path: Path) -> list[str]:
    size = path.stat().st_size
    if size > MAX_EXPERT_TEXT_BYTES:
        raise _refusal(f"{path.name} has {size:,} bytes; an expert added here takes at most {MAX_EXPERT_TEXT_BYTES:,}")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise _refusal(f"{path.name} is not UTF-8 text.") from error
    if path.suffix.lower() == ".txt":
        return [content]
    if path.suffix.lower() != ".jsonl":
        raise _refusal(f"{path.name}: upload a .txt file or a .jsonl file with a 'text' field per line.")
    texts = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise _refusal(f"{path.name}, line {number}: not JSON ({error.msg}).") from error
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise _refusal(f"{path.name}, line {number}: expected an object with a string 'text' field.")
        texts.append(record["text"])
    return texts
