"""`ir3de serve` through the official `openai` client on real loopback ports: routed and forced chat, streaming, text
completions, route-only, models, auth, limits, bad bodies, metrics, fallback, 50 concurrent requests, and the remote
backend proxying a second real `ir3de serve` (a subprocess) the way it proxies vLLM."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from ir3de_hf import IR3DERouterModel
from ir3de_hf.serve.app import ServeSettings, create_app
from ir3de_hf.serve.backends.local import LocalBackend
from ir3de_hf.serve.backends.remote import RemoteBackend, RemoteEndpoint, parse_expert_url
from ir3de_hf.serve.decision import Decider

PROMPTS = {
    "code": "def encode ( self , obj ) : return self . iterencode ( obj )",
    "legal": "Licensee agrees to be bound by the terms and conditions of this License Agreement",
    "docs": "The assert statement is a convenient way to insert debugging assertions into a program",
}
TOKENS = 6
KEY = "test-key"


class LoopbackServer:
    """An app served by uvicorn in a thread on a free loopback port."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def reference(router_dir) -> IR3DERouterModel:
    """A second copy of the router that answers in-process: what the server must reproduce."""
    return IR3DERouterModel.from_pretrained(router_dir)


def _serve(router_dir: Path, backend=None, **settings) -> tuple[LoopbackServer, LocalBackend | RemoteBackend]:
    router = IR3DERouterModel.from_pretrained(router_dir)
    fallback = settings.pop("fallback_expert", None)
    backend = backend or LocalBackend(router, max_batch_size=8, batch_wait_ms=20)
    decider = Decider(router, name="tiny-router", fallback_expert=fallback)
    return LoopbackServer(create_app(decider, backend, ServeSettings(**settings))), backend


@pytest.fixture(scope="module")
def served(router_dir):
    server, backend = _serve(router_dir, api_key=KEY, max_tokens_limit=32, max_request_bytes=20_000)
    yield server, backend
    server.stop()


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served[0].url}/v1", api_key=KEY, max_retries=0)


def _expected(reference, prompt: str, expert: str, **options) -> str:
    return reference.generate(prompt, expert=expert, max_new_tokens=TOKENS, do_sample=False, **options)[0].text


def _chat(client, model: str, prompt: str, **options):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=TOKENS, temperature=0, **options
    )


# ---------------------------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("expert", ["code", "legal", "docs"])
def test_routed_chat_answers_like_the_router_and_says_why(client, reference, expert):
    raw = _chat(client, "ir3de", PROMPTS[expert])
    response = raw.parse()
    assert response.model == expert
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content == _expected(reference, PROMPTS[expert], expert)
    decision = response.model_extra["ir3de"]
    routed = reference.route([PROMPTS[expert]])
    assert decision["expert"] == expert and decision["reason"] == "routed"
    assert decision["margin"] == pytest.approx(routed.margins[0].item())
    assert list(decision["probabilities"]) == ["code", "legal", "docs"]
    assert sum(decision["probabilities"].values()) == pytest.approx(1.0)
    assert decision["confident"] == bool(routed.confident[0])
    assert raw.headers["x-ir3de-expert"].startswith(f"{expert}; reason=routed; margin=")
    usage = response.usage
    assert usage.completion_tokens >= 1 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_the_router_name_routes_too_and_an_expert_name_forces(client, reference):
    assert _chat(client, "tiny-router", PROMPTS["legal"]).parse().model == "legal"
    raw = _chat(client, "docs", PROMPTS["legal"])
    response = raw.parse()
    assert response.model == "docs"
    assert response.model_extra["ir3de"] == {
        "expert": "docs",
        "reason": "forced",
        "margin": None,
        "probabilities": None,
        "confident": None,
        "router_version": raw.headers["x-ir3de-router-version"],
    }
    assert raw.headers["x-ir3de-expert"] == "docs; reason=forced"
    assert response.choices[0].message.content == _expected(reference, PROMPTS["legal"], "docs")


def test_a_chat_is_routed_on_its_last_user_message_and_answered_as_a_whole(client, reference):
    messages = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": PROMPTS["code"]},
        {"role": "assistant", "content": "It encodes."},
        {"role": "user", "content": PROMPTS["legal"]},
    ]
    response = client.chat.completions.create(model="ir3de", messages=messages, max_tokens=TOKENS, temperature=0)
    assert response.model == "legal"
    # the tiny tokenizer has no chat template: the turns are joined by blank lines, as the local backend documents
    conversation = "\n\n".join(message["content"] for message in messages)
    expected = _expected(reference, conversation, "legal", use_chat_template=False)
    assert response.choices[0].message.content == expected


