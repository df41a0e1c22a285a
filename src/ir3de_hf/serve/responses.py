# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""OpenAI response bodies and stream chunks for chat (``chat.completion``) and text (``text_completion``) answers,
each with ``model`` set to the expert that answered and the routing decision in an extra ``ir3de`` field."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ..outputs import Decision
from .backends import Answer, Delta
from .decision import decision_body

__all__ = ["Reply", "sse"]


class Reply:
    """Builds the bodies of one answer; ``chat`` selects the chat schema (else the text-completion one)."""

    def __init__(self, decision: Decision, chat: bool) -> None:
        self.decision = decision
        self.chat = chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def body(self, answer: Answer) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": answer.text}}
        else:
            choice = {"index": 0, "text": answer.text}
        choice.update(finish_reason=answer.finish_reason, logprobs=None)
        usage = {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }
        return {
            **self._head("chat.completion" if self.chat else "text_completion"),
            "choices": [choice],
            "usage": usage,
        }

    def event(self, delta: Delta, first: bool = False) -> str:
        """One server-sent event; the first chat chunk carries the assistant role, the first of any the decision."""
        if self.chat:
            content: dict[str, Any] = (
                {"role": "assistant", "content": delta.text} if first else {"content": delta.text}
            )
            choice: dict[str, Any] = {"index": 0, "delta": content}
        else:
            choice = {"index": 0, "text": delta.text, "logprobs": None}
        choice["finish_reason"] = delta.finish_reason
        chunk = {**self._head("chat.completion.chunk" if self.chat else "text_completion"), "choices": [choice]}
        if not first:
            del chunk["ir3de"]
        return sse(chunk)

    def _head(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.decision.expert,
            "ir3de": decision_body(self.decision),
        }


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"
