"""Bad input to the Space's API: every refusal reaches the caller as a message naming the problem (never an empty
`error: null`), and leaves the state as it was.

The Space is launched once for the module, in-process, on a small router with the shape of the demo's: one-hot
features over the test word tokenizer (fast and accurate), experts ``code`` and ``legal`` backed by tiny Llama
models whose context is 64 tokens (so a `max_new_tokens` over an expert's context can be tested), and ``docs``
added from text (statistics, no model). Each case of the table goes through `gradio_client`, like a visitor's
script; after it, `/experts` and `/route` on a fixed prompt must answer exactly as before.
"""

from __future__ import annotations

import json
import math
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import matplotlib.figure  # noqa: F401  (settles matplotlib's config dir before a test watches the temp dir)
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "space_app"))

import app
import benchmark_eval
import endpoints
from router_snapshots import MAX_SESSION_BYTES, SessionRouters

from ir3de_hf import IR3DERouterModel

pytestmark = pytest.mark.slow

PUBLIC = {"/route", "/generate", "/chat", "/add_expert", "/remove_expert", "/reset", "/experts", "/evaluate"}
CONTEXT = 64  # max_position_embeddings of conftest's tiny Llama, the model behind experts code and legal


@dataclass
class Space:
    url: str
    client: Client
    routers: SessionRouters
    prompt: str  # the fixed prompt whose /route answer must never change
    experts: dict[str, Any]  # /experts and /route as the Space started
    route: dict[str, Any]
    uploads: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def space(tmp_path_factory, _word_tokenizer, domain_texts, expert_dirs) -> Iterator[Space]:
    router = IR3DERouterModel.from_encoder(
        torch.nn.Embedding.from_pretrained(torch.eye(len(_word_tokenizer))), _word_tokenizer
    )
    router.add_expert("code", texts=domain_texts["code"][::2], source=str(expert_dirs["base"]))
    router.add_expert("legal", texts=domain_texts["legal"][::2], source=str(expert_dirs["twin"]))
    router.add_expert("docs", texts=domain_texts["docs"][::2])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        routers = SessionRouters(lambda: router)
        demo = app.build_demo(routers)
        options = {"server_name": "127.0.0.1", "server_port": _free_port(), "quiet": True, **app.launch_options()}
        _, url, _ = demo.queue().launch(prevent_thread_lock=True, **options)
        try:
            client = Client(url, verbose=False)
            prompt = domain_texts["code"][1]
            experts = client.predict(api_name="/experts")
            route = client.predict(prompt, api_name="/route")
            assert [row["name"] for row in experts["experts"]] == ["code", "legal", "docs"]
            assert route["expert"] == "code"
            yield Space(url, client, routers, prompt, experts, route, tmp_path_factory.mktemp("uploads"))
        finally:
            demo.close()


@pytest.fixture(autouse=True)
def _starting_router(space: Space) -> None:
    for session in space.routers.sessions:
        space.routers.end(session)


def _assert_state_unchanged(space: Space) -> None:
    assert space.client.predict(api_name="/experts") == space.experts
    assert space.client.predict(space.prompt, api_name="/route") == space.route


# ------------------------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Upload:
    """A file the case uploads (with `handle_file`, as a visitor's script does)."""

    name: str
    content: bytes