def test_streamed_chat_equals_the_whole_answer_and_ends_with_done(served, client):
    whole = _chat(client, "ir3de", PROMPTS["code"]).parse().choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="ir3de",
            messages=[{"role": "user", "content": PROMPTS["code"]}],
            max_tokens=TOKENS,
            temperature=0,
            stream=True,
        )
    )
    assert {chunk.model for chunk in chunks} == {"code"}
    assert chunks[0].model_extra["ir3de"]["reason"] == "routed"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    body = {"model": "ir3de", "prompt": PROMPTS["docs"], "max_tokens": TOKENS, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{served[0].url}/v1/completions", json=body, headers=_auth()) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-ir3de-expert"].startswith("docs; reason=routed")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(event.startswith("data: ") for event in events)


def test_text_completions_route_and_send_the_prompt_as_it_is(client, reference):
    response = client.completions.create(model="ir3de", prompt=PROMPTS["code"], max_tokens=TOKENS, temperature=0)
    assert response.model == "code" and response.object == "text_completion"
    assert response.choices[0].text == _expected(reference, PROMPTS["code"], "code", use_chat_template=False)
    assert response.model_extra["ir3de"]["reason"] == "routed"
    streamed = client.completions.create(
        model="legal", prompt=[PROMPTS["code"]], max_tokens=TOKENS, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].text for chunk in streamed)
    assert text == _expected(reference, PROMPTS["code"], "legal", use_chat_template=False)


# ---------------------------------------------------------------------------------------------------- route, models


def test_route_only_gives_each_prompt_its_expert_and_probabilities(served, reference):
    url = f"{served[0].url}/v1/route"
    prompts = [PROMPTS["docs"], PROMPTS["code"], PROMPTS["legal"]]
    data = httpx.post(url, json={"input": prompts}, headers=_auth()).json()["data"]
    routed = reference.route(prompts)
    assert [item["expert"] for item in data] == ["docs", "code", "legal"]
    assert [item["index"] for item in data] == [0, 1, 2]
    for item, row in zip(data, routed.probabilities.tolist(), strict=True):
        assert list(item["probabilities"].values()) == pytest.approx(row)
    chat = {"messages": [{"role": "user", "content": PROMPTS["code"]}, {"role": "user", "content": PROMPTS["legal"]}]}
    assert httpx.post(url, json=chat, headers=_auth()).json()["data"][0]["expert"] == "legal"
    single = httpx.post(url, json={"input": PROMPTS["code"]}, headers=_auth()).json()
    assert single["model"] == "ir3de" and len(single["data"]) == 1


def test_models_lists_the_meta_model_and_every_expert(client):
    assert [model.id for model in client.models.list()] == ["ir3de", "tiny-router", "code", "legal", "docs"]


# ---------------------------------------------------------------------------------------------------- refusals


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def test_a_missing_or_wrong_key_is_401_and_health_stays_open(served):
    stranger = openai.OpenAI(base_url=f"{served[0].url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="Bearer"):
        stranger.models.list()
    response = httpx.post(f"{served[0].url}/v1/route", json={"input": "x"})  # no Authorization header at all
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    health = httpx.get(f"{served[0].url}/health").json()
    assert health == {
        "status": "ok",
        "backend": "local",
        "experts": ["code", "legal", "docs"],
        "router_version": health["router_version"],
    }
    assert len(health["router_version"]) == 12
    assert httpx.get(f"{served[0].url}/metrics").status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "does not exist"),
        ({"model": "ir3de", "messages": []}, 422, "messages"),
        ({"model": "ir3de", "messages": [{"role": "robot", "content": "hi"}]}, 422, "messages.0.role"),
        ({"model": "ir3de", "messages": [{"role": "user", "content": "x"}], "n": 2}, 422, "only n=1"),
        ({"model": "ir3de", "messages": [{"role": "user", "content": "x"}], "max_tokens": 33}, 400, "limit of 32"),
        ({"model": "ir3de", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 422, "max_tokens"),
        ({"model": "ir3de", "messages": [{"role": "user", "content": "x"}], "temperature": -1}, 422, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}]}, 422, "model: Field required"),
        ({"model": "ir3de", "messages": [{"role": "assistant", "content": "x"}]}, 400, "no user text"),
        ({"model": "ir3de", "messages": [{"role": "user", "content": "x"}], "stop": ["."]}, 400, "stop"),
        ({"model": "ir3de", "messages": [{"role": "user", "content": "[PAD] <s>"}]}, 400, "--fallback-expert"),
        (
            {"model": "ir3de", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            422,
            "only text content parts",
        ),
    ],
)
def test_bad_bodies_get_openai_errors_that_say_what_to_do(served, body, status, words):
    response = httpx.post(f"{served[0].url}/v1/chat/completions", json=body, headers=_auth())
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"] and error["type"]
    assert "Traceback" not in response.text


