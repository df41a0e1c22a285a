# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""What the Space's API endpoints do, as plain functions of a `RouterHolder` (the Gradio events only bind them).

A holder is one visitor session's view of the Space's routers (`router_snapshots`): edits change that session's
router only. Every function takes the session's current snapshot ONCE and uses it to the end, so an edit made
meanwhile (in another tab of the same session) never changes a decision halfway.

The public events hand these functions the values exactly as the visitor sent them (`preprocess=False`): a call
without arguments gives None, an API caller may send a number where text belongs, or a string, NaN or 2.5 as
``max_new_tokens``. All checking is done here, and bad input raises `gr.Error` with a message naming the problem
(shown to the visitor, no server traceback); nothing is published unless every check passed.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import display
import gradio as gr
import torch
from router_snapshots import RouterHolder

from ir3de_hf import ExpertSpec, IR3DERouterModel
from ir3de_hf.generation import answer_stream, chat_prompt
from ir3de_hf.hub import local_path_or_hub_id
from ir3de_hf.outputs import Decision, NoEvidenceError, decide

__all__ = [
    "MAX_CHAT_MESSAGES",
    "MAX_EXPERTS",
    "MAX_EXPERT_TEXT_BYTES",
    "MAX_NEW_TOKENS",
    "MAX_PROMPT_CHARS",
    "MAX_TEMPERATURE",
    "add_expert",
    "chat",
    "chat_history",
    "experts",
    "generate",
    "hub_link",
    "judged_by",
    "public_source",
    "remove_expert",
    "reset",
    "route",
    "routing_line",
]

MAX_PROMPT_CHARS = 4_000
MAX_EXPERT_TEXT_BYTES = 2_000_000
MAX_NEW_TOKENS = 256
MAX_TEMPERATURE = 2.0
MAX_EXPERTS = 24  # each expert keeps a V-long histogram and a (d+1)^2 moment matrix in memory
MAX_CHAT_MESSAGES = 16  # earlier turns of a chat are not shown to the expert
HUB = "https://huggingface.co"
TEXT_SOURCE = "text (added here)"
ROUTING_MARK = "Routed to **"  # starts a chat answer's routing line (left out when the conversation goes back)

# Experts of one base model share ONE model in the pool (peft adapter switching): one generation at a time.
_GENERATION = threading.Lock()


def route(holder: RouterHolder, prompt: object = None) -> dict[str, Any]:
    """The routing decision for one prompt, as JSON.

    ``{"expert": str | None, "margin": float | None, "confidence": str | None, "min_margin": float | None,
    "probability": float | None, "min_confidence": float | None, "no_evidence": bool, "can_generate": bool,
    "aggregation": str, "scores": {expert: float}, "tokens": [{"text": str, "vote": str | None}]}``: ``tokens`` are
    the prompt's tokens in order (their texts concatenate to the prompt, gaps included with vote None); ``vote`` is
    the expert the token's own score prefers, None for special tokens. ``margin`` is None with a single expert.
    ``probability`` is the chosen expert's (calibrated, once `router.calibrate` ran) probability. ``confidence`` is
    the decision's `confident` by the rule `generate` and ``ir3de serve`` use (`ir3de_hf.outputs.decide`):
    ``"confident"`` unless the probability is under the router config's ``min_confidence`` or the margin under its
    ``min_margin`` (each when set, both given here), ``"unsure"`` then, and None without a decision.
    """
    return _route(holder.current, _checked_prompt(prompt))[0]


def _route(router: IR3DERouterModel, prompt: str) -> tuple[dict[str, Any], Decision | None]:
    """The JSON of `route` and the decision (None when the prompt has no usable token)."""
    encoded = router.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids, spans = encoded["input_ids"], encoded["offset_mapping"]
    output = router.route(torch.tensor([ids], dtype=torch.long).reshape(1, len(ids)))
    names = router.expert_names
    assert output.logits is not None and output.token_votes is not None
    try:
        (decision,) = decide(output, names)
    except NoEvidenceError:
        decision = None
    votes = [names[v] if v >= 0 else None for v in output.token_votes[0].tolist()]
    shown = {
        "expert": None if decision is None else decision.expert,
        "margin": decision.margin if decision is not None and math.isfinite(decision.margin) else None,
        "confidence": None if decision is None else ("confident" if decision.confident else "unsure"),
        "min_margin": router.config.min_margin,
        "probability": None if decision is None else decision.confidence,
        "min_confidence": router.config.min_confidence,
        "no_evidence": decision is None,
        "can_generate": decision is not None and _has_model(router, decision.expert),
        "aggregation": router.config.aggregation,
        "scores": {name: round(float(score), 6) for name, score in zip(names, output.logits[0].tolist(), strict=True)},
        "tokens": _token_pieces(prompt, spans, votes),
    }
    return shown, decision


