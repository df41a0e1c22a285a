"""Live edits on a running `ir3de serve` (the admin API, local backend, tiny router, real uvicorn on loopback): an
added expert is routed to, forced and answered, and persisted; a removed one is gone from routing, forcing and
/v1/models at once while its request in flight completes; every refusal (auth, bad bodies, conflicts) is an OpenAI
error body and leaves the served version and the directory as they were."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch

from cli_errors import directory_digest
from ir3de_hf import IR3DERouterModel
from ir3de_hf.serve.app import ServeSettings, create_app
from ir3de_hf.serve.backends.local import LocalBackend
from ir3de_hf.serve.live import LiveRouter, content_id
from test_serve import KEY, PROMPTS, LoopbackServer

ADMIN = "admin-key"
LIMIT = 4000


@pytest.fixture(scope="module")
def two_experts_dir(_word_tokenizer, domain_texts, expert_sources, tmp_path_factory) -> Path:
    """A saved router with 'code' and 'legal' (the serve tests' experts): 'docs' is added live."""
    one_hot = torch.nn.Embedding.from_pretrained(torch.eye(len(_word_tokenizer)))
    router = IR3DERouterModel.from_encoder(one_hot, _word_tokenizer)
    for name in ("code", "legal"):
        router.add_expert(name, texts=domain_texts[name], **expert_sources[name])
    directory = tmp_path_factory.mktemp("admin") / "router"
    router.save_pretrained(directory)
    return directory


class Served:
    """An editable server of a copy of a router directory: its URL, directory, an admin and an OpenAI client."""

    def __init__(
        self,
        source: Path,
        tmp_path: Path,
        admin_key: str | None = ADMIN,
        api_key: str | None = None,
        fallback_expert: str | None = None,
    ):
        self.directory = tmp_path / "router"
        shutil.copytree(source, self.directory)
        router = IR3DERouterModel.from_pretrained(self.directory)
        backend = LocalBackend(router, batch_wait_ms=0)
        live = LiveRouter(
            router,
            backend,
            name="router",
            fallback_expert=fallback_expert,
            directory=self.directory,
            watch_interval=0.2,
        )
        settings = ServeSettings(api_key=api_key, admin_key=admin_key, max_tokens_limit=LIMIT)
        self.server = LoopbackServer(create_app(live, backend, settings))
        self.url = self.server.url
        self.admin = httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=120)
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key=api_key or "none", max_retries=0)

    def experts(self) -> list[str]:
        return [expert["name"] for expert in self.admin.get("/v1/experts").json()["data"]]

    def version(self) -> str:
        return httpx.get(self.url + "/health").json()["router_version"]

    def state(self) -> tuple[list[str], str, list[str], dict[str, str]]:
        """What a refused edit must leave unchanged: the experts served, the version, the models and the files."""
        models = [model.id for model in self.client.models.list()]
        return self.experts(), self.version(), models, directory_digest(self.directory)

    def close(self) -> None:
        self.admin.close()
        self.server.stop()


@pytest.fixture
def served(two_experts_dir, tmp_path) -> Iterator[Served]:
    server = Served(two_experts_dir, tmp_path)
    yield server
    server.close()


def _route(served: Served, prompt: str) -> str:
    return served.admin.post("/v1/route", json={"input": prompt}).json()["data"][0]["expert"]


def _chat(client: openai.OpenAI, model: str, prompt: str, tokens: int = 4):
    messages = [{"role": "user", "content": prompt}]
    return client.chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=tokens)


def test_an_added_expert_is_routed_forced_answered_and_saved(served, domain_texts, expert_sources, router_dir):
    before = served.version()
    assert served.experts() == ["code", "legal"] and _route(served, PROMPTS["docs"]) != "docs"
    body = {"name": "docs", "texts": domain_texts["docs"], "description": "Python reference prose"}
    response = served.admin.post("/v1/experts", json=body | expert_sources["docs"])
    assert response.status_code == 201, response.text
    version = response.json()["router_version"]
    assert response.json() == {"object": "expert", "name": "docs", "router_version": version}
    assert version != before and version == served.version() == content_id(served.directory)

    listed = served.admin.get("/v1/experts").json()
    assert listed["router_version"] == version
    assert [(e["name"], e["description"]) for e in listed["data"]][-1] == ("docs", "Python reference prose")
    assert listed["data"][-1]["tokens"] > 0
    assert "docs" in [model.id for model in served.client.models.list()]
    assert served.client.models.retrieve("docs").id == "docs"

    raw = _chat(served.client, "ir3de", PROMPTS["docs"])
    routed = raw.parse()
    assert routed.model == "docs" and routed.choices[0].message.content
    assert routed.model_extra["ir3de"]["router_version"] == raw.headers["x-ir3de-router-version"] == version
    forced = _chat(served.client, "docs", PROMPTS["code"]).parse()
    assert forced.model == "docs" and forced.model_extra["ir3de"]["reason"] == "forced"

    metrics = httpx.get(served.url + "/metrics").text
    assert f'ir3de_router_version_info{{version="{version}"}} 1' in metrics
    assert 'ir3de_expert_edits_total{action="add"} 1' in metrics

    # persisted: the directory loads with the three experts and routes as the server does, and as a from-scratch fit
    reloaded = IR3DERouterModel.from_pretrained(served.directory)
    assert reloaded.expert_names == ["code", "legal", "docs"]
    scratch = IR3DERouterModel.from_pretrained(router_dir)
    prompts = list(PROMPTS.values())
    assert reloaded.route(prompts).expert_names == scratch.route(prompts).expert_names == list(PROMPTS)
    assert [_route(served, prompt) for prompt in prompts] == list(PROMPTS)


