# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""What a backend is given (`Job`) and returns (`Answer`, or `Delta` s when streaming), whatever answers it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ...outputs import Decision

__all__ = ["Answer", "Backend", "Delta", "Job"]


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


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer; the last one carries the ``finish_reason``."""

    text: str
    finish_reason: str | None = None


class Backend(Protocol):
    kind: str

    async def complete(self, job: Job) -> Answer: ...

    def stream(self, job: Job) -> AsyncIterator[Delta]: ...

    async def aclose(self) -> None: ...