def test_size_json_and_path_refusals(served, client):
    url = served[0].url
    huge = {"model": "ir3de", "messages": [{"role": "user", "content": "word " * 5000}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=huge, headers=_auth())
    assert response.status_code == 413 and "limit of 20000 bytes" in response.json()["error"]["message"]
    response = httpx.post(f"{url}/v1/completions", content=b"{not json", headers=_auth())
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    response = httpx.post(f"{url}/v1/route", json={"input": "x", "messages": []}, headers=_auth())
    assert response.status_code == 422 and "exactly one" in response.json()["error"]["message"]
    response = httpx.post(f"{url}/v1/completions", json={"model": "ir3de", "prompt": ["a", "b"]}, headers=_auth())
    assert response.status_code == 422 and "one prompt per request" in response.json()["error"]["message"]
    response = httpx.get(f"{url}/v1/nothing", headers=_auth())
    assert response.status_code == 404 and response.json()["error"]["message"] == "GET /v1/nothing: Not Found"
    with pytest.raises(openai.BadRequestError, match="limit of 32"):
        client.completions.create(model="ir3de", prompt="x", max_tokens=100)


def test_metrics_count_requests_tokens_fallbacks_and_routing_time(router_dir):
    server, _ = _serve(router_dir, fallback_expert="docs")
    try:
        local = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        assert _chat(local, "ir3de", PROMPTS["legal"]).parse().model == "legal"
        unsure = _chat(local, "ir3de", "[PAD] <s>").parse()  # no usable token: the fallback answers
        assert unsure.model == "docs" and unsure.model_extra["ir3de"]["reason"] == "fallback"
        httpx.post(f"{server.url}/v1/chat/completions", json={"model": "nope", "messages": []})
        text = httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
    assert 'ir3de_requests_total{endpoint="chat",expert="legal",reason="routed"} 1' in text
    assert 'ir3de_requests_total{endpoint="chat",expert="docs",reason="fallback"} 1' in text
    assert 'ir3de_fallbacks_total{expert="docs"} 1' in text
    assert 'ir3de_errors_total{status="422"} 1' in text
    assert "ir3de_routing_seconds_count 2" in text
    assert 'ir3de_tokens_total{expert="legal",kind="completion"}' in text


def test_an_expert_without_a_model_is_refused_and_the_server_keeps_answering(router_dir, domain_texts):
    router = IR3DERouterModel.from_pretrained(router_dir)
    router.add_expert("notes", texts=domain_texts["docs"][:5])  # routing statistics only, no model
    server = LoopbackServer(create_app(Decider(router), LocalBackend(router)))
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError, match=r"No expert named 'notes' in the pool.*needs a source"):
                client.chat.completions.create(
                    model="notes", messages=[{"role": "user", "content": "x"}], max_tokens=2, stream=stream
                )
        assert _chat(client, "ir3de", PROMPTS["code"]).parse().model == "code"
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------- concurrency


def test_fifty_concurrent_requests_are_batched_and_answer_as_sequential_ones(served):
    server, backend = served
    prompts = [PROMPTS[name] + " " + str(i % 5) for i, name in enumerate(["code", "legal", "docs"] * 17)][:50]
    sync = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    sequential = [_chat(sync, "ir3de", prompt).parse() for prompt in prompts]
    before = Counter(backend.batch_sizes)

    async def all_at_once() -> list:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as client:
            calls = [
                client.chat.completions.create(
                    model="ir3de", messages=[{"role": "user", "content": p}], max_tokens=TOKENS, temperature=0
                )
                for p in prompts
            ]
            return await asyncio.gather(*calls)

    concurrent = asyncio.run(all_at_once())
    assert [r.model for r in concurrent] == [r.model for r in sequential]
    assert [r.choices[0].message.content for r in concurrent] == [r.choices[0].message.content for r in sequential]
    batches = backend.batch_sizes - before
    assert sum(size * count for size, count in batches.items()) == 50
    assert max(batches) > 1  # requests for one expert shared generate calls