def test_an_expert_added_from_a_histogram_routes_like_one_added_from_texts(served, domain_texts, two_experts_dir):
    counted = IR3DERouterModel.from_pretrained(two_experts_dir)
    counted.add_expert("docs", texts=domain_texts["docs"])
    histogram = counted.store.histogram("docs").tolist()
    response = served.admin.post("/v1/experts", json={"name": "docs", "histogram": histogram})
    assert response.status_code == 201, response.text
    assert _route(served, PROMPTS["docs"]) == "docs"
    assert served.experts() == ["code", "legal", "docs"]


def test_a_removed_expert_is_gone_at_once_and_saved(served):
    response = served.admin.delete("/v1/experts/legal")
    assert response.status_code == 200, response.text
    version = response.json()["router_version"]
    assert response.json() == {"object": "expert.deleted", "name": "legal", "deleted": True, "router_version": version}
    assert served.experts() == ["code"] and version == served.version() == content_id(served.directory)
    with pytest.raises(openai.NotFoundError) as missing:
        served.client.models.retrieve("legal")
    assert "The model 'legal' does not exist" in missing.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        _chat(served.client, "legal", PROMPTS["legal"])
    assert _route(served, PROMPTS["legal"]) == "code"
    assert _chat(served.client, "ir3de", PROMPTS["legal"]).parse().model == "code"
    assert 'ir3de_expert_edits_total{action="remove"} 1' in httpx.get(served.url + "/metrics").text
    assert IR3DERouterModel.from_pretrained(served.directory).expert_names == ["code"]


def test_a_request_in_flight_when_its_expert_is_removed_completes(long_expert_router_dir, tmp_path):
    served = Served(long_expert_router_dir, tmp_path)
    try:
        before = served.version()
        stream = served.client.chat.completions.create(
            model="long", messages=[{"role": "user", "content": PROMPTS["docs"]}], max_tokens=LIMIT, stream=True
        )
        chunks = iter(stream)
        first = next(chunks)
        assert first.model_extra["ir3de"]["router_version"] == before
        removed: dict[str, float] = {}

        def remove() -> None:
            removed["status"] = served.admin.delete("/v1/experts/long").status_code
            removed["at"] = time.monotonic()

        remover = threading.Thread(target=remove)
        remover.start()
        deadline = time.monotonic() + 30
        while served.version() == before:  # routing and forcing stop at once, before the drain
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(openai.NotFoundError):
            _chat(served.client, "long", PROMPTS["docs"])
        assert remover.is_alive(), "the remove returned before its request in flight ended"
        rest = list(chunks)
        ended = time.monotonic()
        remover.join(timeout=60)
        assert removed["status"] == 200 and removed["at"] >= ended - 0.5
        assert rest[-1].choices[0].finish_reason == "length"
        text = first.choices[0].delta.content + "".join(chunk.choices[0].delta.content or "" for chunk in rest)
        assert len(text.split()) >= LIMIT // 2
        assert served.experts() == ["code"]
    finally:
        served.close()


# ------------------------------------------------------------------------------------------------ refusals


