# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Reading an OpenAI-compatible server's answers (a completion body, or the events of a stream), every field the
proxy uses checked: a server that answers something else raises `BadAnswer` saying what it sent, never a bare
``KeyError`` or ``ValueError`` from deep in the proxy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from . import Answer, Delta, Usage

__all__ = ["BadAnswer", "answer_of", "deltas_of"]


class BadAnswer(ValueError):
    """What was wrong with the server's answer, as a phrase: ``"a usage whose prompt_tokens is "many" ..."``."""


def answer_of(payload: object, chat: bool) -> Answer:
    """The text, usage and finish reason of a ``chat.completion`` (``chat``) or ``text_completion`` body."""
    if not isinstance(payload, dict):
        raise BadAnswer(f"a body that is not a JSON object (got {_shown(payload)})")
    choice = _first_choice(payload)
    part = _field(choice, "message", dict) if chat else choice
    text = _field(part, "content" if chat else "text", str, optional=chat)
    finish = _field(choice, "finish_reason", str, optional=True)
    return Answer(text or "", _usage(payload.get("usage")), finish or "stop")


async def deltas_of(lines: AsyncIterator[str], chat: bool) -> AsyncIterator[Delta]:
    """The pieces of a server-sent-event stream up to ``data: [DONE]``: the text of each chunk, and a `Delta`
    carrying the usage for a chunk that has one (``stream_options.include_usage``)."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise BadAnswer(f"a stream event that is not JSON (got {_shown(data)})") from None
        if not isinstance(chunk, dict):
            raise BadAnswer(f"a stream event that is not a JSON object (got {_shown(chunk)})")
        if isinstance(chunk.get("error"), dict):
            raise BadAnswer(f"an error in its stream ({_shown(chunk['error'].get('message'))})")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise BadAnswer(f"a stream chunk whose choices are {_shown(choices)}, not a list")
        for choice in choices:
            part = _field(choice, "delta", dict) if chat else choice
            text = _field(part, "content" if chat else "text", str, optional=True)
            yield Delta(text or "", _field(choice, "finish_reason", str, optional=True))
        if chunk.get("usage") is not None:
            yield Delta("", usage=_usage(chunk["usage"]))
    raise BadAnswer("a stream that ended before data: [DONE] (the answer may be cut short)")


def _first_choice(payload: dict[str, Any]) -> dict[str, Any]:
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadAnswer(f"a completion whose choices are {_shown(choices)}, not a list of choice objects")
    return choices[0]


def _field(owner: object, key: str, kind: type, *, optional: bool = False) -> Any:
    """``owner[key]``, which must be a ``kind`` (or null / missing when ``optional``)."""
    if not isinstance(owner, dict):
        raise BadAnswer(f"a choice that is {_shown(owner)}, not a JSON object")
    value = owner.get(key)
    if not isinstance(value, kind) and not (optional and value is None):
        raise BadAnswer(f"a {key} that is {_shown(value)}, not a {'string' if kind is str else 'JSON object'}")
    return value


def _usage(usage: object) -> Usage:
    if not isinstance(usage, dict):
        raise BadAnswer(f"a usage that is {_shown(usage)}, not an object with prompt_tokens and completion_tokens")
    for key in ("prompt_tokens", "completion_tokens"):
        count = usage.get(key)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise BadAnswer(f"a usage whose {key} is {_shown(count)}, not a token count (an integer >= 0)")
    return Usage(usage["prompt_tokens"], usage["completion_tokens"])


def _shown(value: object) -> str:
    """``value`` as JSON, cut to 60 characters: enough to recognise it in a one-line message."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