def generate(
    holder: RouterHolder,
    prompt: object = None,
    expert: object = None,
    max_new_tokens: object = 64,
    temperature: object = 0.0,
    top_p: object = 1.0,
) -> Generator[str, None, None]:
    """Streams the answer of ``expert`` (or, when empty, of the expert the router chooses): yields the text so far.

    ``max_new_tokens`` is a whole number from 1 to `MAX_NEW_TOKENS`, and below the expert model's context
    (``config.max_position_embeddings``), so that the prompt keeps at least one token. ``temperature`` is a number
    from 0 to `MAX_TEMPERATURE` (0: greedy decoding, the default) and ``top_p`` a number in (0, 1] (used when
    sampling). An expert added from text in the Space has statistics but no model, so it routes but cannot answer:
    asking it to is an error naming it (force a model-backed expert to compare instead).
    """
    prompt = _checked_prompt(prompt)
    limit = _checked_max_new_tokens(max_new_tokens)
    sampling = _checked_sampling(temperature, top_p)
    router = holder.current
    forced = _optional_name(expert, "The expert to answer")
    decision = Decision(forced, "forced") if forced else _route(router, prompt)[1]
    if decision is None:
        raise _refusal(
            "The prompt has no token the router can use (empty, blank or only special tokens); nothing to answer."
        )
    name = decision.expert
    if name not in router.expert_names:
        raise _refusal(f"No expert named {name!r}; the experts are: {', '.join(router.expert_names)}.")
    if not _has_model(router, name):
        raise _refusal(
            f"Expert {name!r} was added from text: it has routing statistics but no model to answer with. "
            "Pick an expert with a model under 'Compare with' to hear an answer."
        )
    yield from _stream(holder, router, decision, [{"role": "user", "content": prompt}], limit, sampling)


def chat(
    holder: RouterHolder,
    message: object = None,
    history: object = None,
    max_new_tokens: object = 64,
    temperature: object = 0.0,
    top_p: object = 1.0,
) -> Generator[str, None, None]:
    """One chat turn: routes the LAST user message alone and streams the chosen expert's answer to the conversation.

    Yields `routing_line` (the expert, its margin and whether the router is confident), a blank line, then the answer
    so far as Markdown (`display.answer_markdown`: an answer that looks like code comes in a code block, verbatim).
    ``history`` is the conversation before ``message`` as ``[{"role": "user" | "assistant", "content":
    ...}]`` (Gradio's chat messages; the routing lines of earlier answers are left out, and only the last
    `MAX_CHAT_MESSAGES` messages are shown to the expert). The other arguments are checked as in `generate`. An
    expert added from text has no model: its turn says so instead of answering.
    """
    message = _checked_prompt(message)
    limit = _checked_max_new_tokens(max_new_tokens)
    sampling = _checked_sampling(temperature, top_p)
    turns = _chat_turns(history)
    router = holder.current
    shown, decision = _route(router, message)
    if decision is None:
        raise _refusal(
            "The message has no token the router can use (empty, blank or only special tokens); nothing to route."
        )
    line = routing_line(shown)
    if not shown["can_generate"]:
        yield (f"{line}\n\n*{decision.expert!r} was added from text: it routes, but has no model to answer with.*")
        return
    conversation = [*turns, {"role": "user", "content": message}][-MAX_CHAT_MESSAGES:]
    for text in _stream(holder, router, decision, conversation, limit, sampling):
        yield f"{line}\n\n{display.answer_markdown(text)}"