def test_forced_routed_and_multi_turn_requests_for_one_base_share_a_window(router_dir, reference):
    """Adapters of one base in one batch window: the backend passes each job's expert to `generate` (no re-routing),
    one call per template choice; a request with another max_tokens is answered on its own, at its own limit."""
    backend = LocalBackend(IR3DERouterModel.from_pretrained(router_dir), max_batch_size=8, batch_wait_ms=500)
    server, _ = _serve(router_dir, backend=backend)
    turns = [
        {"role": "user", "content": PROMPTS["code"]},
        {"role": "assistant", "content": "It encodes."},
        {"role": "user", "content": PROMPTS["legal"]},
    ]
    chat = {"max_tokens": TOKENS, "temperature": 0}
    requests = [
        ("chat/completions", {"model": "legal", "messages": [{"role": "user", "content": PROMPTS["docs"]}], **chat}),
        ("chat/completions", {"model": "docs", "messages": turns, **chat}),
        ("completions", {"model": "ir3de", "prompt": PROMPTS["legal"], **chat}),
        ("completions", {"model": "docs", "prompt": PROMPTS["legal"], "max_tokens": 2, "temperature": 0}),
    ]
    expected = [
        _expected(reference, PROMPTS["docs"], "legal"),
        _expected(reference, "\n\n".join(turn["content"] for turn in turns), "docs", use_chat_template=False),
        _expected(reference, PROMPTS["legal"], "legal", use_chat_template=False),
        reference.generate(PROMPTS["legal"], expert="docs", max_new_tokens=2, do_sample=False)[0].text,
    ]

    async def all_at_once() -> list[dict]:
        async with httpx.AsyncClient(base_url=f"{server.url}/v1", timeout=60) as client:
            answers = await asyncio.gather(*(client.post(f"/{path}", json=body) for path, body in requests))
        return [answer.json() for answer in answers]

    try:  # the first routing is slow (warm-up): route once first, so that the four requests arrive together
        httpx.post(f"{server.url}/v1/route", json={"input": PROMPTS["legal"]}, timeout=60).raise_for_status()
        answers = asyncio.run(all_at_once())
    finally:
        server.stop()
    choices = [answer["choices"][0] for answer in answers]
    texts = [choice["message"]["content"] if "message" in choice else choice["text"] for choice in choices]
    assert [answer["model"] for answer in answers] == ["legal", "docs", "legal", "docs"]
    assert [answer["ir3de"]["reason"] for answer in answers] == ["forced", "forced", "routed", "forced"]
    assert texts == expected
    # the lone user turn (templated by generate) alone, the multi-turn chat and the routed completion together,
    # the max_tokens=2 completion alone
    assert backend.batch_sizes == Counter({1: 2, 2: 1})


# ---------------------------------------------------------------------------------------------------- remote


def test_expert_urls_parse_with_and_without_a_served_model_name():
    assert parse_expert_url("legal=http://127.0.0.1:8001/v1") == (
        "legal",
        RemoteEndpoint("http://127.0.0.1:8001/v1", "legal"),
    )
    assert parse_expert_url("legal=http://h:8001/v1/:legal-lora") == (
        "legal",
        RemoteEndpoint("http://h:8001/v1", "legal-lora"),
    )
    assert parse_expert_url("code=https://h:8000") == ("code", RemoteEndpoint("https://h:8000", "code"))
    for bad in ("legal", "legal=localhost:8000", "=http://h"):
        with pytest.raises(ValueError, match="NAME=BASE_URL"):
            parse_expert_url(bad)