PROMPT = "def parse(value):\n    return json.loads(value)"
TOO_LONG = "a" * (endpoints.MAX_PROMPT_CHARS + 1)
WORDS = b"the quick brown fox jumps over the lazy dog\n"
# (id, api_name, arguments, exception the client raises, regular expression its message must match)
CASES: list[tuple[str, str, tuple[Any, ...], type[Exception], str]] = [
    ("route-without-arguments", "/route", (), AppError, r"^Type a prompt first\.$"),
    ("route-blank-prompt", "/route", (" \n\t ",), AppError, r"^Type a prompt first\.$"),
    ("route-prompt-over-limit", "/route", (TOO_LONG,), AppError, r"4,001 characters; the Space takes at most 4,000"),
    ("route-prompt-not-text", "/route", (123,), AppError, r"prompt must be text \(a string\), got int 123"),
    ("generate-without-arguments", "/generate", (), AppError, r"^Type a prompt first\.$"),
    ("generate-prompt-over-limit", "/generate", (TOO_LONG, "", 8), AppError, r"at most 4,000"),
    # gradio_client refuses to send NaN (JSON has no NaN); test_raw_json_... sends it to the server
    ("max-new-tokens-nan", "/generate", (PROMPT, "", math.nan), ValueError, r"Out of range float values"),
    ("max-new-tokens-string", "/generate", (PROMPT, "", "abc"), AppError, r"number of tokens, got str 'abc'"),
    ("max-new-tokens-digits", "/generate", (PROMPT, "", "32"), AppError, r"number of tokens, got str '32'"),
    ("max-new-tokens-bool", "/generate", (PROMPT, "", True), AppError, r"number of tokens, got bool True"),
    ("max-new-tokens-zero", "/generate", (PROMPT, "", 0), AppError, r"between 1 and 256, got 0\.$"),
    ("max-new-tokens-negative", "/generate", (PROMPT, "", -5), AppError, r"between 1 and 256, got -5\.$"),
    ("max-new-tokens-fraction", "/generate", (PROMPT, "", 2.5), AppError, r"whole number of tokens, got 2\.5"),
    ("max-new-tokens-huge", "/generate", (PROMPT, "", 10**400), AppError, r"between 1 and 256, got 10+\.\.\."),
    ("max-new-tokens-over-app-limit", "/generate", (PROMPT, "", 257), AppError, r"between 1 and 256, got 257"),
    (
        "max-new-tokens-over-context",
        "/generate",
        (PROMPT, "code", CONTEXT),
        AppError,
        rf"'code' has a context of {CONTEXT} tokens.*at most {CONTEXT - 1} new tokens",
    ),
    ("temperature-negative", "/generate", (PROMPT, "", 8, -1, 1), AppError, r"between 0 \(greedy\) and 2, got -1\.$"),
    ("temperature-too-high", "/generate", (PROMPT, "", 8, 2.5, 1), AppError, r"between 0 \(greedy\) and 2, got 2\.5"),
    ("temperature-string", "/generate", (PROMPT, "", 8, "0.7", 1), AppError, r"temperature must be a number, got str"),
    ("temperature-bool", "/generate", (PROMPT, "", 8, True, 1), AppError, r"temperature must be a number, got bool"),
    (
        "top-p-zero",
        "/generate",
        (PROMPT, "", 8, 0.7, 0),
        AppError,
        r"top_p must be greater than 0 and at most 1, got 0",
    ),
    ("top-p-over-one", "/generate", (PROMPT, "", 8, 0.7, 1.5), AppError, r"at most 1, got 1\.5"),
    ("top-p-none", "/generate", (PROMPT, "", 8, 0.7, None), AppError, r"top_p must be a number, got NoneType"),
    ("chat-without-arguments", "/chat", (), AppError, r"^Type a prompt first\.$"),
    ("chat-message-not-text", "/chat", (123,), AppError, r"prompt must be text \(a string\), got int 123"),
    ("chat-message-over-limit", "/chat", (TOO_LONG,), AppError, r"at most 4,000"),
    ("chat-max-new-tokens-fraction", "/chat", (PROMPT, 2.5), AppError, r"whole number of tokens, got 2\.5"),
    ("chat-temperature-string", "/chat", (PROMPT, 8, "hot", 1), AppError, r"temperature must be a number, got str"),
    ("chat-top-p-negative", "/chat", (PROMPT, 8, 0.5, -0.1), AppError, r"at most 1, got -0\.1"),
    (
        "chat-max-new-tokens-over-context",
        "/chat",
        (PROMPT, CONTEXT),
        AppError,
        rf"'code' has a context of {CONTEXT} tokens.*at most {CONTEXT - 1} new tokens",
    ),
    ("generate-unknown-expert", "/generate", (PROMPT, "nosuch", 8), AppError, r"No expert named 'nosuch'; the"),
    ("generate-expert-not-text", "/generate", (PROMPT, 5, 8), AppError, r"expert to answer must be a string"),
    ("generate-text-only-expert", "/generate", (PROMPT, "docs", 8), AppError, r"'docs' was added from text"),
    ("add-without-arguments", "/add_expert", (), AppError, r"Give the new expert a name"),
    ("add-invalid-name", "/add_expert", ("has space", "some words", None), AppError, r"Invalid expert name"),
    ("add-existing-name", "/add_expert", ("code", "some words", None), AppError, r"already exists"),
    ("add-name-not-text", "/add_expert", (7, "some words", None), AppError, r"name must be a string, got int 7"),
    ("add-without-text", "/add_expert", ("new", None, None), AppError, r"Give expert 'new' some text"),
    ("add-blank-text", "/add_expert", ("new", " \n\t ", None), AppError, r"Give expert 'new' some text"),
    ("add-text-not-text", "/add_expert", ("new", 42, None), AppError, r"text must be a string, got int 42"),
    (
        "upload-blank-txt",
        "/add_expert",
        ("new", "", Upload("blank.txt", b" \n\t \n")),
        AppError,
        r"blank\.txt has no text \(it is empty or only whitespace\)",
    ),
    ("upload-empty-txt", "/add_expert", ("new", "", Upload("empty.txt", b"")), AppError, r"empty\.txt has no text"),
    (
        "upload-blank-jsonl",
        "/add_expert",
        ("new", "", Upload("blank.jsonl", b'{"text": "  "}\n\n{"text": ""}\n')),
        AppError,
        r"blank\.jsonl has no text",
    ),
    (
        "upload-not-utf8",
        "/add_expert",
        ("new", "", Upload("latin1.txt", "café au lait, crème brûlée".encode("latin-1"))),
        AppError,
        r"latin1\.txt is not UTF-8 text",
    ),
    (
        "upload-wrong-type",
        "/add_expert",
        ("new", "", Upload("table.csv", b"text\nhello\n")),
        AppError,
        r"table\.csv: upload a \.txt file or a \.jsonl file",
    ),
    (
        "upload-bad-jsonl-line",
        "/add_expert",
        ("new", "", Upload("bad.jsonl", b'{"text": "fine"}\nnot json\n')),
        AppError,
        r"bad\.jsonl, line 2: not JSON",
    ),
    (
        "upload-over-expert-limit",
        "/add_expert",
        ("new", "", Upload("big.txt", WORDS * 60_000)),  # 2.6 MB: Gradio takes it, the Space does not
        AppError,
        r"big\.txt has 2,640,000 bytes; an expert added here takes at most 2,000,000",
    ),
    (
        "upload-over-gradio-limit",
        "/add_expert",
        ("new", "", Upload("huge.txt", WORDS * 150_000)),  # 6.6 MB: over max_file_size, refused before uploading
        ValueError,
        r"huge\.txt exceeds the maximum file size of 6000000 bytes",
    ),
    (
        "upload-path-not-a-file",
        "/add_expert",
        ("new", "", "notes.txt"),  # a bare path instead of handle_file(path): Gradio itself refuses it
        AppError,
        r"validation error for FileData",
    ),
    ("remove-without-arguments", "/remove_expert", (), AppError, r"Name the expert to remove; the experts are: code"),
    ("remove-unknown-expert", "/remove_expert", ("nosuch",), AppError, r"No expert named 'nosuch'"),
    ("remove-name-not-text", "/remove_expert", (5,), AppError, r"expert to remove must be a string, got int 5"),
]


