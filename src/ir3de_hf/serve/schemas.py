# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Request bodies of the OpenAI endpoints the server answers, checked by pydantic before anything is routed.

Fields the server does not use (``seed``, ``logprobs``, ``user``...) are accepted and ignored by the local backend
and forwarded unchanged to remote experts; the ones it cannot honour (``n > 1``) are refused with a clear message.
Types are strict, as OpenAI's are: ``max_tokens: "3"`` or ``true`` and ``stream: "yes"`` are refused, not coerced
(an integer is still a valid float), and a number setting is finite and in its range (``temperature: NaN`` is
refused).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "GenerationRequest",
    "RouteRequest",
    "StreamOptions",
    "invalid_number",
    "invalid_text",
]


def _either(kinds: str) -> WrapValidator:
    """One error for a field that takes several shapes ("should be a string or a list of strings"), instead of
    pydantic's one per shape, each named by a type (``prompt.list[str].0``)."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as error:
            raise PydanticCustomError("wrong_type", "Input should be " + kinds) from error

    return WrapValidator(check)


_TextOrTexts = Annotated[str | list[str], _either("a string or a list of strings")]


class ChatMessage(BaseModel):
    """One turn; ``content`` is a string or a list of ``{"type": "text", "text": ...}`` parts (joined)."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[str | list[dict[str, Any]] | None, _either("a string, a list of content parts or null")] = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise ValueError(f"only text content parts are supported, got one of type {part.get('type')!r}")
            if not isinstance(part.get("text"), str):
                raise ValueError(f'a text part needs "text", a string; got {json.dumps(part.get("text"))[:40]}')
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


# OpenAI's ranges: (lowest, highest, whether the lowest is excluded)
_RANGES = {
    "temperature": (0.0, 2.0, False),
    "top_p": (0.0, 1.0, True),
    "presence_penalty": (-2.0, 2.0, False),
    "frequency_penalty": (-2.0, 2.0, False),
}


class GenerationRequest(BaseModel):
    """What chat and text completions share: the model to use (or route with) and the sampling settings."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stream: bool = False
    n: int = 1
    stop: Annotated[str | list[str] | None, _either("a string, a list of strings or null")] = None
    stream_options: StreamOptions | None = None

    @field_validator("temperature", "top_p", "presence_penalty", "frequency_penalty")
    @classmethod
    def _finite_in_range(cls, value: float | None, info: ValidationInfo) -> float | None:
        """One message for NaN, infinities and values out of range (pydantic's ``le=2`` says NaN "should be less
        than or equal to 2")."""
        low, high, low_excluded = _RANGES[str(info.field_name)]
        if value is None:
            return None
        above_low = low < value if low_excluded else low <= value
        if not (math.isfinite(value) and above_low and value <= high):
            excluded = f" ({low:g} excluded)" if low_excluded else ""
            raise ValueError(f"{info.field_name} must be a finite number between {low:g} and {high:g}{excluded}")
        return value

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported; send several requests for several answers")
        return n

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, options: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        """As OpenAI: ``stream_options`` means nothing without ``stream: true``, so it is a mistake, not a no-op."""
        if options is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed when stream is true")
        return options


class ChatRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(GenerationRequest):
    prompt: _TextOrTexts

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

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    input: _TextOrTexts | None = None
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


def invalid_text(body: object) -> tuple[str, str] | None:
    """A key or string of a parsed JSON body that is not valid Unicode (a lone surrogate such as ``"\\ud800"``,
    which JSON allows and UTF-8 cannot encode): its dotted path (escaped) and what is wrong, or None."""
    for path, value in _leaves(body):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                where = path.encode("utf-8", "backslashreplace").decode()
                return where, f"a lone surrogate {value[error.start]!r} at position {error.start}"
    return None


def invalid_number(body: object) -> str | None:
    """The dotted path of a NaN or an infinity in a parsed JSON body (Python's json reads them; JSON has neither,
    and a remote expert would get an invalid body), or None."""
    return next((path for path, value in _leaves(body) if isinstance(value, float) and not math.isfinite(value)), None)


def _leaves(body: object) -> Iterator[tuple[str, object]]:
    """``(dotted path, value)`` of every key and scalar, without recursion (a body may be nested as deep as the
    JSON parser allows)."""
    stack: list[tuple[str, object]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            items: list[tuple[object, object]] = list(value.items())
        elif isinstance(value, list):
            items = list(enumerate(value))
        else:
            yield path, value
            continue
        for key, item in items:
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str):
                yield where, key
            stack.append((where, item))
