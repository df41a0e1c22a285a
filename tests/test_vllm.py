"""`ir3de serve --vllm-url` on a real vLLM engine, through the official `openai` client on loopback ports: routed and
forced chat, streaming with usage, ``/v1/route``, answers equal to vLLM called directly and to the local backend
(greedy, float32), an expert whose adapter the engine lacks gives a 503 naming it, and `VllmBackend` loads and
unloads an adapter in the running engine. The engine is started by ``ir3de vllm-command`` from the demo router
without 'fiction', the way an engine started before an expert was added looks.

The fast tests at the top check the launcher's refusals and the 503 against a scripted upstream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from cli_errors import refused
from ir3de_hf import ExpertSpec, IR3DERouterModel
from ir3de_hf.outputs import Decision
from ir3de_hf.serve.app import ServeSettings, create_app
from ir3de_hf.serve.backends import Job
from ir3de_hf.serve.backends.local import LocalBackend
from ir3de_hf.serve.backends.remote import RemoteBackend, RemoteEndpoint
from ir3de_hf.serve.backends.vllm import VllmBackend
from ir3de_hf.serve.decision import Decider
from ir3de_hf.serve.errors import ServeError
from ir3de_hf.serve.vllm_command import vllm_command
from test_serve import LoopbackServer, free_port
from vllm_server import VllmServer

LEGAL = "The Licensee shall not sublicense, sell or distribute the Software without the prior written consent of"
CODE = "def fibonacci(n):\n    if n < 2:\n        return n\n    return"
MISSING = "fiction"  # the demo expert the engine is started without
TOKENS = 12
NOT_LOADED = {"error": {"message": "The model `fiction` does not exist.", "type": "NotFoundError", "code": 404}}


def _chat(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


# ---------------------------------------------------------------------------------------------------- fast


def test_the_launcher_refuses_a_full_model_expert_naming_it(router_dir):
    router = IR3DERouterModel.from_pretrained(router_dir)
    with pytest.raises(ValueError, match=r"serves LoRA adapters of one base model; .*code.* not a LoRA adapter"):
        vllm_command(router)


def test_the_launcher_serves_each_adapter_under_its_name_with_their_rank_and_room_for_live_adds(router_dir, tmp_path):
    router = IR3DERouterModel.from_pretrained(router_dir)
    router.remove_expert("code")  # a full model: one engine serves the adapters of one base
    command = vllm_command(router, port=8123, python="/venv/bin/python")
    specs = {spec.name: spec for spec in router.config.expert_specs}
    modules = [f"{name}={Path(specs[name].source or '').resolve()}" for name in ("legal", "docs")]
    base = str(Path(specs["legal"].base_model or "").resolve())
    assert command.argv == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", base,
                            "--dtype", "float32", "--max-model-len", "2048", "--enable-lora", "--max-loras", "8",
                            "--max-lora-rank", "4", "--lora-modules", *modules,
                            "--host", "127.0.0.1", "--port", "8123"]  # fmt: skip
    assert command.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert command.shell().startswith("VLLM_CPU_KVCACHE_SPACE=")


def test_the_command_line_refuses_in_one_line(router_dir, tmp_path, capsys):
    line = refused(["vllm-command", str(router_dir), "--run"], 1, capsys)
    assert line.startswith("ir3de vllm-command: error: one vLLM engine serves LoRA adapters of one base model; code")
    router = IR3DERouterModel.from_pretrained(router_dir)
    router.remove_expert("code")
    router.save_pretrained(tmp_path / "adapters")
    line = refused(["vllm-command", str(tmp_path / "adapters"), "--python", "/no/venv/bin/python", "--run"], 1, capsys)
    hint = "no vLLM venv at /no/venv: run `make vllm` (scripts/setup_vllm.sh) or give --python"
    assert line == f"ir3de vllm-command: error: {hint}"
    line = refused(["serve", str(router_dir), "--vllm-url", "127.0.0.1:8100"], 2, capsys)
    assert line.endswith("argument --vllm-url: expected the vLLM engine's http(s) base URL, got '127.0.0.1:8100'")
    both = ["--vllm-url", "http://h/v1", "--expert-url", "code=http://h/v1"]
    line = refused(["serve", str(router_dir), *both], 2, capsys)
    assert line.endswith("argument --expert-url: not allowed with argument --vllm-url")


@pytest.fixture(scope="module")
def not_loaded():
    """An OpenAI server that answers every request as vLLM does for a model it has not loaded."""
    routes = [Route(f"/v1/{path}", lambda request: JSONResponse(NOT_LOADED, 404), methods=["POST"])
              for path in ("chat/completions", "completions")]  # fmt: skip
    server = LoopbackServer(Starlette(routes=routes))
    yield f"{server.url}/v1"
    server.stop()


async def _refusal(backend: RemoteBackend, stream: bool) -> ServeError:
    job = Job(Decision(MISSING, "forced"), 4, messages=_chat("x"), body={"messages": _chat("x"), "max_tokens": 4})
    with pytest.raises(ServeError) as caught:
        if stream:
            async for _ in backend.stream(job):
                pass
        else:
            await backend.complete(job)
    await backend.aclose()
    return caught.value


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_the_engine_has_not_loaded_is_a_503_naming_the_expert(not_loaded, stream):
    error = asyncio.run(_refusal(RemoteBackend({MISSING: RemoteEndpoint(not_loaded, MISSING)}, retries=0), stream))
    assert (error.status, error.code) == (503, "expert_unavailable")
    assert error.message == (
        f"Expert 'fiction' is not served by its server {not_loaded}: the engine has no model 'fiction' loaded; load "
        "its LoRA adapter (POST /v1/load_lora_adapter, or restart vLLM with the line `ir3de vllm-command` prints)."
    )


def test_experts_behind_expert_url_cannot_be_added_live(not_loaded):
    backend = RemoteBackend({MISSING: RemoteEndpoint(not_loaded, MISSING)})
    with pytest.raises(ServeError, match=r"cannot be added live.*--vllm-url") as caught:
        asyncio.run(backend.add_expert("new", ExpertSpec("new")))
    assert caught.value.status == 400


# ---------------------------------------------------------------------------------------------------- real vLLM


@pytest.fixture(scope="module")
def routers(tmp_path_factory) -> dict[str, Path]:
    """The saved demo router (what ir3de serve serves) and the same without 'fiction' (what the engine starts with).

    Their base model is a Hub id: the launcher finds it in the (throwaway) HF cache, seeded as `make setup` does."""
    from ir3de_hf.assets import seed_hf_cache
    from ir3de_hf.demo import load_demo_router

    seed_hf_cache(verify=False)
    root = tmp_path_factory.mktemp("vllm")
    load_demo_router().save_pretrained(root / "router")
    engine = IR3DERouterModel.from_pretrained(root / "router")
    engine.remove_expert(MISSING)
    engine.save_pretrained(root / "engine")
    return {"router": root / "router", "engine": root / "engine"}


@pytest.fixture(scope="module")
def engine(routers, tmp_path_factory):
    server = VllmServer(routers["engine"], tmp_path_factory.mktemp("vllm-log") / "vllm.log")
    print(f"\nvLLM served /v1/models {server.start_seconds:.1f} s after ir3de vllm-command --run")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(routers, engine, tmp_path_factory):
    """``ir3de serve ROUTER --vllm-url`` as a real process; its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    command = [sys.executable, "-m", "ir3de_hf", "serve", str(routers["router"]), "--vllm-url", engine.url]
    with log.open("w") as output:
        process = subprocess.Popen([*command, "--port", str(port)], stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)
    yield f"{url}/v1"
    process.terminate()
    process.wait(timeout=30)


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def _answer(base_url: str, model: str, content: str) -> tuple[str, str]:
    response = _client(base_url).chat.completions.create(
        model=model, messages=_chat(content), max_tokens=TOKENS, temperature=0
    )
    return response.model, response.choices[0].message.content or ""


