# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Request bodies of the OpenAI endpoints the server answers, checked by pydantic before anything is routed.

Fields the server does not use (``seed``, ``logprobs``, ``user``...) are accepted and ignored by the local backend
and forwarded unchanged to remote experts; the ones it cannot honour (``n > 1``) are refused with a clear message.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ChatMessage", "ChatRequest", "CompletionRequest", "GenerationRequest", "RouteRequest", "StreamOptions"]


class ChatMessage(BaseModel):
    """One turn; ``content`` is a string or a list of ``{"type": "text", "text": ...}`` parts (joined)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"only text content parts are supported, got one of type {part.get('type')!r}")
            parts.append(part["text"])
        return "".join(parts)

    @model_validator(mode="after")
    def _text_parts(self) -> ChatMessage:
        self.text  # noqa: B018 -- refuses image/audio parts at validation time, with the part's type
        return self


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` asks for a last chunk with the usage (and no choices) before [DONE]."""

    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool | None = None


class GenerationRequest(BaseModel):
    """What chat and text completions share: the model to use (or route with) and the sampling settings."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: bool = False
    n: int = 1
    stop: str | list[str] | None = None
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported; send several requests for several answers")
        return n


class ChatRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("send one prompt per request (a string, or a list holding one string)")
        return prompt

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens


class RouteRequest(BaseModel):
    """``{"input": str | list[str]}`` or ``{"messages": [...]}``: what to route, nothing is generated."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    input: str | list[str] | None = None
    messages: list[ChatMessage] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RouteRequest:
        if (self.input is None) == (self.messages is None):
            raise ValueError('give exactly one of "input" (a string or a list of strings) and "messages"')
        if isinstance(self.input, list) and not self.input:
            raise ValueError('"input" is an empty list; give at least one prompt')
        if self.messages is not None and not self.messages:
            raise ValueError('"messages" is empty; give at least one message')
        return self