def _argument(space: Space, value: Any) -> Any:
    if isinstance(value, Upload):
        path = space.uploads / value.name
        path.write_bytes(value.content)
        return handle_file(str(path))
    return value


@pytest.mark.parametrize(
    ("api_name", "arguments", "error", "message"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_with_a_message_and_changes_nothing(space, api_name, arguments, error, message) -> None:
    with pytest.raises(error, match=message) as caught:
        space.client.predict(*[_argument(space, value) for value in arguments], api_name=api_name)
    assert "has not enabled verbose error reporting" not in str(caught.value)  # what `error: null` becomes
    _assert_state_unchanged(space)


def test_the_table_has_twenty_distinct_cases() -> None:
    ids = [case[0] for case in CASES]
    assert len(set(ids)) == len(ids) >= 20
    assert len({(case[1], repr(case[2])) for case in CASES}) == len(CASES)


def test_good_input_still_passes_the_checks(space: Space, domain_texts) -> None:
    """The controls: an uploaded .jsonl adds an expert through the unprocessed file payload, and a whole float
    (what a slider may send) or the largest count that fits the expert's context generates."""
    upload = space.uploads / "cooking.jsonl"
    upload.write_text("".join(json.dumps({"text": text}) + "\n" for text in domain_texts["docs"][::2]))
    table = space.client.predict("cooking", "", handle_file(str(upload)), api_name="/add_expert")
    assert table["experts"][-1]["name"] == "cooking" and table["experts"][-1]["tokens"] > 1000
    assert isinstance(space.client.predict(PROMPT, "code", 4.0, api_name="/generate"), str)
    assert isinstance(space.client.predict(PROMPT, "legal", CONTEXT - 1, api_name="/generate"), str)
    assert isinstance(space.client.predict(PROMPT, "code", 4, 0.7, 0.9, api_name="/generate"), str)
    assert space.client.predict(PROMPT, 4, 1.0, 0.5, api_name="/chat").startswith("Routed to **code** · margin ")
    docs = space.client.predict(domain_texts["docs"][1], 4, api_name="/chat")  # routes to an expert with no model
    assert docs.startswith("Routed to **docs**") and "'docs' was added from text" in docs


def _raw_call(space: Space, api_name: str, body: str) -> tuple[str, Any]:
    """POSTs ``body`` as it is to the Space's HTTP API (what gradio_client cannot send) and returns the final event
    of the answer stream: ``("complete", data)`` or ``("error", the error message)``."""
    started = httpx.post(
        f"{space.url}gradio_api/call{api_name}", content=body, headers={"content-type": "application/json"}
    )
    started.raise_for_status()
    stream = httpx.get(f"{space.url}gradio_api/call{api_name}/{started.json()['event_id']}", timeout=60)
    event = data = None
    for line in stream.text.splitlines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event in ("complete", "error"):
            data = json.loads(line.removeprefix("data: "))
    assert event in ("complete", "error"), stream.text
    return event, data


@pytest.mark.parametrize(
    ("api_name", "body", "message"),
    [
        ("/generate", '{"data": ["def f(x):", "", NaN, 0, 1]}', r"whole number of tokens, got nan"),
        ("/generate", '{"data": ["def f(x):", "", Infinity, 0, 1]}', r"whole number of tokens, got inf"),
        ("/generate", '{"data": ["def f(x):", "", 8, NaN, 1]}', r"temperature must be a finite number, got nan"),
        ("/generate", '{"data": ["def f(x):", "", 8, 0.5, -Infinity]}', r"top_p must be a finite number, got -inf"),
        ("/chat", '{"data": ["def f(x):", 8, Infinity, 1]}', r"temperature must be a finite number, got inf"),
        ("/route", '{"data": ["abc \\ud800 def"]}', r"prompt is not valid Unicode text \(a lone surrogate at"),
        ("/route", '{"data": []}', r"didn't receive enough input values \(needed: 1, got: 0\)"),
        # a raw call names every input: the sampling settings too (gradio_client fills in their defaults)
        ("/generate", '{"data": ["def f(x):", "", 8]}', r"didn't receive enough input values \(needed: 5, got: 3\)"),
    ],
    ids=[
        "nan",
        "infinity",
        "temperature-nan",
        "top-p-infinity",
        "chat-infinity",
        "lone-surrogate",
        "no-data",
        "short",
    ],
)
def test_raw_json_the_client_cannot_send_is_refused_with_a_message(space, api_name, body, message) -> None:
    event, error = _raw_call(space, api_name, body)
    assert event == "error" and error is not None and error["error"] is not None
    assert re.search(message, error["error"]), error
    _assert_state_unchanged(space)


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ("notalist", r"must be a list of messages, got str 'notalist': send a list of \{'role'"),
        ({"role": "user", "content": "hi"}, r"must be a list of messages, got dict"),
        (["hello", "hi"], r"history's message 0 must be an object with a 'role' of 'user', 'assistant' or 'system'"),
        ([{"role": "robot", "content": "beep"}], r"history's message 0 must be an object with a 'role'.*got dict"),
    ],
    ids=["a-string", "one-message", "strings", "unknown-role"],
)
def test_a_chat_history_that_is_not_a_list_of_messages_is_refused(space: Space, history, message) -> None:
    """/chat keeps the conversation in the session's state (what the page and gradio_client never send); the event
    function still refuses a history that is not a list of messages instead of reading a string by character."""
    (chat,) = [fn.fn for fn in app.build_demo(space.routers).fns.values() if fn.api_name == "chat"]
    assert chat is not None
    with pytest.raises(gr.Error, match=message):
        next(chat(PROMPT, 8, 0.0, 1.0, history))
    _assert_state_unchanged(space)