@pytest.mark.slow
def test_a_routed_and_a_forced_chat_are_answered_by_the_experts_adapter_as_vllm_answers_it(proxy, engine):
    assert _answer(proxy, "ir3de", LEGAL) == ("legal", _answer(engine.url, "legal", LEGAL)[1])
    expert, text = _answer(proxy, "code", LEGAL)
    assert (expert, text) == ("code", _answer(engine.url, "code", LEGAL)[1]) and text
    assert httpx.post(f"{proxy}/route", json={"input": [LEGAL, CODE]}).json()["data"][1]["expert"] == "code"


@pytest.mark.slow
def test_a_stream_joins_to_the_whole_answer_and_reports_its_usage(proxy):
    client = _client(proxy)
    whole = client.chat.completions.create(model="ir3de", messages=_chat(CODE), max_tokens=TOKENS, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="ir3de",
            messages=_chat(CODE),
            max_tokens=TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {chunk.model for chunk in chunks} == {"code"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_greedy_answers_equal_the_local_backends(proxy, routers, endpoint):
    router = IR3DERouterModel.from_pretrained(routers["router"])
    local = LoopbackServer(create_app(Decider(router), LocalBackend(router, batch_wait_ms=0), ServeSettings()))
    try:
        answers = []
        for base_url in (proxy, f"{local.url}/v1"):
            client = _client(base_url)
            if endpoint == "chat":
                reply = client.chat.completions.create(
                    model="legal", messages=_chat(LEGAL), max_tokens=TOKENS, temperature=0
                )
                answers.append(reply.choices[0].message.content)
            else:
                answers.append(
                    client.completions.create(model="legal", prompt=LEGAL, max_tokens=TOKENS, temperature=0)
                    .choices[0]
                    .text
                )
    finally:
        local.stop()
    assert answers[0] == answers[1]


@pytest.mark.slow
def test_an_expert_the_engine_lacks_is_a_503_until_vllm_backend_loads_it_and_again_once_unloaded(
    proxy, engine, routers
):
    def missing() -> openai.APIStatusError:
        with pytest.raises(openai.APIStatusError) as caught:
            _answer(proxy, MISSING, LEGAL)
        return caught.value

    refused = missing()
    assert refused.status_code == 503
    assert "Expert 'fiction' is not served by its server" in refused.message
    spec = next(
        s for s in IR3DERouterModel.from_pretrained(routers["router"]).config.expert_specs if s.name == MISSING
    )

    async def edit(*steps: str) -> None:
        backend = VllmBackend(engine.url, ["code"])
        try:
            for step in steps:
                await (backend.add_expert(MISSING, spec) if step == "add" else backend.remove_expert(MISSING))
        finally:
            await backend.aclose()

    asyncio.run(edit("add", "add"))  # the second add finds it served: idempotent
    assert MISSING in {model["id"] for model in httpx.get(f"{engine.url}/models").json()["data"]}
    assert _answer(proxy, MISSING, LEGAL)[0] == MISSING
    asyncio.run(edit("remove", "remove"))  # unloading what is gone is fine
    assert missing().status_code == 503
