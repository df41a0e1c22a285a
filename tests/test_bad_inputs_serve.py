"""Bad input to `ir3de serve`: each request case gets the HTTP status and an OpenAI error body whose message names the
field and the problem (strict types, NaN and infinities, a too-deep body, lone surrogates, unknown models), and the
server still answers a good request afterwards; each command-line case is refused by the real CLI in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from ir3de_hf import IR3DERouterModel
from ir3de_hf.serve.app import ServeSettings, create_app
from ir3de_hf.serve.backends.local import LocalBackend
from ir3de_hf.serve.decision import Decider
from ir3de_hf.serve.live import content_id
from test_serve import KEY, PROMPTS, LoopbackServer, free_port

CHAT = {"model": "ir3de", "messages": [{"role": "user", "content": PROMPTS["code"]}], "max_tokens": 2}
TEXT = {"model": "ir3de", "prompt": PROMPTS["legal"], "max_tokens": 2}
ENDPOINTS = {
    "chat": ("/v1/chat/completions", CHAT),
    "text": ("/v1/completions", TEXT),
    "route": ("/v1/route", {"input": PROMPTS["docs"]}),
    "route chat": ("/v1/route", {"messages": CHAT["messages"]}),
}
DEEP = 100_000


def _body(base: dict[str, object], raw: dict[str, str]) -> str:
    """``base`` with some fields replaced by raw JSON text (``NaN`` and ``"\\ud800"`` as a client may send them)."""
    fields = {name: json.dumps(value) for name, value in base.items()} | raw
    return "{" + ", ".join(f"{json.dumps(name)}: {value}" for name, value in fields.items()) + "}"


def _user(content: str) -> str:
    return '[{"role": "user", "content": ' + content + "}]"


# (id, endpoint, fields replaced by raw JSON text, the field named as param, words of the message)
TYPE_CASES = [
    ("max_tokens true", "chat", {"max_tokens": "true"}, "max_tokens", "Input should be a valid integer (got true)"),
    ("max_tokens a string", "chat", {"max_tokens": '"3"'}, "max_tokens", 'Input should be a valid integer (got "3")'),
    ("max_tokens a float", "chat", {"max_tokens": "2.0"}, "max_tokens", "Input should be a valid integer (got 2.0)"),
    (
        "text max_tokens a string",
        "text",
        {"max_tokens": '"3"'},
        "max_tokens",
        'Input should be a valid integer (got "3")',
    ),
    (
        "max_completion_tokens a string",
        "chat",
        {"max_completion_tokens": '"4"'},
        "max_completion_tokens",
        'Input should be a valid integer (got "4")',
    ),
    ("stream yes", "chat", {"stream": '"yes"'}, "stream", 'Input should be a valid boolean (got "yes")'),
    ("stream 1", "chat", {"stream": "1"}, "stream", "Input should be a valid boolean (got 1)"),
    ("text stream a string", "text", {"stream": '"true"'}, "stream", 'Input should be a valid boolean (got "true")'),
    (
        "temperature a string",
        "chat",
        {"temperature": '"0.5"'},
        "temperature",
        'Input should be a valid number (got "0.5")',
    ),
    ("top_p a string", "text", {"top_p": '"1"'}, "top_p", 'Input should be a valid number (got "1")'),
    (
        "presence_penalty a bool",
        "chat",
        {"presence_penalty": "false"},
        "presence_penalty",
        "Input should be a valid number",
    ),
    ("n a float", "chat", {"n": "1.5"}, "n", "Input should be a valid integer (got 1.5)"),
    ("n true", "chat", {"n": "true"}, "n", "Input should be a valid integer (got true)"),
    ("model a number", "chat", {"model": "7"}, "model", "Input should be a valid string (got 7)"),
    (
        "content a number",
        "chat",
        {"messages": _user("5")},
        "messages.0.content",
        "Input should be a string, a list of content parts or null (got 5)",
    ),
    (
        "role a number",
        "chat",
        {"messages": '[{"role": 1, "content": "x"}]'},
        "messages.0.role",
        "Input should be 'system'",
    ),
    (
        "a text part without text",
        "chat",
        {"messages": _user('[{"type": "text", "text": 5}]')},
        "messages.0",
        'a text part needs "text", a string; got 5',
    ),
    ("messages an object", "chat", {"messages": '{"role": "user"}'}, "messages", "Input should be a valid list"),
    ("prompt a number", "text", {"prompt": "5"}, "prompt", "Input should be a string or a list of strings (got 5)"),
    ("prompt a list of numbers", "text", {"prompt": "[5]"}, "prompt", "Input should be a string or a list of strings"),
    ("stop a number", "chat", {"stop": "3"}, "stop", "Input should be a string, a list of strings or null (got 3)"),
    (
        "route input a number",
        "route",
        {"input": "5"},
        "input",
        "Input should be a string or a list of strings (got 5)",
    ),
    ("route model a number", "route", {"model": "3"}, "model", "Input should be a valid string (got 3)"),
    (
        "stream_options without stream",
        "chat",
        {"stream_options": '{"include_usage": true}'},
        "stream_options",
        "stream_options is only allowed when stream is true",
    ),
    (
        "text stream_options with stream false",
        "text",
        {"stream": "false", "stream_options": '{"include_usage": true}'},
        "stream_options",
        "stream_options is only allowed when stream is true",
    ),
]
FINITE = "must be a finite number between"
NUMBER_CASES = [
    (
        "temperature NaN",
        "chat",
        {"temperature": "NaN"},
        "temperature",
        "temperature must be a finite number between 0 and 2",
    ),
    ("temperature Infinity", "chat", {"temperature": "Infinity"}, "temperature", f"temperature {FINITE} 0 and 2"),
    ("temperature -Infinity", "chat", {"temperature": "-Infinity"}, "temperature", f"temperature {FINITE} 0 and 2"),
    ("temperature above 2", "chat", {"temperature": "2.5"}, "temperature", f"temperature {FINITE} 0 and 2 (got 2.5)"),
    ("text temperature NaN", "text", {"temperature": "NaN"}, "temperature", f"temperature {FINITE} 0 and 2 (got NaN)"),
    ("top_p NaN", "chat", {"top_p": "NaN"}, "top_p", f"top_p {FINITE} 0 and 1 (0 excluded)"),
    ("top_p Infinity", "text", {"top_p": "Infinity"}, "top_p", f"top_p {FINITE} 0 and 1 (0 excluded)"),
    ("top_p 0", "chat", {"top_p": "0"}, "top_p", f"top_p {FINITE} 0 and 1 (0 excluded) (got 0)"),
    ("presence_penalty NaN", "chat", {"presence_penalty": "NaN"}, "presence_penalty", f"{FINITE} -2 and 2"),
    ("frequency_penalty -Inf", "text", {"frequency_penalty": "-Infinity"}, "frequency_penalty", f"{FINITE} -2 and 2"),
    (
        "NaN in a forwarded field",
        "chat",
        {"logit_bias": '{"5": NaN}'},
        "logit_bias.5",
        "logit_bias.5 is NaN or infinite",
    ),
    (
        "Infinity as the seed",
        "text",
        {"seed": "Infinity"},
        "seed",
        "seed is NaN or infinite, which JSON has no place for; send a finite number.",
    ),
]
SURROGATE = "is not valid Unicode text (a lone surrogate"
TEXT_CASES = [
    (
        "a user message",
        "chat",
        {"messages": _user('"def \\ud800 x"')},
        "messages.0.content",
        "'\\ud800' at position 4",
    ),
    (
        "a text part",
        "chat",
        {"messages": _user('[{"type": "text", "text": "a\\udfff"}]')},
        "messages.0.content.0.text",
        "'\\udfff' at position 1",
    ),
    (
        "a system message",
        "chat",
        {"messages": '[{"role": "system", "content": "\\udc00"}, {"role": "user", "content": "def"}]'},
        "messages.0.content",
        "'\\udc00' at position 0",
    ),
    ("the model", "chat", {"model": '"ir3de\\ud800"'}, "model", "'\\ud800' at position 5"),
    ("a stop sequence", "chat", {"stop": '["\\ud800"]'}, "stop.0", "'\\ud800' at position 0"),
    ("a forwarded field", "chat", {"user": '"\\ud800"'}, "user", "'\\ud800' at position 0"),
    ("a key", "chat", {"\ud800": "1"}, "\\ud800", "'\\ud800' at position 0"),
    ("the prompt", "text", {"prompt": '"x \\ud800"'}, "prompt", "'\\ud800' at position 2"),
    ("a prompt in a list", "text", {"prompt": '["\\ud800"]'}, "prompt.0", "'\\ud800' at position 0"),
    ("a route input", "route", {"input": '"\\ud800"'}, "input", "'\\ud800' at position 0"),
    ("a route input in a list", "route", {"input": '["def", "\\udc00"]'}, "input.1", "'\\udc00' at position 0"),
    ("a routed chat", "route chat", {"messages": _user('"\\ud800"')}, "messages.0.content", "'\\ud800' at position 0"),
]


@pytest.fixture(scope="module")
def server(router_dir) -> Iterator[LoopbackServer]:
    router = IR3DERouterModel.from_pretrained(router_dir)
    backend = LocalBackend(router, max_batch_size=8, batch_wait_ms=0)
    served = LoopbackServer(create_app(Decider(router, name="tiny-router"), backend, ServeSettings(api_key=KEY)))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def _post(server: LoopbackServer, path: str, content: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    return httpx.post(f"{server.url}{path}", content=content.encode(), headers=headers, timeout=60)


def _refused(response: httpx.Response, status: int, words: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"], error["message"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert "Internal error" not in error["message"] and "Traceback" not in response.text


def _still_answers(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="ir3de", messages=[{"role": "user", "content": PROMPTS["legal"]}], max_tokens=2, temperature=0
    )
    assert answer.model == "legal" and answer.choices[0].message.content


@pytest.mark.parametrize(("case", "endpoint", "raw", "param", "words"), TYPE_CASES, ids=[c[0] for c in TYPE_CASES])
def test_a_field_of_the_wrong_type_is_refused_not_coerced(server, client, case, endpoint, raw, param, words):
    path, base = ENDPOINTS[endpoint]
    _refused(_post(server, path, _body(base, raw)), 422, f"Invalid request: {param}: {words}", param)
    _still_answers(client)


@pytest.mark.parametrize(("case", "endpoint", "raw", "param", "words"), NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_nan_infinities_and_out_of_range_numbers_say_the_range(server, client, case, endpoint, raw, param, words):
    path, base = ENDPOINTS[endpoint]
    response = _post(server, path, _body(base, raw))
    _refused(response, 422, words, param)
    assert "less than or equal" not in response.json()["error"]["message"]
    _still_answers(client)


@pytest.mark.parametrize(("case", "endpoint", "raw", "param", "where"), TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
def test_a_lone_surrogate_is_refused_naming_its_field(server, client, case, endpoint, raw, param, where):
    path, base = ENDPOINTS[endpoint]
    response = _post(server, path, _body(base, raw))
    _refused(response, 400, f"{param} {SURROGATE} {where}); send UTF-8 text.", param)
    _still_answers(client)


@pytest.mark.parametrize("endpoint", ["chat", "text", "route"])
def test_a_body_nested_100000_deep_is_a_clean_400(server, client, endpoint):
    path, base = ENDPOINTS[endpoint]
    deep = "[" * DEEP + "]" * DEEP
    response = _post(server, path, _body(base, {"extra" if endpoint != "route" else "input": deep}))
    _refused(response, 400, "nested too deeply", None)
    _still_answers(client)


def test_what_openai_accepts_is_still_accepted(server, client):
    """Integers for number fields, null for optional ones, a nested extra field a few hundred levels deep."""
    raw = {
        "temperature": "0",
        "top_p": "1",
        "presence_penalty": "-2",
        "stop": "null",
        "metadata": "[" * 300 + "]" * 300,
    }
    for endpoint in ("chat", "text"):
        path, base = ENDPOINTS[endpoint]
        response = _post(server, path, _body(base, raw))
        assert response.status_code == 200, response.text
        assert response.json()["model"] == ("code" if endpoint == "chat" else "legal")
    _still_answers(client)


# ---------------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize(("name", "parent"), [("ir3de", None), ("tiny-router", None), ("legal", "ir3de")])
def test_models_retrieve_answers_meta_models_and_experts(client, name, parent):
    model = client.models.retrieve(name)
    assert model.id == name and model.object == "model" and model.owned_by == "ir3de"
    assert (model.model_extra or {}).get("parent") == parent
    assert model.model_dump() in [entry.model_dump() for entry in client.models.list()]


@pytest.mark.parametrize("name", ["nope", "LEGAL", "org/legal"])
def test_models_retrieve_of_an_unknown_id_is_a_404_listing_the_models(server, client, name):
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve(name)
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert f"The model {name!r} does not exist" in error["message"]
    assert "'ir3de' to route" in error["message"] and "code, legal, docs" in error["message"]
    _still_answers(client)


# ---------------------------------------------------------------------------------------------------- the CLI


def _cli(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ir3de_hf", "serve", *arguments], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("port", ["70000", "65536", "0", "-1", "abc", "80.5"])
def test_a_bad_port_is_a_one_line_usage_error(router_dir, port):
    result = _cli(str(router_dir), "--port", port)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"ir3de serve: error: argument --port: expected a port from 1 to 65535, got {port!r}"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_an_open_server_other_machines_can_reach_is_refused(router_dir, host):
    result = _cli(str(router_dir), "--host", host, "--port", str(free_port()))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"ir3de serve: error: --host {host} can be reached from other machines and there is no --api-key, so anyone "
        "could use this server; give --api-key KEY, or --allow-unauthenticated to serve it open anyway."
    ]


def test_an_empty_api_key_is_refused(router_dir):
    result = _cli(str(router_dir), "--api-key", "", "--port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "ir3de serve: error: --api-key is empty; give a key clients will send as 'Authorization: Bearer KEY'."
    ]


def _start(router_dir: Path, *arguments: str) -> tuple[subprocess.Popen[str], int, list[str]]:
    """A real `ir3de serve` on a free port, once its "serving on" line is out: the process, its port, its lines."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ir3de_hf", "serve", str(router_dir), "--port", str(port), *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while not any("serving on" in line for line in lines):
        line = process.stderr.readline()
        assert line or process.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "ir3de serve did not start"
        lines.append(line.rstrip("\n"))
    return process, port, lines