# ---------------------------------------------------------------------------------------------- private events


def test_only_the_seven_endpoints_are_listed(space: Space) -> None:
    api = Client(space.url, verbose=False).view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == PUBLIC
    assert api["unnamed_endpoints"] == {}
    for dependency in space.client.config["dependencies"]:
        public = f"/{dependency['api_name']}" in PUBLIC and dependency["api_visibility"] == "public"
        assert public or dependency["api_visibility"] == "private", dependency["api_name"]


def test_private_events_cannot_be_called(space: Space) -> None:
    """gradio_client refuses them by index and by name. (Gradio's server still runs a private event for the page
    that needs it; each one either only renders or checks its input through `endpoints`.)"""
    private = [d for d in space.client.config["dependencies"] if d["api_visibility"] == "private"]
    names = {dependency["api_name"] for dependency in private}
    assert {"show_decision", "routed_answer", "compare", "render_experts", "load_example", "_submit_fn"} <= names
    for dependency in private:
        with pytest.raises(ValueError, match="Invalid function index"):
            space.client.predict(space.prompt, fn_index=dependency["id"])
        with pytest.raises(ValueError, match="Cannot find a function with `api_name`"):
            space.client.predict(space.prompt, api_name=f"/{dependency['api_name']}")
    _assert_state_unchanged(space)


