# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The FastAPI app: OpenAI endpoints that route each request, ``/v1/route``, ``/v1/models``, ``/health``, ``/metrics``,
and the admin API of live edits (`ir3de_hf.serve.admin`). Each request routes and is answered by one router version
(`ir3de_hf.serve.live`), named in its answer.

Every refusal is an OpenAI error body (``{"error": {"message", "type", "param", "code"}}``) with status 400, 401,
404, 413, 422 or 503; an unexpected failure is a 500 with a one-line message, never a traceback. Once a stream has
started, a failure is an error event in it, then ``[DONE]``. A client that goes away cancels its request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ..outputs import Decision
from .admin import add_admin_routes, is_admin_path
from .backends import Backend, Delta, Job
from .decision import Decider, decision_body, decision_header, routed_text
from .errors import ServeError, error_body
from .live import LiveRouter, Version, released
from .metrics import Metrics
from .responses import EventStream, Reply, sse
from .schemas import ChatRequest, CompletionRequest, RouteRequest, invalid_number, invalid_text

__all__ = ["ServeSettings", "create_app"]

_LOG = logging.getLogger("ir3de_hf.serve")
_Body = TypeVar("_Body", bound=BaseModel)
_T = TypeVar("_T")


@dataclass(frozen=True)
class ServeSettings:
    """What the server accepts: ``api_key`` (None: no auth), ``admin_key`` (None: the admin API is off), which chat
    text is routed, and the size limits."""

    api_key: str | None = None
    admin_key: str | None = None
    route_on: str = "last_user"
    max_request_bytes: int = 1_000_000
    max_tokens_limit: int = 1024
    default_max_tokens: int = 64


