"""The streaming request path of `ir3de serve`, through the official `openai` client on real loopback ports: a client
that goes away cancels its request (local: the generation stops, queued work is dropped; remote: the upstream request
is closed), a failure in the generating thread reaches the consumer, an expert server's malformed answer is a 502
naming the expert, and streamed answers report their usage (``/metrics``, ``stream_options.include_usage``).

The disconnect tests use 'long': a Llama with an 8192-token context and no end-of-sequence token, whose answer to
``max_tokens=8000`` takes tens of seconds on a CPU; a request after a cut one must be answered in about its normal
time, not after that answer."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ir3de_hf import IR3DERouterModel
from ir3de_hf.generation import answer, answer_stream
from ir3de_hf.outputs import Decision
from ir3de_hf.serve.app import ServeSettings, create_app
from ir3de_hf.serve.backends.local import LocalBackend
from ir3de_hf.serve.backends.remote import RemoteBackend, RemoteEndpoint
from ir3de_hf.serve.decision import Decider
from test_serve import PROMPTS, LoopbackServer

LONG = 8000  # tokens: an answer of tens of seconds from 'long'
LIMIT = 8191


def _server(router_dir: Path, backend=None) -> tuple[LoopbackServer, LocalBackend | RemoteBackend]:
    router = IR3DERouterModel.from_pretrained(router_dir)
    backend = backend or LocalBackend(router, batch_wait_ms=0)
    settings = ServeSettings(max_tokens_limit=LIMIT)
    return LoopbackServer(create_app(Decider(router, name="tiny-router"), backend, settings)), backend


@pytest.fixture(scope="module")
def local(long_expert_router_dir):
    server, backend = _server(long_expert_router_dir)
    yield server, backend
    server.stop()


def _client(server: LoopbackServer, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, **options)


def _one_token(client: openai.OpenAI) -> float:
    """Seconds for a 1-token answer of 'long' (the expert the cut requests used)."""
    started = time.perf_counter()
    response = client.chat.completions.create(
        model="long", messages=[{"role": "user", "content": PROMPTS["docs"]}], max_tokens=1, temperature=0
    )
    assert response.usage.completion_tokens == 1
    return time.perf_counter() - started


def _bound(normal: float) -> float:
    """Generous against the normal time (the CPU is shared), far below the ~30 s a left-over answer takes."""
    return max(10 * normal, 3.0)


def _long_stream(client: openai.OpenAI, endpoint: str):
    if endpoint == "chat":
        messages = [{"role": "user", "content": PROMPTS["docs"]}]
        return client.chat.completions.create(model="long", messages=messages, max_tokens=LONG, stream=True)
    return client.completions.create(model="long", prompt=PROMPTS["docs"], max_tokens=LONG, stream=True)


# ---------------------------------------------------------------------------------------------------- local: cut


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_a_cut_stream_stops_its_generation_and_the_next_request_is_answered_in_normal_time(local, endpoint):
    client = _client(local[0])
    normal = _one_token(client)
    stream = _long_stream(client, endpoint)
    pieces = iter(stream)
    next(pieces), next(pieces)  # the answer is being written
    stream.close()
    after = _one_token(client)
    assert after < _bound(normal), f"{after:.1f} s after a cut stream, {normal:.2f} s normally"


def test_a_non_streamed_request_whose_client_times_out_is_cancelled(local):
    server, _ = local
    client = _client(server)
    normal = _one_token(client)
    impatient = _client(server, timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(
            model="long", messages=[{"role": "user", "content": PROMPTS["docs"]}], max_tokens=LONG
        )
    after = _one_token(client)
    assert after < _bound(normal), f"{after:.1f} s after a cancelled request, {normal:.2f} s normally"
    assert 'ir3de_errors_total{status="499"}' in httpx.get(f"{server.url}/metrics").text


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_a_queued_request_whose_client_went_away_is_dropped_unstarted(local, streamed):
    """B waits behind stream A and its client gives up; once A is cut, C runs next and B never runs at all."""
    server, backend = local
    client = _client(server)
    normal = _one_token(client)
    before = Counter(backend.batch_sizes)
    stream = _long_stream(client, "chat")
    pieces = iter(stream)
    next(pieces)
    body = {"model": "long", "prompt": PROMPTS["code"], "max_tokens": LONG, "stream": streamed}
    url = f"{server.url}/v1/completions"
    # B's answer (or its stream's first chunk) would come after A's
    with pytest.raises(httpx.ReadTimeout), httpx.stream("POST", url, json=body, timeout=0.5) as response:
        response.read()
    stream.close()
    after = _one_token(client)
    assert after < _bound(normal), f"{after:.1f} s after a dropped request, {normal:.2f} s normally"
    assert backend.batch_sizes - before == Counter({1: 1})  # C's generate call only, none for B


# ---------------------------------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def pool(long_expert_router_dir):
    return IR3DERouterModel.from_pretrained(long_expert_router_dir).expert_pool


LONG_DECISION = Decision("long", "forced")


def _within(seconds: float, work: Callable[[], object]) -> object:
    """``work()``'s result or exception, failing the test instead of hanging when it takes longer than ``seconds``."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s"
    return outcome[0]


