# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""OpenAI response bodies and stream chunks for chat (``chat.completion``) and text (``text_completion``) answers,
each with ``model`` set to the expert that answered and the routing decision in an extra ``ir3de`` field; and the
streaming response that carries the chunks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..outputs import Decision
from .backends import Answer, Delta, Usage
from .decision import decision_body

__all__ = ["EventStream", "Reply", "sse"]


class Reply:
    """Builds the bodies of one answer; ``chat`` selects the chat schema (else the text-completion one)."""

    def __init__(self, decision: Decision, chat: bool, router_version: str) -> None:
        self.decision = decision
        self.router_version = router_version
        self.chat = chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def body(self, answer: Answer) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": answer.text}}
        else:
            choice = {"index": 0, "text": answer.text}
        choice.update(finish_reason=answer.finish_reason, logprobs=None)
        return {
            **self._head("chat.completion" if self.chat else "text_completion"),
            "choices": [choice],
            "usage": _usage(answer.usage),
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
        return sse({**self._head(self._chunk_kind, with_decision=first), "choices": [choice]})

    def usage_event(self, usage: Usage) -> str:
        """The last chunk before ``[DONE]`` when the client asked for ``stream_options.include_usage``, the OpenAI
        way: no choices, the usage of the whole answer."""
        return sse({**self._head(self._chunk_kind, with_decision=False), "choices": [], "usage": _usage(usage)})

    @property
    def _chunk_kind(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def _head(self, kind: str, with_decision: bool = True) -> dict[str, Any]:
        head: dict[str, Any] = {"id": self.id, "object": kind, "created": self.created, "model": self.decision.expert}
        if with_decision:
            head["ir3de"] = decision_body(self.decision, self.router_version)
        return head


class EventStream(StreamingResponse):
    """A ``text/event-stream`` of ``events`` that closes them when it ends, however it ends: Starlette leaves the
    generator of a client that went away suspended (to the garbage collector), closing it stops the answer now."""

    def __init__(self, events: AsyncGenerator[str, None], headers: Mapping[str, str]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"
