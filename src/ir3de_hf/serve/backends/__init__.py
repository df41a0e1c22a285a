# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""What a backend is given (`Job`) and returns (`Answer`, or `Delta` s when streaming), whatever answers it.

A backend stops working on a request whose coroutine is cancelled or whose stream is closed (its client went away).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ...configuration_ir3de import ExpertSpec
    from ...outputs import Decision

__all__ = ["Answer", "Backend", "Delta", "Job", "Usage"]


@dataclass(frozen=True)
class Job:
    """One generation for the expert the server decided: a chat (``messages``) or a text completion (``prompt``).

    ``body`` is the client's request as sent (remote backends forward it, with ``model`` replaced).
    """

    decision: Decision
    max_tokens: int
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def expert(self) -> str:
        return self.decision.expert

    @property
    def include_usage(self) -> bool:
        """Whether the client asked for a stream's usage (``stream_options.include_usage``, checked by the schema)."""
        options = self.body.get("stream_options") or {}
        return bool(options.get("include_usage"))


@dataclass(frozen=True)
class Usage:
    """The tokens of one answer, as the expert counted them."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Answer:
    text: str
    usage: Usage
    finish_reason: str


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer; one carries the ``finish_reason``, and one the ``usage`` when it is known
    (a remote expert sends it alone, after its last text)."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None


class Backend(Protocol):
    kind: str
    shared: bool  # its experts are also answered for other ir3de serve workers (one vLLM engine)

    async def complete(self, job: Job) -> Answer: ...

    def stream(self, job: Job) -> AsyncGenerator[Delta, None]: ...

    async def add_expert(self, name: str, spec: ExpertSpec) -> None:
        """Makes expert ``name`` answerable before routing may choose it (a failure leaves nothing changed)."""
        ...

    async def remove_expert(self, name: str) -> None:
        """Frees expert ``name``, once routing stopped choosing it and its in-flight requests are done."""
        ...

    async def aclose(self) -> None: ...
