"""The Space launched in-process with the real demo router and driven through its API with gradio_client (each
client is one visitor session)."""

from __future__ import annotations

import itertools
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "space_app"))

import app
import httpx
from router_snapshots import MAX_SESSIONS, SessionRouters

from ir3de_hf.demo import DOMAINS, load_demo_router

pytestmark = pytest.mark.slow

RECIPES = """Preheat the oven to 180 degrees and butter a round cake tin. Cream the butter with the caster sugar until
pale and fluffy, then beat in the eggs one at a time. Fold in the sifted flour and a pinch of baking powder. Bake
for thirty minutes until golden. Whisk the egg yolks with sugar, add the warm milk and stir over a low heat until
the custard thickens. Season the chicken with salt, pepper and paprika, then roast it with garlic, rosemary and
lemon. Simmer the onions in olive oil until soft, add chopped tomatoes, basil and a splash of wine, and reduce the
sauce. Knead the dough for ten minutes, let it rise until doubled, shape the loaves and bake them on a hot stone.
Blanch the green beans, drain and toss them with butter and toasted almonds. Marinate the beef overnight, sear it
in a hot pan and deglaze with stock. Melt the chocolate over simmering water, whisk in cream, and pour the
ganache over the cooled sponge. Dice the carrots and celery, sweat them in butter, add lentils and stock and
simmer for forty minutes. Grate the parmesan, cook the pasta until al dente and stir in the sauce with a ladle of
the cooking water. Sprinkle with chopped parsley and serve warm."""
COOKING_PROMPT = "Whisk two eggs with the sugar, fold in the flour and melted butter, then bake the batter."


@dataclass
class Space:
    url: str
    client: Client
    routers: SessionRouters


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Iterator[Space]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        routers = SessionRouters(load_demo_router)
        demo = app.build_demo(routers)
        options = {"server_name": "127.0.0.1", "server_port": _free_port(), "quiet": True, **app.launch_options()}
        _, url, _ = demo.queue().launch(prevent_thread_lock=True, **options)
        try:
            yield Space(url, Client(url, verbose=False), routers)
        finally:
            demo.close()


@pytest.fixture(autouse=True)
def _starting_router(space: Space) -> Iterator[None]:
    for session in space.routers.sessions:
        space.routers.end(session)
    yield
    space.routers.max_sessions = MAX_SESSIONS


def test_clear_domain_prompts_route_to_their_experts(space: Space) -> None:
    assert list(app.EXAMPLES) == list(DOMAINS)
    for domain in DOMAINS:
        result = space.client.predict(app.EXAMPLES[domain], api_name="/route")
        assert result["expert"] == domain, (domain, result["scores"])
        assert list(result["scores"]) == list(DOMAINS) and result["margin"] > 0 and result["can_generate"]
        assert "".join(piece["text"] for piece in result["tokens"]) == app.EXAMPLES[domain]
        votes = [piece["vote"] for piece in result["tokens"] if piece["vote"] is not None]
        assert max(set(votes), key=votes.count) == domain


def test_added_expert_routes_at_once_and_is_removed(space: Space) -> None:
    assert space.client.predict(COOKING_PROMPT, api_name="/route")["expert"] != "cooking"
    table = space.client.predict("cooking", RECIPES, None, api_name="/add_expert")
    tokens = len(space.routers.start.tokenizer(RECIPES, add_special_tokens=False)["input_ids"])
    added = {"name": "cooking", "source": "text (added here)", "link": None, "tokens": tokens, "can_generate": False}
    assert table["experts"][-1] == added
    result = space.client.predict(COOKING_PROMPT, api_name="/route")
    assert result["expert"] == "cooking" and result["can_generate"] is False
    assert space.client.predict(app.EXAMPLES["legal"], api_name="/route")["expert"] == "legal"
    with pytest.raises(AppError, match="'cooking' was added from text"):
        space.client.predict(COOKING_PROMPT, "", 8, api_name="/generate")

    table = space.client.predict("cooking", api_name="/remove_expert")
    assert [row["name"] for row in table["experts"]] == list(DOMAINS)
    assert space.client.predict(COOKING_PROMPT, api_name="/route")["expert"] != "cooking"
    assert space.client.predict(api_name="/experts") == table


