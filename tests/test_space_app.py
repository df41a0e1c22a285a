"""The Space launched in-process with the real demo router and driven through its API with gradio_client."""

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
from router_snapshots import RouterHolder

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
    holder: RouterHolder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Iterator[Space]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        holder = RouterHolder(load_demo_router)
        demo = app.build_demo(holder)
        options = {"server_name": "127.0.0.1", "server_port": _free_port(), "quiet": True, **app.launch_options()}
        _, url, _ = demo.queue().launch(prevent_thread_lock=True, **options)
        try:
            yield Space(url, Client(url, verbose=False), holder)
        finally:
            demo.close()


@pytest.fixture(autouse=True)
def _starting_router(space: Space) -> None:
    space.holder.reset()


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
    tokens = len(space.holder.current.tokenizer(RECIPES, add_special_tokens=False)["input_ids"])
    added = {"name": "cooking", "source": "text (added here)", "tokens": tokens, "can_generate": False}
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
    expected = space.holder.current.generate([prompt], expert="code", max_new_tokens=8, do_sample=False)[0].text
    assert text.strip() == expected.strip() and text.strip()
    streamed = job.outputs()
    assert len(streamed) >= 2 and all(b.startswith(a) for a, b in itertools.pairwise(streamed))
    forced = space.client.predict(prompt, "fiction", 8, api_name="/generate")
    expected = space.holder.current.generate([prompt], expert="fiction", max_new_tokens=8, do_sample=False)[0].text
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
