# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The local backend: the router's own `ExpertPool` answers, one generation at a time on one worker thread, with
micro-batching: requests with the same sampling settings and ``max_tokens`` that arrive within ``batch_wait_ms`` of the
first share a batched ``generate`` call (up to ``max_batch_size`` prompts) when they go to the same expert or to
adapters of one base model (`ir3de_hf.generation.answer` is given each prompt's decision and runs them as one
mixed-adapter batch). The token counts and finish reasons are the generation's own: nothing is tokenized again.

One thread owns the pool, so experts are loaded, switched and unloaded by one caller (peft's active adapter is
global state of the shared base model); the event loop only routes and waits. The pool is the one the router had
when the backend was made, and it outlives router versions: a live add registers the new expert in it
(`add_expert`), a remove unregisters it once its requests drained (`remove_expert`), each between two generations.
A request whose client went away is dropped if it has not started, and its generation stops at the next token if it
has (a batch's once all of its requests are gone), so an abandoned long answer never holds the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...generation import answer, answer_stream, chat_prompt
from ..errors import ServeError
from . import Answer, Delta, Job, Usage

if TYPE_CHECKING:
    from ...configuration_ir3de import ExpertSpec
    from ...modeling_ir3de import IR3DERouterModel

__all__ = ["LocalBackend"]

_DONE = object()


@dataclass
class _Pending:
    """A job waiting for the worker, where its result goes (a future, or a queue of stream pieces), and whether its
    client went away (set by the request's coroutine, read by the worker)."""

    job: Job
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Answer] | None = None
    pieces: asyncio.Queue[Any] | None = None
    key: tuple[Any, ...] = ()
    cancelled: threading.Event = field(default_factory=threading.Event)