def _refused(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"], error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_the_admin_api_is_off_without_an_admin_key(two_experts_dir, tmp_path):
    served = Served(two_experts_dir, tmp_path, admin_key=None)
    try:
        digest = directory_digest(served.directory)
        for method, path in (("GET", "/v1/experts"), ("POST", "/v1/experts"), ("DELETE", "/v1/experts/code")):
            response = served.admin.request(
                method, path, json={"name": "x", "texts": ["a"]} if method == "POST" else None
            )
            _refused(response, 403, "The admin API is off; start ir3de serve with --admin-key.")
        assert directory_digest(served.directory) == digest
        assert [model.id for model in served.client.models.list()] == ["ir3de", "router", "code", "legal"]
    finally:
        served.close()


def test_the_admin_key_is_required_and_separate_from_the_api_key(two_experts_dir, tmp_path):
    served = Served(two_experts_dir, tmp_path, api_key=KEY)
    try:
        state = served.state()
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {KEY}"}):
            response = httpx.delete(served.url + "/v1/experts/code", headers=headers)
            _refused(response, 401, "Missing or wrong admin key")
        assert served.admin.get("/v1/experts").status_code == 200
        response = httpx.get(served.url + "/v1/models", headers={"authorization": f"Bearer {ADMIN}"})
        _refused(response, 401, "Missing or wrong API key")
        assert served.state() == state
    finally:
        served.close()


# (id, body, status, words of the message)
BAD_BODIES = [
    ("texts and histogram", {"name": "x", "texts": ["a"], "histogram": [1]}, 422, "give exactly one of"),
    ("no statistics", {"name": "x"}, 422, 'give exactly one of "texts"'),
    ("empty texts", {"name": "x", "texts": []}, 422, "texts: List should have at least 1 item"),
    ("blank texts", {"name": "x", "texts": [" ", ""]}, 422, '"texts" holds only empty or blank strings'),
    ("texts a string", {"name": "x", "texts": "some text"}, 422, "texts: Input should be a valid list"),
    ("histogram too short", {"name": "x", "histogram": [1, 2, 3]}, 400, "A histogram must be a vector of"),
    ("negative counts", {"name": "x", "histogram": [1, -2, 3]}, 422, "histogram.1: Input should be greater than"),
    ("unknown field", {"name": "x", "texts": ["a"], "weight": 2}, 422, "weight: Extra inputs are not permitted"),
    ("unknown source", {"name": "x", "texts": ["def"], "source": "/no/such/adapter"}, 400, "is not a directory"),
    ("no statistics there", {"name": "x", "statistics": "/no/such/statistics"}, 400, "no such directory"),
    ("bad name", {"name": "bad name!", "texts": ["def"]}, 400, "Invalid expert name 'bad name!'"),
    ("name exists", {"name": "code", "texts": ["def"]}, 409, "An expert or model named 'code' exists already"),
    ("meta-model name", {"name": "ir3de", "texts": ["def"]}, 409, "named 'ir3de' exists already"),
]


@pytest.mark.parametrize(
    ("body", "status", "words"), [case[1:] for case in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
def test_a_bad_add_is_refused_and_changes_nothing(served, body, status, words):
    state = served.state()
    _refused(served.admin.post("/v1/experts", json=body), status, words)
    assert served.state() == state
    assert served.admin.post("/v1/experts", content=b"{not json").status_code == 400


def test_a_bad_remove_is_refused_and_changes_nothing(served):
    state = served.state()
    _refused(served.admin.delete("/v1/experts/nobody"), 404, "No expert named 'nobody'; the experts are: code, legal.")
    assert served.state() == state
    assert served.admin.delete("/v1/experts/legal").status_code == 200
    state = served.state()
    _refused(served.admin.delete("/v1/experts/code"), 409, "'code' is the router's last expert")
    assert served.state() == state
    assert 'ir3de_expert_edits_total{action="remove"} 1' in httpx.get(served.url + "/metrics").text


def test_the_fallback_expert_cannot_be_removed(two_experts_dir, tmp_path):
    served = Served(two_experts_dir, tmp_path, fallback_expert="legal")
    try:
        state = served.state()
        response = served.admin.delete("/v1/experts/legal")
        _refused(response, 409, "'legal' is this server's --fallback-expert; it cannot be removed live.")
        assert served.state() == state
    finally:
        served.close()


# ------------------------------------------------------------------------------------------------ command line


@pytest.mark.parametrize(
    ("arguments", "code", "line"),
    [
        (
            ("demo", "--admin-key", ADMIN),
            1,
            "ir3de serve: error: --admin-key edits the router directory it serves, and 'demo' is not a local "
            "directory; save the router to a directory first (ir3de pull REPO --local-dir DIR, or "
            "router.save_pretrained(DIR)) and serve that.",
        ),
        (
            ("me/a-router", "--admin-key", ADMIN),
            1,
            "ir3de serve: error: --admin-key edits the router directory it serves, and 'me/a-router' is not a local "
            "directory; save the router to a directory first (ir3de pull REPO --local-dir DIR, or "
            "router.save_pretrained(DIR)) and serve that.",
        ),
        (
            ("ROUTER", "--admin-key", " "),
            1,
            "ir3de serve: error: --admin-key is empty; give a key admin clients will send as 'Authorization: Bearer "
            "KEY'.",
        ),
        (
            ("ROUTER", "--watch-interval", "0"),
            2,
            "ir3de serve: error: argument --watch-interval: expected seconds from 0.05 to 3600, got '0'",
        ),
    ],
    ids=["demo", "a Hub id", "an empty admin key", "no watch interval"],
)
def test_the_command_line_refuses_an_admin_api_it_cannot_serve(two_experts_dir, capsys, arguments, code, line):
    from cli_errors import refused

    argv = ["serve", *(str(two_experts_dir) if word == "ROUTER" else word for word in arguments)]
    assert refused(argv, code, capsys) == line