def routing_line(decision: dict[str, Any]) -> str:
    """The chat's first line of an answer: ``"Routed to **legal** · margin 0.164 · confident (≥ 0.03)"``, with a
    calibrated router ``"Routed to **legal** · probability 0.997 · confident (≥ 0.96)"``; ``(no threshold)`` when the
    router has neither."""
    if decision["margin"] is None:
        return f"{ROUTING_MARK}{decision['expert']}** · the only expert"
    measure, threshold = judged_by(decision)
    return f"{ROUTING_MARK}{decision['expert']}** · {measure} · {decision['confidence']} ({threshold})"


def judged_by(decision: dict[str, Any]) -> tuple[str, str]:
    """What a decision of `route` was judged by and the threshold it met or missed: ``("probability 0.997",
    "≥ 0.96")`` with a calibrated router, ``("margin 0.164", "< 0.2")`` with a ``min_margin`` alone,
    ``("margin 0.164", "no threshold")`` with neither (every decision with evidence is confident)."""
    sign = "≥" if decision["confidence"] == "confident" else "<"
    if decision.get("min_confidence") is not None:
        return f"probability {decision['probability']:.3f}", f"{sign} {decision['min_confidence']:.3g}"
    margin = f"margin {decision['margin']:.3f}"
    if decision.get("min_margin") is not None:
        return margin, f"{sign} {decision['min_margin']:g}"
    return margin, "no threshold"


def _stream(
    holder: RouterHolder,
    router: IR3DERouterModel,
    decision: Decision,
    conversation: list[dict[str, str]],
    limit: int,
    sampling: dict[str, Any],
) -> Generator[str, None, None]:
    """Streams the answer of ``decision``'s expert to ``conversation`` (user and assistant turns, the last one the
    user's), turned into one prompt as the server does it (`chat_prompt`)."""
    name = decision.expert
    with _GENERATION:
        with holder.loading:  # load (or find) the expert's model while no snapshot is being cloned
            pool = router.expert_pool
            if name not in pool.names:
                pool.register(router.config.expert_specs[router.expert_names.index(name)])
            loaded = pool.get(name)
        context = getattr(loaded.model.config, "max_position_embeddings", None)
        if isinstance(context, int) and limit >= context:
            raise _refusal(
                f"max_new_tokens={limit} does not fit: expert {name!r} has a context of {context} tokens, which "
                f"must hold the prompt too; ask for at most {context - 1} new tokens."
            )
        prompt, templated = chat_prompt(loaded.tokenizer, conversation)
        stream = answer_stream(pool, prompt, decision, max_new_tokens=limit, use_chat_template=templated, **sampling)
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


def add_expert(holder: RouterHolder, name: object = None, text: object = None, file: object = None) -> dict[str, Any]:
    """Fits a new expert on pasted text and/or an uploaded ``.txt`` / ``.jsonl`` file (one JSON object with a
    ``text`` field per line) and publishes the new router; returns the expert table (see `experts`).

    ``file`` is a path, or the file payload Gradio passes without preprocessing (``{"path": ..., "orig_name": ...}``).
    """
    name = _optional_name(name, "The new expert's name")
    if not name:
        raise _refusal("Give the new expert a name (1-64 letters, digits, '_', '-' or '.').")
    try:
        ExpertSpec(name)  # the registry's own name rule
    except ValueError as error:
        raise _refusal(str(error)) from error
    if text is not None and not isinstance(text, str):
        raise _refusal(f"The expert's text must be a string, got {_kind(text)}.")
    texts = [_checked_unicode(text, "The pasted text")] if text and text.strip() else []
    if file is not None and file != "":
        texts += _read_upload(*_upload(file))
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