@pytest.mark.parametrize(
    ("arguments", "warning"),
    [
        ((), "(this machine only)"),
        (("--host", "0.0.0.0", "--allow-unauthenticated"), "(--allow-unauthenticated)"),
        (("--host", "0.0.0.0", "--api-key", KEY), None),
    ],
    ids=["loopback without a key", "open with --allow-unauthenticated", "open with a key"],
)
def test_start_up_says_where_it_serves_and_warns_when_open(router_dir, arguments, warning):
    process, port, lines = _start(router_dir, *arguments)
    try:
        host = "0.0.0.0" if "--host" in arguments else "127.0.0.1"
        url = f"http://{host}:{port}/v1"
        version = content_id(router_dir)
        expected = [
            f"ir3de serve: serving on {url} (3 experts: code, legal, docs; backend local; router version {version})"
        ]
        if warning is not None:
            expected.insert(
                0,
                f"ir3de serve: warning: no --api-key: every endpoint is open to anyone who can reach {url} {warning}",
            )
        assert [line for line in lines if line.startswith("ir3de serve:")] == expected
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        assert [model.id for model in client.models.list()][:1] == ["ir3de"]
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---------------------------------------------------------------------------------------------------- ir3de demo


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow  # starts Gradio twice
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc (Linux)")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_ir3de_demo_stops_the_space_app_and_frees_its_port(router_dir, tmp_path, stop):
    port = free_port()
    env = {
        **os.environ,
        "IR3DE_ROUTER": str(router_dir),  # the tiny router: the fastest real start of the Space app
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_TEMP_DIR": str(tmp_path),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "ir3de_hf", "demo"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    tree = {process.pid}
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, "ir3de demo exited before serving"
            assert time.monotonic() < deadline, "the Space app did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        started = time.monotonic()
        tree |= _descendants(process.pid)
        process.send_signal(stop)
        process.wait(timeout=15)
        while any(_alive(pid) for pid in tree) and time.monotonic() < started + 15:
            time.sleep(0.1)
        assert not [pid for pid in tree if _alive(pid)], "a process of ir3de demo is still running"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # the port is free again
    finally:  # what a failed run left serving
        for pid in tree:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=15)