def create_app(router: Decider | LiveRouter, backend: Backend, settings: ServeSettings | None = None) -> FastAPI:
    """The server of ``router`` in front of ``backend``'s experts: a `Decider` is one read-only version, a
    `LiveRouter` of a directory follows its edits and other workers' saves."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    live = router if isinstance(router, LiveRouter) else LiveRouter.fixed(router, backend)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher = asyncio.create_task(live.watch()) if live.directory is not None else None
        yield
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await backend.aclose()

    app = FastAPI(title="ir3de", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def refuse(error: ServeError) -> JSONResponse:
        metrics.error(error.status)
        return JSONResponse(error_body(error.status, error.message, error.param, error.code), status_code=error.status)

    app.add_middleware(_Guard, settings=settings, refuse=refuse)

    @app.exception_handler(ServeError)
    async def on_refusal(request: Request, error: ServeError) -> JSONResponse:
        return refuse(error)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, error: HTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {error.detail}" if error.status_code in (404, 405) else ""
        return refuse(ServeError(error.status_code, message or str(error.detail)))

    @app.exception_handler(Exception)
    async def on_failure(request: Request, error: Exception) -> JSONResponse:
        _LOG.exception("unexpected failure on %s", request.url.path)
        first = str(error).splitlines()[0] if str(error) else ""
        return refuse(ServeError(500, f"Internal error ({type(error).__name__}{': ' + first if first else ''})."))

    async def parse(request: Request, schema: type[_Body]) -> tuple[dict[str, object], _Body]:
        raw = await request.body()
        if len(raw) > settings.max_request_bytes:
            raise _too_large(len(raw), settings.max_request_bytes)
        try:
            data = json.loads(raw)
        except RecursionError as error:
            raise ServeError(
                400, "The request body is nested too deeply to read; send a JSON object a few levels deep."
            ) from error
        except ValueError as error:
            raise ServeError(400, f"The request body is not valid JSON ({error}).") from error
        if not isinstance(data, dict):
            raise ServeError(400, "The request body must be a JSON object.")
        bad_text = invalid_text(data)  # before pydantic, whose messages quote the input
        if bad_text is not None:
            where, why = bad_text
            raise ServeError(400, f"{where} is not valid Unicode text ({why}); send UTF-8 text.", param=where)
        try:
            parsed = schema.model_validate(data)
        except ValidationError as error:
            raise ServeError(422, _validation_message(error), param=_validation_param(error)) from error
        number = invalid_number(data)  # in a field the schema does not check, forwarded to remote experts
        if number is not None:
            raise ServeError(
                422,
                f"Invalid request: {number} is NaN or infinite, which JSON has no place for; send a finite number.",
                param=number,
            )
        return data, parsed

    def decide(version: Version, model: str, texts: Sequence[str] | Callable[[], str]) -> list[Decision]:
        """``model``'s expert, or the routed decision of each text by ``version``: ``texts`` are the prompts, or for a
        chat a function that gives its one text to route (called only when routing, so a forced chat is not read)."""
        decider = version.decider
        forced = decider.forced(model)
        if forced is not None:
            return [forced] * (1 if callable(texts) else len(texts))
        started = time.perf_counter()
        decisions = decider.route([texts()] if callable(texts) else texts)
        metrics.routing_seconds(time.perf_counter() - started)
        return decisions

    def token_limit(asked: int | None) -> int:
        limit = min(settings.default_max_tokens, settings.max_tokens_limit) if asked is None else asked
        if limit > settings.max_tokens_limit:
            raise ServeError(
                400,
                f"max_tokens={limit} is over this server's limit of {settings.max_tokens_limit}; ask for fewer.",
                param="max_tokens",
            )
        return limit

    async def answer(request: Request, endpoint: str, job: Job, version: Version, stream: bool) -> Response:
        """``job``'s answer; it counts in flight on its expert (a remove drains it) from before the first await
        until the answer is sent or the stream ends."""
        decision = job.decision
        if job.body.get("stop") is not None and backend.kind == "local":
            raise ServeError(400, "stop sequences are not supported by the local backend.", param="stop")
        metrics.request(endpoint, decision.expert, decision.reason)
        reply = Reply(decision, chat=job.messages is not None, router_version=version.id)
        headers = {"x-ir3de-expert": decision_header(decision), "x-ir3de-router-version": version.id}
        hold = live.hold(decision.expert)
        if not stream:
            try:
                result = await _unless_gone(request, backend.complete(job))
            finally:
                hold.release()
            metrics.tokens(decision.expert, result.usage.prompt_tokens, result.usage.completion_tokens)
            return JSONResponse(reply.body(result), headers=headers)
        pieces = released(backend.stream(job), hold)
        try:  # a refusal or an unreachable expert fails here, before the headers
            first = await _unless_gone(request, anext(pieces, Delta("")))
        except BaseException:  # also cancelled before the stream started, when its own `finally` cannot run
            hold.release()
            raise
        return EventStream(events(reply, job, first, pieces), headers)

    async def events(
        reply: Reply, job: Job, first: Delta, pieces: AsyncGenerator[Delta, None]
    ) -> AsyncGenerator[str, None]:
        """The chunks of ``first`` and the other ``pieces``; the usage counts in the metrics and, when the client
        asked for it, is the last chunk. The status is sent already: a failure is an error event."""
        usage, opening = None, True
        try:
            async for delta in _preceded(first, pieces):
                usage = delta.usage or usage
                if delta.text or delta.finish_reason or delta.usage is None:  # not a usage-only piece
                    yield reply.event(delta, first=opening)
                    opening = False
            if usage is not None:
                metrics.tokens(job.expert, usage.prompt_tokens, usage.completion_tokens)
                if job.include_usage:
                    yield reply.usage_event(usage)
        except ServeError as error:
            metrics.error(error.status)
            yield sse(error_body(error.status, error.message, error.param, error.code))
        except Exception:
            _LOG.exception("unexpected failure while streaming an answer of expert %r", job.expert)
            metrics.error(500)
            yield sse(error_body(500, "Internal error while streaming the answer; the server's log has the cause."))
        finally:  # closes the backend's stream also when the client went away: its generation stops
            await pieces.aclose()
        yield sse("[DONE]")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body, chat = await parse(request, ChatRequest)
        version = live.current  # this request's one version, from here to its answer
        (decision,) = decide(version, chat.model, lambda: routed_text(chat.messages, settings.route_on))
        messages = [{"role": message.role, "content": message.text} for message in chat.messages]
        limit = token_limit(chat.token_limit)
        job = Job(decision, limit, messages, None, chat.temperature, chat.top_p, body)
        return await answer(request, "chat", job, version, chat.stream)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body, completion = await parse(request, CompletionRequest)
        version = live.current
        (decision,) = decide(version, completion.model, [completion.text])
        limit = token_limit(completion.token_limit)
        job = Job(decision, limit, None, completion.text, completion.temperature, completion.top_p, body)
        return await answer(request, "completions", job, version, completion.stream)

    @app.post("/v1/route")
    async def route(request: Request) -> JSONResponse:
        _, asked = await parse(request, RouteRequest)
        version = live.current
        model = asked.model or version.decider.meta_models[0]
        messages, given = asked.messages, asked.input
        if messages is not None:
            decisions = decide(version, model, lambda: routed_text(messages, settings.route_on))
        else:
            decisions = decide(version, model, [given] if isinstance(given, str) else list(given or []))
        for decision in decisions:
            metrics.request("route", decision.expert, decision.reason)
        data = [{"index": index, **decision_body(decision, version.id)} for index, decision in enumerate(decisions)]
        return JSONResponse(
            {"object": "list", "model": model, "data": data}, headers={"x-ir3de-router-version": version.id}
        )

    def model_cards(decider: Decider) -> dict[str, dict[str, object]]:
        """The meta-models (which route) and the experts (which force), by id, as OpenAI model objects."""
        created = int(time.time())
        cards: dict[str, dict[str, object]] = {
            name: {"id": name, "object": "model", "created": created, "owned_by": "ir3de"}
            for name in decider.meta_models
        }
        for name in decider.router.expert_names:
            cards[name] = {"id": name, "object": "model", "created": created, "owned_by": "ir3de"}
            cards[name]["parent"] = decider.meta_models[0]
        return cards

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": list(model_cards(live.current.decider).values())})

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> JSONResponse:
        decider = live.current.decider
        decider.forced(model_id)  # a 404 naming the id and the models there are, for an unknown one
        return JSONResponse(model_cards(decider)[model_id])

    @app.get("/health")
    async def health() -> JSONResponse:
        version = live.current
        return JSONResponse(
            {
                "status": "ok",
                "backend": backend.kind,
                "experts": version.router.expert_names,
                "router_version": version.id,
            }
        )

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(live.current.id), media_type="text/plain; version=0.0.4")

    add_admin_routes(app, live, settings.admin_key, parse, metrics)
    return app


class _Guard:
    """Auth and the declared body size, checked before a handler reads anything (plain ASGI, no per-request
    stream wrapping as with ``@app.middleware``: this runs on every request)."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, refuse: Callable[[ServeError], JSONResponse]) -> None:
        self.app = app
        self.settings = settings
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await self.refuse(refusal)(scope, receive, send)

    def _refusal(self, scope: Scope) -> ServeError | None:
        headers = Headers(scope=scope)
        key = self.settings.api_key
        if key is not None and scope["path"] != "/health" and not is_admin_path(scope["path"]):  # its own key
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), key.encode()):
                return ServeError(401, "Missing or wrong API key: send 'Authorization: Bearer <key>'.")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_request_bytes:
            return _too_large(int(declared), self.settings.max_request_bytes)
        return None