def test_fifty_concurrent_routes_succeed_while_an_expert_is_added(space: Space) -> None:
    adding = space.client.submit("cooking", RECIPES * 40, None, api_name="/add_expert")
    domains = [DOMAINS[i % len(DOMAINS)] for i in range(50)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda domain: space.client.predict(app.EXAMPLES[domain], api_name="/route"), domains))
    assert adding.result()["experts"][-1]["name"] == "cooking"
    for domain, result in zip(domains, results, strict=True):
        assert result["expert"] == domain
        assert list(result["scores"]) in (list(DOMAINS), [*DOMAINS, "cooking"])  # one whole snapshot or the other
    assert space.client.predict(COOKING_PROMPT, api_name="/route")["expert"] == "cooking"


def test_generate_streams_the_routed_and_the_forced_expert(space: Space) -> None:
    prompt = app.EXAMPLES["code"]
    job = space.client.submit(prompt, "", 8, api_name="/generate")
    text = job.result()
    expected = space.routers.start.generate([prompt], expert="code", max_new_tokens=8, do_sample=False)[0].text
    assert text.strip() == expected.strip() and text.strip()
    streamed = job.outputs()
    assert len(streamed) >= 2 and all(b.startswith(a) for a, b in itertools.pairwise(streamed))
    forced = space.client.predict(prompt, "fiction", 8, api_name="/generate")
    expected = space.routers.start.generate([prompt], expert="fiction", max_new_tokens=8, do_sample=False)[0].text
    assert forced.strip() == expected.strip()


def test_limits_are_reported_to_api_callers(space: Space) -> None:
    with pytest.raises(AppError, match="at most 4,000"):
        space.client.predict("a" * 4_001, api_name="/route")
    with pytest.raises(AppError, match="Invalid expert name"):
        space.client.predict("no spaces please", "some text", None, api_name="/add_expert")


def test_evaluation_recomputes_accuracy_on_the_test_split(space: Space) -> None:
    summary, image, recall, confusion = space.client.predict(api_name="/evaluate")
    accuracy = float(summary.split("Accuracy ")[1].split("%")[0])
    assert accuracy > 95 and "2,400 prompts" in summary
    assert Path(image).stat().st_size > 10_000
    assert [row[0] for row in recall["data"]] == sorted(DOMAINS)
    assert confusion.startswith("| true \\ routed |")
    space.client.predict("legal", api_name="/remove_expert")
    summary, *_ = space.client.predict(api_name="/evaluate")
    assert float(summary.split("Accuracy ")[1].split("%")[0]) < 85  # legal prompts now go elsewhere


def _clients(space: Space, count: int) -> list[Client]:
    return [Client(space.url, verbose=False) for _ in range(count)]


def test_each_client_edits_its_own_router(space: Space) -> None:
    """Two visitors: one adds an expert, the other removes one; neither sees the other's edit, and a third visitor
    (and the page) still gets the starting router."""
    alice, bob, carol = _clients(space, 3)
    try:
        alice.predict("cooking", RECIPES, None, api_name="/add_expert")
        bob.predict("legal", api_name="/remove_expert")
        assert [row["name"] for row in alice.predict(api_name="/experts")["experts"]] == [*DOMAINS, "cooking"]
        assert [row["name"] for row in bob.predict(api_name="/experts")["experts"]] == [
            d for d in DOMAINS if d != "legal"
        ]
        assert [row["name"] for row in carol.predict(api_name="/experts")["experts"]] == list(DOMAINS)
        assert alice.predict(COOKING_PROMPT, api_name="/route")["expert"] == "cooking"
        assert bob.predict(COOKING_PROMPT, api_name="/route")["expert"] != "cooking"
        assert alice.predict(app.EXAMPLES["legal"], api_name="/route")["expert"] == "legal"
        assert bob.predict(app.EXAMPLES["legal"], api_name="/route")["expert"] != "legal"
        assert carol.predict(app.EXAMPLES["legal"], api_name="/route")["expert"] == "legal"
        with pytest.raises(AppError, match="No expert named 'cooking'"):
            bob.predict(COOKING_PROMPT, "cooking", 4, api_name="/generate")
        # a reset puts one session back on the starting router, and frees its copy
        assert len(space.routers.sessions) == 2
        bob.predict(api_name="/reset")
        assert bob.predict(app.EXAMPLES["legal"], api_name="/route")["expert"] == "legal"
        assert alice.predict(COOKING_PROMPT, api_name="/route")["expert"] == "cooking"
        assert space.routers.sessions == [alice.session_hash]
    finally:
        for client in (alice, bob, carol):
            client.close()