def test_closing_a_streams_chunks_stops_its_generation(pool):
    stream = answer_stream(pool, PROMPTS["docs"], LONG_DECISION, max_new_tokens=LONG, do_sample=False)
    chunks: Iterator[str] = iter(stream)
    next(chunks), next(chunks)
    started = time.perf_counter()
    _within(10, chunks.close)  # type: ignore[attr-defined]  # joins the generating thread
    assert time.perf_counter() - started < 5


def test_a_stream_ends_at_the_next_token_once_cancelled_says_so(pool):
    flag = threading.Event()
    stream = answer_stream(
        pool, PROMPTS["docs"], LONG_DECISION, cancelled=flag.is_set, max_new_tokens=LONG, do_sample=False
    )
    chunks = iter(stream)
    next(chunks)
    flag.set()
    rest = _within(10, lambda: list(chunks))
    assert isinstance(rest, list) and len(rest) < 100
    assert stream.completion_tokens is not None and stream.completion_tokens < 100


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "answer_stream"])
def test_an_already_cancelled_generation_writes_exactly_one_token(pool, streamed):
    options = {"cancelled": lambda: True, "max_new_tokens": LONG, "do_sample": False}
    if streamed:
        stream = answer_stream(pool, PROMPTS["docs"], LONG_DECISION, **options)
        _within(10, lambda: list(stream))
        assert stream.completion_tokens == 1
    else:
        (result,) = answer(pool, [PROMPTS["docs"]], [LONG_DECISION], **options)
        assert result.completion_tokens == 1


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"not_a_generate_setting": 1}, "not_a_generate_setting"),
        ({"do_sample": True, "temperature": -1.0}, "temperature"),
    ],
)
def test_a_failure_in_the_generating_thread_is_raised_by_the_chunks(pool, settings, words):
    stream = answer_stream(pool, PROMPTS["docs"], LONG_DECISION, max_new_tokens=4, **settings)
    raised = _within(30, lambda: list(stream))
    assert isinstance(raised, ValueError) and words in str(raised)
    again = answer_stream(pool, PROMPTS["docs"], LONG_DECISION, max_new_tokens=3, do_sample=False)
    assert isinstance(_within(30, lambda: list(again)), list) and again.completion_tokens == 3  # still answers


# ---------------------------------------------------------------------------------------------------- usage


def _stream_chunks(client: openai.OpenAI, endpoint: str, model: str, **options) -> list:
    if endpoint == "chat":
        messages = [{"role": "user", "content": PROMPTS["code"]}]
        return list(
            client.chat.completions.create(model=model, messages=messages, max_tokens=6, stream=True, **options)
        )
    return list(client.completions.create(model=model, prompt=PROMPTS["code"], max_tokens=6, stream=True, **options))


def _whole(client: openai.OpenAI, endpoint: str, model: str):
    if endpoint == "chat":
        messages = [{"role": "user", "content": PROMPTS["code"]}]
        return client.chat.completions.create(model=model, messages=messages, max_tokens=6, temperature=0)
    return client.completions.create(model=model, prompt=PROMPTS["code"], max_tokens=6, temperature=0)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize("include_usage", [True, False, None])