class LocalBackend:
    """Answers jobs with `ir3de_hf.generation.answer` / `answer_stream`, on the experts the server decided."""

    kind = "local"
    shared = False

    def __init__(self, router: IR3DERouterModel, *, max_batch_size: int = 8, batch_wait_ms: float = 10.0) -> None:
        if max_batch_size < 1 or batch_wait_ms < 0:
            raise ValueError(
                f"max_batch_size must be >= 1 and batch_wait_ms >= 0, got {max_batch_size} and {batch_wait_ms}."
            )
        self.pool = router.expert_pool
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait_ms / 1000
        self.batch_sizes: Counter[int] = Counter()  # batch size -> how many batches of that size ran
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._held: deque[_Pending] = deque()  # taken from the queue while batching another key
        self._pool_lock = threading.Lock()  # generations and registry edits, one at a time
        self._worker = threading.Thread(target=self._work, name="ir3de-serve-local", daemon=True)
        self._worker.start()

    async def complete(self, job: Job) -> Answer:
        loop = asyncio.get_running_loop()
        pending = _Pending(job, loop, future=loop.create_future())
        self._queue.put(pending)
        assert pending.future is not None
        try:
            return await pending.future
        except asyncio.CancelledError:
            pending.cancelled.set()
            raise

    async def stream(self, job: Job) -> AsyncGenerator[Delta, None]:
        loop = asyncio.get_running_loop()
        pending = _Pending(job, loop, pieces=asyncio.Queue())
        self._queue.put(pending)
        assert pending.pieces is not None
        try:
            while (piece := await pending.pieces.get()) is not _DONE:
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:  # closed or cancelled before the end: the client went away (after the end this changes nothing)
            pending.cancelled.set()

    async def add_expert(self, name: str, spec: ExpertSpec) -> None:
        """Registers ``spec`` (its source is checked, nothing is loaded) between two generations; an expert without a
        source only routes, as in `IR3DERouterModel.expert_pool`."""
        if spec.source is None:
            return
        try:
            await asyncio.to_thread(self._edit, lambda: self.pool.register(spec))
        except ValueError as error:
            raise ServeError(400, str(error), param="source") from error

    async def remove_expert(self, name: str) -> None:
        """Unloads and unregisters ``name`` between two generations (its requests are drained already)."""
        await asyncio.to_thread(self._edit, lambda: self.pool.unregister(name, missing_ok=True))

    def _edit(self, change: Callable[[], None]) -> None:
        with self._pool_lock:
            change()

    async def aclose(self) -> None:
        self._queue.put(None)

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        while (first := self._held.popleft() if self._held else self._queue.get()) is not None:
            if first.cancelled.is_set():
                continue
            self._set_key(first)
            if first.pieces is not None:
                with self._pool_lock:
                    self._run_stream(first)
            else:
                batch = self._collect(first)
                with self._pool_lock:
                    self._run_batch(batch)

    def _collect(self, first: _Pending) -> list[_Pending]:
        """``first`` and the jobs with its key that are waiting or arrive within the batch window."""
        batch = [first]
        for pending in list(self._held):
            if len(batch) < self.max_batch_size and pending.key == first.key and pending.pieces is None:
                self._held.remove(pending)
                batch.append(pending)
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.max_batch_size:
            try:
                arrived = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if arrived is None:
                self._queue.put(None)  # shut down once this batch is answered
                break
            if arrived.cancelled.is_set():
                continue
            self._set_key(arrived)
            if arrived.key == first.key and arrived.pieces is None:
                batch.append(arrived)
            else:
                self._held.append(arrived)
        return batch

    def _set_key(self, pending: _Pending) -> None:
        """Jobs with equal keys can share a ``generate`` call: one expert, or one base model's adapters, and the
        same sampling and token limit. Computed here: only this thread touches the pool."""
        job = pending.job
        target: object = job.expert
        with self._pool_lock, contextlib.suppress(ValueError):  # an expert without a model: `_run_batch` refuses it
            target = self.pool.batch_key(job.expert)
        pending.key = (target, job.max_tokens, tuple(sorted(_sampling(job).items())))

    def _run_batch(self, batch: list[_Pending]) -> None:
        """One ``generate`` call per template choice in the batch (a lone user turn is templated by ``generate``,
        a longer chat or a text completion is not), each prompt on the expert the server decided."""
        jobs = [pending.job for pending in batch]
        answered: dict[int, Answer] = {}
        try:
            pool = self.pool
            tokenizer = pool.get(jobs[0].expert).tokenizer  # one tokenizer per batch key
            prompts = [_prompt(tokenizer, job) for job in jobs]
            for templated in dict.fromkeys(choice for _, choice in prompts):
                rows = [index for index, (_, choice) in enumerate(prompts) if choice is templated]
                self.batch_sizes[len(rows)] += 1
                results = answer(
                    pool,
                    [prompts[index][0] for index in rows],
                    [jobs[index].decision for index in rows],
                    use_chat_template=templated,
                    batch_size=len(rows),
                    cancelled=lambda: all(pending.cancelled.is_set() for pending in batch),
                    max_new_tokens=jobs[0].max_tokens,
                    **_sampling(jobs[0]),
                )
                for index, result in zip(rows, results, strict=True):
                    usage = Usage(result.prompt_tokens, result.completion_tokens)
                    answered[index] = Answer(result.text, usage, result.finish_reason)
            outcomes: list[Answer | BaseException] = [answered[index] for index in range(len(batch))]
        except Exception as error:  # handed to each waiting request, never lost in the thread
            outcomes = [_refusal(error)] * len(batch)
        for pending, outcome in zip(batch, outcomes, strict=True):
            pending.loop.call_soon_threadsafe(_settle, pending.future, outcome)

    def _run_stream(self, pending: _Pending) -> None:
        job = pending.job
        assert pending.pieces is not None
        put = pending.pieces.put_nowait
        try:
            pool = self.pool
            prompt, templated = _prompt(pool.get(job.expert).tokenizer, job)
            stream = answer_stream(
                pool,
                prompt,
                job.decision,
                use_chat_template=templated,
                cancelled=pending.cancelled.is_set,
                max_new_tokens=job.max_tokens,
                **_sampling(job),
            )
            for chunk in stream:
                pending.loop.call_soon_threadsafe(put, Delta(chunk))
            usage = Usage(stream.prompt_tokens, stream.completion_tokens or 0)
            pending.loop.call_soon_threadsafe(put, Delta("", stream.finish_reason or "stop", usage))
        except Exception as error:  # raised in the request's coroutine
            pending.loop.call_soon_threadsafe(put, _refusal(error))
        pending.loop.call_soon_threadsafe(put, _DONE)


def _settle(future: asyncio.Future[Answer] | None, result: Answer | BaseException) -> None:
    if future is None or future.done():  # the client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _refusal(error: Exception) -> Exception:
    """Bad generation settings (max_tokens beyond the expert's context...) are the client's to fix: 400."""
    return ServeError(400, str(error), param="max_tokens") if isinstance(error, ValueError) else error


def _prompt(tokenizer: Any, job: Job) -> tuple[str, bool | None]:
    """The text handed to `generate` and its ``use_chat_template``: a chat by `chat_prompt`'s rule, a text
    completion as it is."""
    if job.messages is None:
        assert job.prompt is not None
        return job.prompt, False
    return chat_prompt(tokenizer, job.messages)


def _sampling(job: Job) -> dict[str, Any]:
    """Greedy decoding unless a temperature above 0 is asked for (then ``top_p`` applies too)."""
    if not job.temperature:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": job.temperature, "top_p": job.top_p or 1.0}