def remove_expert(holder: RouterHolder, name: object = None) -> dict[str, Any]:
    """Removes expert ``name`` and publishes the new router; returns the expert table (see `experts`)."""
    name = _optional_name(name, "The name of the expert to remove")
    current = holder.current.expert_names
    if not name:
        raise _refusal(f"Name the expert to remove; the experts are: {', '.join(current)}.")
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
    """``{"experts": [{"name", "source", "link", "tokens", "can_generate"}]}``: the registry of the session's
    snapshot, with the number of tokens behind each expert's statistics (the bias entry of imported moments counts
    them too). ``source`` is the expert model's Hub id, ``"local"`` for a model on the Space's disk (its path is never
    shown) or ``"text (added here)"``; ``link`` is its Hub page or None."""
    router = holder.current
    rows, counts = [], router.store.token_counts()
    for index, spec in enumerate(router.config.expert_specs):
        rows.append(
            {
                "name": spec.name,
                "source": public_source(spec.source),
                "link": hub_link(spec.source, spec.revision),
                "tokens": counts[index],
                "can_generate": spec.source is not None,
            }
        )
    return {"experts": rows}


def public_source(source: str | None) -> str:
    """What the Space shows of a source: the Hub id, ``"local"`` for a path (never the path itself), or
    ``"text (added here)"`` for an expert without a model."""
    if source is None:
        return TEXT_SOURCE
    located = local_path_or_hub_id(source)
    return located if isinstance(located, str) else "local"


def hub_link(source: str | None, revision: str | None = None) -> str | None:
    """The Hub page of ``source`` (at ``revision``) when it is a Hub id, else None; ``repo_type="dataset"`` ids
    are given as ``"datasets/org/name"``."""
    if source is None:
        return None
    if source.startswith("datasets/") and source.count("/") == 2:
        kind, source = "datasets/", source.removeprefix("datasets/")
    else:
        kind = ""
    located = local_path_or_hub_id(source)
    if not isinstance(located, str):
        return None
    return f"{HUB}/{kind}{located}" + (f"/tree/{revision}" if revision else "")


def _refusal(message: str) -> gr.Error:
    """A visitor's mistake: shown to them, not logged as a server traceback."""
    return gr.Error(message, print_exception=False)


def _edit(holder: RouterHolder, change: Any) -> None:
    try:
        holder.edit(change)
    except ValueError as error:  # duplicate name, no usable token...: the published router is unchanged
        raise _refusal(str(error)) from error