PAGE_EVENTS = ["show_decision", "render_route", "routed_answer", "compare", "chat_page", "render_experts", "nosuch"]


@pytest.mark.parametrize("name", PAGE_EVENTS)
def test_page_events_cannot_be_called_by_name_over_http(space: Space, name: str) -> None:
    """What gradio_client refuses, Gradio's server would still run when a raw HTTP call names it (a raw error,
    ``"'confidence'"``, or a bare 500): the Space answers 404 with its endpoints instead, and runs nothing."""
    answer = httpx.post(f"{space.url}gradio_api/call/{name}", json={"data": [{"not": "a route"}]})
    assert answer.status_code == 404, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith(f"No API endpoint named /{name}: the Space's endpoints are /route, /generate, ")
    assert "/evaluate" in detail and "page's own events" in detail
    _assert_state_unchanged(space)


@pytest.mark.parametrize(
    "route", ["call/v2/show_decision", "api/show_decision/", "run/routed_answer", "call/chat_page/"]
)
def test_every_route_by_name_refuses_page_events(space: Space, route: str) -> None:
    answer = httpx.post(f"{space.url}gradio_api/{route}", json={"data": []})
    assert answer.status_code == 404 and "No API endpoint named /" in answer.json()["detail"], answer.text
    _assert_state_unchanged(space)


def test_the_page_still_calls_its_unqueued_events_by_index(space: Space) -> None:
    """Gradio's JS client posts an event that skips the queue to /run/predict with its index: not refused."""
    (clear,) = [d for d in space.client.config["dependencies"] if d["api_name"] == "_clear_and_save_textbox"]
    assert clear["queue"] is False and clear["api_visibility"] == "private"
    body = {"data": ["a message"], "fn_index": clear["id"], "session_hash": "page"}
    answer = httpx.post(f"{space.url}gradio_api/run/predict", json=body)
    assert answer.status_code == 200 and answer.json()["data"][0]["value"] == "", answer.text  # the textbox cleared