@pytest.fixture(scope="module")
def backend_server(router_dir):
    """A second real `ir3de serve` (local backend, a subprocess) standing in for vLLM."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ir3de_hf", "serve", str(router_dir), "--port", str(port), "--batch-wait-ms", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "ir3de serve did not start"
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_the_proxy_answers_exactly_like_the_expert_server_behind_it(router_dir, backend_server):
    experts = {name: RemoteEndpoint(f"{backend_server}/v1", name) for name in PROMPTS}
    proxy, _ = _serve(router_dir, RemoteBackend(experts, timeout=60, retries=0))
    try:
        via_proxy = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)
        direct = openai.OpenAI(base_url=f"{backend_server}/v1", api_key="unused", max_retries=0)
        for expert, prompt in PROMPTS.items():
            proxied = _chat(via_proxy, "ir3de", prompt).parse()
            answered = _chat(direct, expert, prompt).parse()
            assert proxied.model == expert and proxied.model_extra["ir3de"]["reason"] == "routed"
            assert proxied.choices[0].message.content == answered.choices[0].message.content
            assert proxied.usage == answered.usage
            text = via_proxy.completions.create(model="ir3de", prompt=prompt, max_tokens=TOKENS, temperature=0)
            expected = direct.completions.create(model=expert, prompt=prompt, max_tokens=TOKENS, temperature=0)
            assert text.model == expert and text.choices[0].text == expected.choices[0].text
        options = {"messages": [{"role": "user", "content": PROMPTS["legal"]}], "max_tokens": TOKENS, "temperature": 0}
        streamed = list(via_proxy.chat.completions.create(model="ir3de", stream=True, **options))
        whole = direct.chat.completions.create(model="legal", **options).choices[0].message.content
        assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == whole
        assert {chunk.model for chunk in streamed} == {"legal"}
        with pytest.raises(openai.BadRequestError, match="server refused the request"):  # the expert's own 400
            via_proxy.chat.completions.create(model="ir3de", **{**options, "max_tokens": 64})
    finally:
        proxy.stop()


def test_an_unreachable_expert_is_503_for_that_expert_only(router_dir, backend_server):
    experts = {name: RemoteEndpoint(f"{backend_server}/v1", name) for name in PROMPTS}
    experts["legal"] = RemoteEndpoint(f"http://127.0.0.1:{free_port()}/v1", "legal")  # nobody listens there
    proxy, _ = _serve(router_dir, RemoteBackend(experts, timeout=10, retries=1))
    try:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            _chat(client, "ir3de", PROMPTS["legal"])
        assert caught.value.status_code == 503
        assert "Expert 'legal' is unavailable" in caught.value.message and "2 attempt(s)" in caught.value.message
        with pytest.raises(openai.InternalServerError, match="unavailable"):
            list(
                client.chat.completions.create(model="legal", messages=[{"role": "user", "content": "x"}], stream=True)
            )
        assert _chat(client, "ir3de", PROMPTS["code"]).parse().model == "code"
    finally:
        proxy.stop()


# ---------------------------------------------------------------------------------------------------- demo


@pytest.mark.slow
def test_the_demo_router_answers_chats_through_smollm2s_chat_template():
    from ir3de_hf.demo import load_demo_router

    router = load_demo_router()
    server = LoopbackServer(create_app(Decider(router, name="demo"), LocalBackend(router)))
    reference = load_demo_router()
    tokenizer = reference.expert_pool.get("legal").tokenizer
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        prompt = "The Licensee shall not sublicense the Software without"
        single = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": prompt}], max_tokens=4, temperature=0
        )
        assert single.model == "legal"
        expected = reference.generate(prompt, expert="legal", max_new_tokens=4, do_sample=False)[0].text
        assert single.choices[0].message.content == expected  # generate's own chat template
        turns = [
            {"role": "system", "content": "Answer as a lawyer."},
            {"role": "user", "content": prompt},
        ]
        chat = client.chat.completions.create(model="ir3de", messages=turns, max_tokens=4, temperature=0)
        rendered = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        assert "Answer as a lawyer." in rendered
        expected = reference.generate(
            rendered, expert="legal", max_new_tokens=4, do_sample=False, use_chat_template=False
        )
        assert chat.choices[0].message.content == expected[0].text
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_refuses_bad_serve_arguments_with_exit_2(router_dir):
    from ir3de_hf.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["serve", str(router_dir), "--expert-url", "legal=localhost:1"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["serve", str(router_dir), "--batch-wait-ms", "-3"])
    assert caught.value.code == 2
    missing = ["serve", str(router_dir), "--expert-url", "legal=http://127.0.0.1:1/v1"]
    assert main(missing) == 1  # code and docs have no server: refused before it listens
    assert main(["serve", str(router_dir), "--fallback-expert", "nope"]) == 1


def test_serve_help_is_fast_and_imports_no_server():
    code = "import sys; from ir3de_hf.cli import main\ntry: main(['serve', '--help'])\nexcept SystemExit: pass\n"
    code += "print(json.dumps(sorted(m for m in ('fastapi', 'uvicorn', 'torch') if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True)
    assert "--expert-url NAME=BASE_URL[:MODEL]" in result.stdout
    assert json.loads(result.stdout.splitlines()[-1]) == []