def test_stream_options_include_usage_adds_a_last_chunk_with_the_usage(local, endpoint, include_usage):
    client = _client(local[0])
    options = {} if include_usage is None else {"stream_options": {"include_usage": include_usage}}
    chunks = _stream_chunks(client, endpoint, "code", temperature=0, **options)
    whole = _whole(client, endpoint, "code")
    if include_usage:
        *text, last = chunks
        assert last.choices == [] and last.usage == whole.usage
    else:
        text = chunks
    assert all(chunk.usage is None and len(chunk.choices) == 1 for chunk in text)
    pieces = [chunk.choices[0].delta.content or "" if endpoint == "chat" else chunk.choices[0].text for chunk in text]
    expected = whole.choices[0].message.content if endpoint == "chat" else whole.choices[0].text
    assert "".join(pieces) == expected


def test_a_bad_stream_options_is_refused_and_the_server_keeps_answering(local):
    body = {"model": "code", "prompt": "x", "stream": True, "stream_options": {"include_usage": "yes"}}
    response = httpx.post(f"{local[0].url}/v1/completions", json=body)
    assert response.status_code == 422
    assert "stream_options.include_usage" in response.json()["error"]["message"]
    assert _whole(_client(local[0]), "completions", "code").usage.completion_tokens >= 1


def _tokens(metrics: str, expert: str) -> tuple[int, int]:
    counts = {}
    for kind in ("prompt", "completion"):
        prefix = f'ir3de_tokens_total{{expert="{expert}",kind="{kind}"}} '
        lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
        counts[kind] = int(lines[0].removeprefix(prefix)) if lines else 0
    return counts["prompt"], counts["completion"]


def test_streamed_answers_add_their_tokens_to_the_metrics(long_expert_router_dir):
    server, _ = _server(long_expert_router_dir)
    try:
        client = _client(server)
        whole = _whole(client, "chat", "code").usage
        after_whole = _tokens(httpx.get(f"{server.url}/metrics").text, "code")
        assert after_whole == (whole.prompt_tokens, whole.completion_tokens)
        _stream_chunks(client, "chat", "code", temperature=0)  # no include_usage: counted all the same
        _stream_chunks(client, "completions", "code", temperature=0)
        text = _whole(client, "completions", "code").usage
        counted = _tokens(httpx.get(f"{server.url}/metrics").text, "code")
    finally:
        server.stop()
    prompt = 2 * whole.prompt_tokens + 2 * text.prompt_tokens
    completion = 2 * whole.completion_tokens + 2 * text.completion_tokens
    assert counted == (prompt, completion)


# ---------------------------------------------------------------------------------------------------- remote


class FakeExpert:
    """An OpenAI-compatible expert server the test scripts: ``reply`` makes the response to each request (the
    request's JSON body is recorded in ``bodies``); ``closed_at`` is when a response it was still sending was cut."""

    def __init__(self) -> None:
        self.reply: Callable[[dict], Response] = lambda body: JSONResponse({})
        self.bodies: list[dict] = []
        self.closed_at: float | None = None
        self.sent = 0

        async def handle(request: Request) -> Response:
            body = await request.json()
            self.bodies.append(body)
            return self.reply(body)

        routes = [Route(f"/v1/{path}", handle, methods=["POST"]) for path in ("chat/completions", "completions")]
        self.server = LoopbackServer(Starlette(routes=routes))

    def events(
        self, *events: object, delay: float = 0.0, repeat: int = 1, done: bool = True, wait: float = 0.0
    ) -> StreamingResponse:
        """``events`` (JSON, or raw text when a str) as server-sent events, ``repeat`` times, ``delay`` s apart,
        after ``wait`` s."""

        async def lines():
            finished = False
            try:
                await asyncio.sleep(wait)
                for _ in range(repeat):
                    for event in events:
                        data = event if isinstance(event, str) else json.dumps(event)
                        yield f"data: {data}\n\n"
                        self.sent += 1
                        await asyncio.sleep(delay)
                if done:
                    yield "data: [DONE]\n\n"
                finished = True
            finally:
                if not finished:
                    self.closed_at = time.monotonic()

        return StreamingResponse(lines(), media_type="text/event-stream")

    def late(self, seconds: float) -> StreamingResponse:
        """A 200 whose body would come after ``seconds``: what a long non-streamed generation looks like."""
        return self.events(wait=seconds, done=False)