def _checked_prompt(prompt: object) -> str:
    if prompt is not None and not isinstance(prompt, str):
        raise _refusal(f"The prompt must be text (a string), got {_kind(prompt)}.")
    if not prompt or not prompt.strip():
        raise _refusal("Type a prompt first.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _refusal(f"The prompt has {len(prompt):,} characters; the Space takes at most {MAX_PROMPT_CHARS:,}.")
    return _checked_unicode(prompt, "The prompt")


def _checked_max_new_tokens(value: object) -> int:
    """A whole number of tokens in 1..MAX_NEW_TOKENS; 48.0 is 48, but NaN, 2.5, "32" and True are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refusal(f"max_new_tokens must be a number of tokens, got {_kind(value)}.")
    if isinstance(value, float) and not value.is_integer():  # NaN and the infinities are not integers either
        raise _refusal(f"max_new_tokens must be a whole number of tokens, got {value}.")
    if not 1 <= value <= MAX_NEW_TOKENS:
        raise _refusal(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}, got {_shown(value)}.")
    return int(value)


def _checked_sampling(temperature: object, top_p: object) -> dict[str, Any]:
    """``generate`` keywords: greedy for temperature 0, else sampling with ``temperature`` and ``top_p``. Each must
    be a finite number: temperature in [0, MAX_TEMPERATURE], top_p in (0, 1]; strings, booleans and NaN are
    refused."""
    t = _checked_real(temperature, "temperature")
    p = _checked_real(top_p, "top_p")
    if not 0 <= t <= MAX_TEMPERATURE:
        raise _refusal(f"temperature must be between 0 (greedy) and {MAX_TEMPERATURE:g}, got {_shown(temperature)}.")
    if not 0 < p <= 1:
        raise _refusal(f"top_p must be greater than 0 and at most 1, got {_shown(top_p)}.")
    if t == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": float(t), "top_p": float(p)}


def _checked_real(value: object, name: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refusal(f"{name} must be a number, got {_kind(value)}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise _refusal(f"{name} must be a finite number, got {value}.")
    return value  # a huge int stays an int: comparing it never overflows


def chat_history(history: object) -> list[dict[str, Any]]:
    """``history`` checked: None (no earlier turn) or a list of Gradio chat messages, each an object with a
    ``"role"`` of ``"user"``, ``"assistant"`` or ``"system"`` (a string, a list of lists or anything else is
    refused, never read character by character)."""
    if history is None:
        return []
    if not isinstance(history, list):
        raise _refusal(
            f"The chat history must be a list of messages, got {_kind(history)}: send a list of {{'role': 'user' or "
            "'assistant', 'content': text}} objects, or [] to start a conversation."
        )
    for number, message in enumerate(history):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system"):
            raise _refusal(
                f"The chat history's message {number} must be an object with a 'role' of 'user', 'assistant' or "
                f"'system' and a 'content', got {_kind(message)}."
            )
    return history


def _chat_turns(history: object) -> list[dict[str, str]]:
    """The text of the user and assistant messages of a Gradio chat history (checked by `chat_history`), oldest
    first, without the routing lines and the code fences `display.answer_markdown` added; anything else (files,
    components, system messages) is left out."""
    turns = []
    for message in chat_history(history):
        if message["role"] == "system":
            continue
        if message.get("metadata") and isinstance(message["metadata"], dict) and message["metadata"].get("title"):
            continue  # a "thought" box, not part of the conversation
        text = _message_text(message.get("content"))
        if message["role"] == "assistant" and text.startswith(ROUTING_MARK):
            text = display.answer_text(text.partition("\n\n")[2])
        if text.strip():
            turns.append({"role": message["role"], "content": _checked_unicode(text, "The chat history")})
    return turns


def _message_text(content: object) -> str:
    """A chat message's text: a string, or the text parts of a list of parts (``{"type": "text", "text": ...}``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return content["text"]
    if isinstance(content, list):
        return "".join(_message_text(part) for part in content)
    return ""


def _optional_name(value: object, what: str) -> str:
    """An expert name as sent (None and blanks: ""), stripped; anything but a string is refused."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _refusal(f"{what} must be a string, got {_kind(value)}.")
    return value.strip()


def _checked_unicode(text: str, what: str) -> str:
    """JSON can carry lone surrogates ("\\ud800"), which no tokenizer (and no UTF-8 file) can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise _refusal(f"{what} is not valid Unicode text (a lone surrogate at character {error.start}).") from error
    return text


def _kind(value: object) -> str:
    return f"{type(value).__name__} {_shown(value)}"


def _shown(value: object) -> str:
    shown = repr(value)  # an int from JSON may have thousands of digits
    return shown if len(shown) <= 40 else shown[:37] + "..."


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


def _upload(file: object) -> tuple[Path, str]:
    """The uploaded file's path on the server and the name the visitor gave it."""
    if isinstance(file, str | Path):
        return Path(file), Path(file).name
    if isinstance(file, dict) and isinstance(file.get("path"), str):
        shown = file.get("orig_name")
        return Path(file["path"]), shown if isinstance(shown, str) and shown else Path(file["path"]).name
    raise _refusal(
        f"The file must be an uploaded .txt or .jsonl file (gradio_client: handle_file(path)), got {_kind(file)}."
    )


def _read_upload(path: Path, shown: str) -> list[str]:
    suffix = Path(shown).suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise _refusal(f"{shown}: upload a .txt file or a .jsonl file with a 'text' field per line.")
    size = path.stat().st_size
    if size > MAX_EXPERT_TEXT_BYTES:
        raise _refusal(f"{shown} has {size:,} bytes; an expert added here takes at most {MAX_EXPERT_TEXT_BYTES:,}.")
    try:
        content = path.read_bytes().decode("utf-8-sig")  # a byte order mark is not text
    except UnicodeDecodeError as error:
        raise _refusal(f"{shown} is not UTF-8 text (byte {error.start} cannot be decoded).") from error
    if suffix == ".txt":
        texts = [content]
    else:
        texts = []
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise _refusal(f"{shown}, line {number}: not JSON ({error.msg}).") from error
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise _refusal(f"{shown}, line {number}: expected an object with a string 'text' field.")
            texts.append(_checked_unicode(record["text"], f"{shown}, line {number}"))
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise _refusal(f"{shown} has no text (it is empty or only whitespace).")
    return texts