async def _unless_gone(request: Request, work: Awaitable[_T]) -> _T:
    """``work``'s result; if the client goes away first, ``work`` is cancelled (which stops its generation) and
    `ServeError` 499 is raised: a handler is not cancelled when its client disconnects."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        gone.cancel()
    if task not in done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ServeError(499, "The client closed the connection before the answer was ready.")
    return task.result()


async def _disconnect(receive: Receive) -> None:
    """Returns once the client has gone away (the request's body is read already: nothing else can arrive)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _preceded(first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    yield first
    async for delta in rest:
        yield delta


def _too_large(size: int, limit: int) -> ServeError:
    return ServeError(413, f"The request body has {size} bytes, over this server's limit of {limit} bytes.")


def _validation_message(error: ValidationError) -> str:
    """``"max_tokens: Input should be a valid integer (got "3")"``: each problem on one line, joined."""
    problems = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        given = item.get("input")
        if item["type"] != "missing" and (given is None or isinstance(given, (str, int, float, bool))):
            shown = json.dumps(given)
            message += f" (got {shown if len(shown) <= 40 else shown[:37] + '...'})"
        problems.append(f"{where}: {message}")
    return "Invalid request: " + "; ".join(problems) + "."


def _validation_param(error: ValidationError) -> str | None:
    first = error.errors(include_url=False)
    return ".".join(str(part) for part in first[0]["loc"]) if first and first[0]["loc"] else None