def _chunk(text: str, chat: bool, finish: str | None = None) -> dict:
    choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
    return {"id": "x", "object": "chunk", "choices": [{**choice, "finish_reason": finish}]}


USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def _completion(chat: bool, usage: object = USAGE) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": "hi"}} if chat else {"index": 0, "text": "hi"}
    return {"id": "x", "object": "completion", "choices": [{**choice, "finish_reason": "stop"}], "usage": usage}


@pytest.fixture(scope="module")
def fake():
    expert = FakeExpert()
    yield expert
    expert.server.stop()


@pytest.fixture(scope="module")
def proxy(long_expert_router_dir, fake):
    experts = {name: RemoteEndpoint(f"{fake.server.url}/v1", name) for name in ("code", "long")}
    server, _ = _server(long_expert_router_dir, RemoteBackend(experts, timeout=60, retries=0))
    yield server
    server.stop()


@pytest.fixture
def scripted(fake):
    """The fake expert, reset, answering well unless a test says otherwise."""
    fake.bodies.clear()
    fake.closed_at, fake.sent = None, 0

    def well(body: dict) -> Response:
        chat = "messages" in body
        if not body.get("stream"):
            return JSONResponse(_completion(chat))
        usage = [{"id": "x", "choices": [], "usage": USAGE}] if body.get("stream_options") else []
        return fake.events(_chunk("hi", chat), _chunk(" there", chat, "stop"), *usage)

    fake.reply = well
    return fake


def _wait_for_close(fake: FakeExpert, seconds: float = 10.0) -> float:
    deadline = time.monotonic() + seconds
    while fake.closed_at is None:
        assert time.monotonic() < deadline, "the proxy never closed the upstream request"
        time.sleep(0.02)
    return fake.closed_at


def test_a_cut_stream_closes_the_upstream_request(proxy, scripted):
    scripted.reply = lambda body: scripted.events(_chunk("word ", True), delay=0.05, repeat=600)
    stream = _long_stream(_client(proxy), "chat")
    pieces = iter(stream)
    next(pieces), next(pieces)
    stream.close()
    cut = time.monotonic()
    assert _wait_for_close(scripted) - cut < 2.0
    assert scripted.sent < 600


def test_a_non_streamed_request_whose_client_times_out_closes_the_upstream_request(proxy, scripted):
    scripted.reply = lambda body: scripted.late(30)
    with pytest.raises(openai.APITimeoutError):
        _client(proxy, timeout=1.0).completions.create(model="code", prompt="x", max_tokens=4)
    cut = time.monotonic()
    assert _wait_for_close(scripted) - cut < 2.0


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
def test_a_stream_that_ends_before_done_is_an_error_event_not_a_short_answer(proxy, scripted, chat):
    scripted.reply = lambda body: scripted.events(_chunk("half an", chat), _chunk(" answer", chat), done=False)
    body = {"model": "code", "max_tokens": 4, "stream": True}
    body.update({"messages": [{"role": "user", "content": "x"}]} if chat else {"prompt": "x"})
    path = "chat/completions" if chat else "completions"
    with httpx.stream("POST", f"{proxy.url}/v1/{path}", json=body) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert "Expert 'code'" in error["message"] and "ended before data: [DONE]" in error["message"]
    assert (error["type"], error["code"]) == ("server_error", "bad_expert_answer")
    with pytest.raises(openai.APIError, match=r"ended before data: \[DONE\]"):
        _stream_chunks(_client(proxy), "chat" if chat else "completions", "code")
    assert 'ir3de_errors_total{status="502"}' in httpx.get(f"{proxy.url}/metrics").text