def test_public_endpoints_are_still_called_over_http(space: Space) -> None:
    event, data = _raw_call(space, "/route", json.dumps({"data": [space.prompt]}))
    assert event == "complete" and data[0]["expert"] == space.route["expert"]


# --------------------------------------------------------------------------------------------- evicted sessions


def test_an_evicted_session_is_told_on_its_next_call_and_gets_the_starting_router(space: Space, domain_texts) -> None:
    """Sessions are bounded by bytes: when other visitors' edits evict a session, its next call (any endpoint) says
    why, once, and the session then sees the starting router; the others keep their edits."""
    words = " ".join(domain_texts["docs"][::2])
    clients = [Client(space.url, verbose=False) for _ in range(3)]
    try:
        clients[0].predict("cooking", words, None, api_name="/add_expert")
        one = space.routers.held_bytes
        space.routers.max_bytes = 2 * one + one // 2  # room for two sessions with an added expert
        for client in clients[1:]:
            client.predict("cooking", words, None, api_name="/add_expert")
        assert space.routers.sessions == [client.session_hash for client in clients[1:]]
        with pytest.raises(AppError, match=r"^Your session's edits were cleared: .* MB in all, and yours was the"):
            clients[0].predict(space.prompt, api_name="/route")
        assert clients[0].predict(api_name="/experts") == space.experts
        assert clients[0].predict(space.prompt, api_name="/route") == space.route
        for client in clients[1:]:
            assert client.predict(api_name="/experts")["experts"][-1]["name"] == "cooking"
    finally:
        space.routers.max_bytes = MAX_SESSION_BYTES
        for client in clients:
            client.close()


def test_an_edit_over_the_byte_bound_is_refused_and_changes_nothing(space: Space, domain_texts) -> None:
    space.routers.max_bytes = 10_000
    try:
        with pytest.raises(AppError, match=r"would make your session's router hold [\d.,]+ MB, more than the 0\.0 MB"):
            space.client.predict("cooking", " ".join(domain_texts["docs"][::2]), None, api_name="/add_expert")
    finally:
        space.routers.max_bytes = MAX_SESSION_BYTES
    assert space.routers.sessions == []
    _assert_state_unchanged(space)


# ------------------------------------------------------------------------------------------- /evaluate cleanup


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """The process's temporary directory (tempfile.gettempdir()) for one test; Gradio's cache stays elsewhere."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_evaluate_removes_its_temporary_directory(space: Space, scratch: Path) -> None:
    # download_files=False: a downloading client would leave an empty folder of its own in the same temp dir
    client = Client(space.url, verbose=False, download_files=False)
    summary, image, recall, _ = client.predict(api_name="/evaluate")
    assert "2,400 prompts (3 experts)" in summary and [row[0] for row in recall["data"]]
    served = Path(image["path"])  # the PNG is served from Gradio's cache, not from the call's own folder
    assert served.suffix == ".png" and served.stat().st_size > 5_000 and not served.is_relative_to(scratch)
    assert list(scratch.iterdir()) == []


def test_a_failed_evaluate_removes_its_temporary_directory(space: Space, scratch: Path, monkeypatch) -> None:
    seen: list[Path] = []

    def fail_midway(report: Any, path: Path, title: str = "") -> Path:
        seen.append(Path(path).parent)
        Path(path).write_bytes(b"half a PNG")
        raise OSError("No space left on device")

    monkeypatch.setattr(benchmark_eval, "plot_confusion_matrix", fail_midway)
    with pytest.raises(AppError, match="No space left on device"):  # show_error: the message, not `error: null`
        space.client.predict(api_name="/evaluate")
    assert len(seen) == 1 and seen[0].parent == scratch and seen[0].name.startswith("ir3de-eval-")
    assert list(scratch.iterdir()) == []
    _assert_state_unchanged(space)