def test_sessions_with_their_own_router_are_capped(space: Space) -> None:
    """Beyond `max_sessions` edited sessions, the least recently used one goes back to the starting router, and its
    visitor's next call says so (once) instead of quietly answering with the starting router."""
    space.routers.max_sessions = 2
    clients = _clients(space, 3)
    try:
        for client in clients:
            client.predict("legal", api_name="/remove_expert")
        assert space.routers.sessions == [clients[1].session_hash, clients[2].session_hash]
        with pytest.raises(AppError, match=r"^Your session's edits were cleared: .* at most 2 sessions"):
            clients[0].predict(app.EXAMPLES["legal"], api_name="/route")
        names = [[row["name"] for row in c.predict(api_name="/experts")["experts"]] for c in clients]
        assert names[0] == list(DOMAINS)  # evicted: its edit is gone
        assert "legal" not in names[1] and "legal" not in names[2]
    finally:
        for client in clients:
            client.close()


def test_chat_routes_each_turn_and_names_the_expert(space: Space) -> None:
    client = Client(space.url, verbose=False)
    try:
        job = client.submit(app.EXAMPLES["legal"], 12, api_name="/chat")
        first = job.result()
        line, _, answer = first.partition("\n\n")
        # the demo router is calibrated: the line gives the calibrated probability and the threshold
        assert line.startswith("Routed to **legal** · probability ") and "· confident (≥ 0." in line and answer.strip()
        assert len(job.outputs()) >= 2 and all(o.startswith(line) for o in job.outputs())  # streamed, line first
        # the next turn is routed on its own message; the expert sees the conversation (the client's session)
        second = client.predict(app.EXAMPLES["code"], 12, api_name="/chat")
        assert second.startswith("Routed to **code** · probability ")
        greedy = client.predict(app.EXAMPLES["fiction"], 8, 0, 1, api_name="/chat")
        assert greedy.startswith("Routed to **fiction**")
    finally:
        client.close()


def test_sampling_settings_reach_the_expert(space: Space) -> None:
    prompt = app.EXAMPLES["fiction"]
    greedy = space.routers.start.generate([prompt], expert="fiction", max_new_tokens=12, do_sample=False)[0].text
    assert space.client.predict(prompt, "fiction", 12, 0, 0.5, api_name="/generate").strip() == greedy.strip()
    sampled = {space.client.predict(prompt, "fiction", 12, 1.5, 1.0, api_name="/generate") for _ in range(4)}
    assert len(sampled) >= 2  # sampling at temperature 1.5: four answers are not all the same
    with pytest.raises(AppError, match=r"temperature must be between 0 \(greedy\) and 2, got 3"):
        space.client.predict(prompt, "fiction", 12, 3, 1.0, api_name="/generate")
    with pytest.raises(AppError, match=r"top_p must be greater than 0 and at most 1, got 0"):
        space.client.predict(prompt, 12, 0.7, 0, api_name="/chat")


def _local_paths(space: Space) -> list[str]:
    """Absolute paths of this machine the page must not show: the expert models, the repository, home, caches."""
    paths = {str(Path(__file__).resolve().parents[1]), str(Path.home())}
    paths |= {spec.source for spec in space.routers.start.config.expert_specs if spec.source}
    if space.routers.start.config.encoder:
        paths.add(space.routers.start.config.encoder)
    return sorted(path for path in paths if path.startswith("/") and len(path) > 1)


def test_no_local_path_is_shown(space: Space) -> None:
    experts = space.client.predict(api_name="/experts")
    assert all(row["source"] == "local" and row["link"] is None for row in experts["experts"])
    page = httpx.get(space.url, timeout=30).text + httpx.get(f"{space.url}config", timeout=30).text
    for path in _local_paths(space):
        assert path not in json_text(experts) and path not in page, path
    assert "https://arxiv.org/abs/2606.06098" in page and "code (local)" in page


def json_text(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def test_route_json_says_how_sure_the_router_is(space: Space) -> None:
    result = space.client.predict(app.EXAMPLES["legal"], api_name="/route")
    assert 0.5 < result["min_confidence"] < 1  # the demo router's calibrated threshold
    assert result["confidence"] == "confident" and result["probability"] >= result["min_confidence"]
