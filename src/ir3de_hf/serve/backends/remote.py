# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The remote backend: each expert is a model on an OpenAI-compatible server (vLLM serving one LoRA adapter per
expert, another ``ir3de serve``...). The client's request is forwarded with ``model`` set to the expert's served
model name; answers and streams come back through one pooled httpx client per expert.

Connection failures, timeouts and 502/503/504 answers are retried (before any streamed byte); an expert whose server
stays unreachable gives 503 for the requests routed to it, the other experts keep answering. An answer that is not
a well-formed OpenAI one (bad usage, no choices, a stream without ``data: [DONE]``) is a 502 naming the expert and
what it sent. Streams always ask the expert for its usage (``stream_options.include_usage``), for the metrics; a
client that goes away closes the upstream request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import ServeError
from . import Answer, Delta, Job
from .upstream import BadAnswer, answer_of, deltas_of

if TYPE_CHECKING:
    from ...configuration_ir3de import ExpertSpec

__all__ = ["RemoteBackend", "RemoteEndpoint", "parse_expert_url"]

_RETRIED_STATUSES = (502, 503, 504)
_NO_SUCH_MODEL = re.compile(r"model .* does not exist", re.IGNORECASE)  # vLLM: "The model `fiction` does not exist."


@dataclass(frozen=True)
class RemoteEndpoint:
    """Where expert ``name`` is served: an OpenAI base URL (``http://host:8000/v1``) and the served model name."""

    base_url: str
    model: str
    api_key: str | None = None


def parse_expert_url(value: str, api_key: str | None = None) -> tuple[str, RemoteEndpoint]:
    """``NAME=BASE_URL[:MODEL]`` -> ``(NAME, RemoteEndpoint)``; the model defaults to NAME (vLLM's adapter name).

    ``http://h:8000/v1:legal-lora`` serves model ``legal-lora``; in ``http://h:8000`` the ``8000`` is a port.
    """
    name, sep, rest = value.partition("=")
    if not sep or not name or not rest.startswith(("http://", "https://")):
        raise ValueError(f"expected NAME=BASE_URL[:MODEL] with an http(s) URL, got {value!r}")
    base, colon, model = rest.rpartition(":")
    if not colon or "/" in model or model.isdigit() or base in ("http", "https"):
        base, model = rest, name
    return name, RemoteEndpoint(base.rstrip("/"), model, api_key)


class RemoteBackend:
    """One `httpx.AsyncClient` per expert, with ``timeout`` seconds per request and ``retries`` extra attempts."""

    kind = "remote"
    shared = False

    def __init__(self, experts: Mapping[str, RemoteEndpoint], *, timeout: float = 600.0, retries: int = 2) -> None:
        self.experts = dict(experts)
        self.retries = retries
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._clients = {name: self._client(expert) for name, expert in self.experts.items()}

    async def complete(self, job: Job) -> Answer:
        path, body = self._request(job, stream=False)
        for attempt in range(self.retries + 1):
            try:
                response = await self._clients[job.expert].post(path, json=body)
            except httpx.TransportError as error:
                failure: str = _describe(error)
            else:
                if response.status_code not in _RETRIED_STATUSES:
                    self._refused(job.expert, response)
                    try:
                        return answer_of(_json(response), chat=job.messages is not None)
                    except BadAnswer as error:
                        raise self._bad(job.expert, str(error)) from None
                failure = f"it answered {response.status_code}"
            await _backoff(attempt, self.retries)
        raise self._unavailable(job.expert, failure)

    async def stream(self, job: Job) -> AsyncGenerator[Delta, None]:
        """The expert's pieces; the upstream response is closed on leaving, also when the stream is closed early
        (``async with``: closing or cancelling this generator closes the connection)."""
        path, body = self._request(job, stream=True)
        for attempt in range(self.retries + 1):
            started = False
            try:
                async with self._clients[job.expert].stream("POST", path, json=body) as response:
                    if response.status_code in _RETRIED_STATUSES:
                        failure = f"it answered {response.status_code}"
                    else:
                        if response.status_code >= 400:
                            await response.aread()
                            self._refused(job.expert, response)
                        counted = False
                        try:
                            async for delta in deltas_of(response.aiter_lines(), chat=job.messages is not None):
                                started, counted = True, counted or delta.usage is not None
                                yield delta
                        except BadAnswer as error:
                            raise self._bad(job.expert, str(error)) from None
                        if job.include_usage and not counted:
                            raise self._bad(job.expert, "a stream without the usage that stream_options asks for")
                        return
            except httpx.TransportError as error:
                if started:
                    raise self._unavailable(job.expert, f"the stream broke off ({_describe(error)})") from error
                failure = _describe(error)
            await _backoff(attempt, self.retries)
        raise self._unavailable(job.expert, failure)

    async def add_expert(self, name: str, spec: ExpertSpec) -> None:
        raise ServeError(
            400,
            f"experts behind --expert-url cannot be added live (each is a server this one was started with); to add "
            f"{name!r}, serve the router's LoRA experts on vLLM and start ir3de serve with --vllm-url.",
        )

    async def remove_expert(self, name: str) -> None:
        """Nothing to free: the expert's server is not this one's to change."""

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients.values()))

    def _client(self, expert: RemoteEndpoint) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {expert.api_key}"} if expert.api_key else None
        return httpx.AsyncClient(base_url=expert.base_url, timeout=self._timeout, headers=headers)

    def _request(self, job: Job, stream: bool) -> tuple[str, dict[str, Any]]:
        body = {**job.body, "model": self.experts[job.expert].model, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        else:
            body.pop("stream_options", None)
        return ("/chat/completions" if job.messages is not None else "/completions"), body

    def _refused(self, name: str, response: httpx.Response) -> None:
        """The expert server's refusal (a status >= 400), passed on with its status and message."""
        if response.status_code < 400:
            return
        payload = _json(response)
        error = payload.get("error") if isinstance(payload, dict) else None
        detail = error.get("message") if isinstance(error, dict) else response.text[:200]
        if response.status_code == 404 and _NO_SUCH_MODEL.search(str(detail)):
            expert = self.experts[name]
            raise ServeError(
                503,
                f"Expert {name!r} is not served by its server {expert.base_url}: the engine has no model "
                f"{expert.model!r} loaded; load its LoRA adapter (POST /v1/load_lora_adapter, or restart vLLM with "
                "the line `ir3de vllm-command` prints).",
                code="expert_unavailable",
            )
        raise ServeError(response.status_code, f"Expert {name!r}'s server refused the request: {detail}")

    def _bad(self, name: str, what: str) -> ServeError:
        url = self.experts[name].base_url
        return ServeError(
            502,
            f"Expert {name!r}'s server {url} answered {what}; check that it serves the OpenAI API (vLLM, another "
            "ir3de serve) and that it is healthy.",
            code="bad_expert_answer",
        )

    def _unavailable(self, name: str, why: str) -> ServeError:
        url = self.experts[name].base_url
        return ServeError(
            503,
            f"Expert {name!r} is unavailable: its server {url} failed ({why}) after {self.retries + 1} attempt(s); "
            "the other experts still answer.",
            code="expert_unavailable",
        )


async def _backoff(attempt: int, retries: int) -> None:
    if attempt < retries:
        await asyncio.sleep(0.1 * 2**attempt)


def _describe(error: httpx.TransportError) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _json(response: httpx.Response) -> object:
    """The body's JSON; a body that is not JSON is left for `answer_of` to name (its text, cut)."""
    try:
        return response.json()
    except ValueError:
        return response.text