BAD_ANSWERS = [  # (what the expert's server sends, words of the 502's message)
    (_completion(True, {"prompt_tokens": "many", "completion_tokens": 2}), 'prompt_tokens is "many"'),
    (_completion(True, None), "a usage that is null"),
    ({k: v for k, v in _completion(True).items() if k != "usage"}, "a usage that is null"),
    (_completion(True, {"prompt_tokens": 3, "completion_tokens": -1}), "completion_tokens is -1"),
    (_completion(True, {"prompt_tokens": True, "completion_tokens": 1}), "prompt_tokens is true"),
    (_completion(True, {"prompt_tokens": 2.5, "completion_tokens": 1}), "prompt_tokens is 2.5"),
    ({"id": "x", "usage": USAGE}, "choices are null"),
    ({"id": "x", "choices": [], "usage": USAGE}, "choices are []"),
    ({"choices": [{"index": 0, "message": {"content": 42}}], "usage": USAGE}, "a content that is 42"),
    ({"choices": [{"index": 0, "message": "hi"}], "usage": USAGE}, 'a message that is "hi"'),
    ([1, 2], "not a JSON object (got [1, 2])"),
    ("<html>Bad gateway</html>", 'not a JSON object (got "<html>Bad gateway</html>")'),
]


@pytest.mark.parametrize(("sent", "words"), BAD_ANSWERS)
def test_a_malformed_expert_answer_is_a_502_naming_the_expert_and_what_it_sent(proxy, scripted, sent, words):
    scripted.reply = lambda body: Response(sent) if isinstance(sent, str) else JSONResponse(sent)
    client = _client(proxy)
    with pytest.raises(openai.APIStatusError) as caught:
        _whole(client, "chat", "code")
    assert caught.value.status_code == 502
    message = caught.value.body["message"]
    assert message.startswith(f"Expert 'code''s server {scripted.server.url}/v1 answered ") and words in message
    assert "check that it serves the OpenAI API" in message and "Internal error" not in message
    scripted.reply = lambda body: JSONResponse(_completion(True))
    assert _whole(client, "chat", "code").usage.prompt_tokens == 7  # the proxy still answers


BAD_STREAMS = [  # (the events, the client's stream_options, words of the error event)
    (["not json"], None, 'a stream event that is not JSON (got "not json")'),
    ([[1]], None, "a stream event that is not a JSON object"),
    ([{"id": "x"}], None, "a stream chunk whose choices are null"),
    ([{"choices": [{"index": 0, "delta": {"content": 7}}]}], None, "a content that is 7"),
    ([{"choices": [], "usage": {"prompt_tokens": "many", "completion_tokens": 1}}], None, 'prompt_tokens is "many"'),
    ([{"error": {"message": "out of memory"}}], None, 'an error in its stream ("out of memory")'),
    ([_chunk("hi", True, "stop")], {"include_usage": True}, "without the usage that stream_options asks for"),
]


@pytest.mark.parametrize(("sent", "options", "words"), BAD_STREAMS)
def test_a_malformed_expert_stream_is_a_502_error_event(proxy, scripted, sent, options, words):
    scripted.reply = lambda body: scripted.events(*sent)
    extra = {} if options is None else {"stream_options": options}
    with pytest.raises(openai.APIError) as caught:
        _stream_chunks(_client(proxy), "chat", "code", **extra)
    message = caught.value.body["message"]  # an error event, or the 502 itself when the first event is bad
    assert message.startswith("Expert 'code''s server") and words in message
    assert caught.value.body["code"] == "bad_expert_answer"


def test_a_remote_stream_asks_for_the_usage_counts_it_and_passes_it_on(proxy, scripted):
    def tokens() -> tuple[int, int]:
        return _tokens(httpx.get(f"{proxy.url}/metrics").text, "code")

    before = tokens()
    client = _client(proxy)
    plain = _stream_chunks(client, "chat", "code")
    assert scripted.bodies[-1]["stream_options"] == {"include_usage": True}  # asked even when the client did not
    assert [chunk.choices[0].delta.content for chunk in plain] == ["hi", " there"]
    with_usage = _stream_chunks(client, "completions", "code", stream_options={"include_usage": True})
    assert [chunk.choices[0].text for chunk in with_usage[:-1]] == ["hi", " there"]
    assert with_usage[-1].choices == [] and with_usage[-1].usage.prompt_tokens == 7
    assert with_usage[-1].usage.total_tokens == 9
    after = tokens()
    assert (after[0] - before[0], after[1] - before[1]) == (14, 4)
    _whole(client, "chat", "code")
    assert "stream_options" not in scripted.bodies[-1] and scripted.bodies[-1]["stream"] is False
