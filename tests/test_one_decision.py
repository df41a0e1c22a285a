"""One decision: the Space, the server and `generate` decide every prompt alike (by `ir3de_hf.outputs.decide`),
before and after calibration and with a margin threshold; `pipeline("text-classification")` reports the same
calibrated probabilities and says when a prompt has no evidence."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from starlette.testclient import TestClient
from transformers import pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "space_app"))

import endpoints
from router_snapshots import SessionRouters

from ir3de_hf import IR3DERouterModel
from ir3de_hf.generation import decisions
from ir3de_hf.serve.app import create_app
from ir3de_hf.serve.backends.local import LocalBackend
from ir3de_hf.serve.decision import Decider

FALLBACK = "docs"
NO_EVIDENCE = "[PAD] <s>"  # only special tokens


@pytest.fixture
def router(half_fitted_router) -> IR3DERouterModel:
    """Fitted on every other chunk of each domain (the other chunks give the prompts and the calibration data)."""
    return half_fitted_router


@pytest.fixture
def prompts(domain_texts) -> list[str]:
    """200 real prompts of 2 to 13 words from the held-out chunks of the three domains: short ones are often
    close calls."""
    held = [chunk.split() for name in ("code", "legal", "docs") for chunk in domain_texts[name][1::2]]
    chosen = [" ".join(words[: 2 + index % 12]) for index, words in enumerate(held * (200 // len(held) + 1))]
    assert len(set(chosen[:200])) > 150
    return chosen[:200]


def _surfaces(router: IR3DERouterModel, prompts: list[str]) -> tuple[list, list[dict], list[dict]]:
    """Each prompt's decision by generation, by the server's HTTP app (POST /v1/route) and by the Space's
    endpoint, each on its real code path."""
    generated = decisions(router, prompts, fallback_expert=FALLBACK)
    with TestClient(create_app(Decider(router, fallback_expert=FALLBACK), LocalBackend(router))) as client:
        response = client.post("/v1/route", json={"input": prompts})
    assert response.status_code == 200, response.text
    served = response.json()["data"]
    holder = SessionRouters(lambda: router).session("visitor")
    shown = [endpoints.route(holder, prompt) for prompt in prompts]
    return generated, served, shown


def _assert_agree(router: IR3DERouterModel, prompts: list[str]) -> list[bool]:
    generated, served, shown = _surfaces(router, prompts)
    routed = router.route(prompts)
    confident = routed.confident.tolist()
    for index, (mine, server, space) in enumerate(zip(generated, served, shown, strict=True)):
        sure = confident[index]
        chosen = routed.expert_names[index]
        assert (mine.expert, mine.reason, mine.confident) == (
            (chosen, "routed", True) if sure else (FALLBACK, "fallback", False)
        ), index
        assert (server["expert"], server["reason"], server["confident"]) == (mine.expert, mine.reason, sure), index
        assert server["probabilities"] == pytest.approx(mine.probabilities, abs=1e-6)
        assert server["margin"] == pytest.approx(mine.margin, abs=1e-6)
        # The Space shows the routed expert and says whether it would fall back.
        assert space["expert"] == chosen and space["confidence"] == ("confident" if sure else "unsure"), index
        assert space["probability"] == pytest.approx(mine.confidence, abs=1e-6)
        assert space["margin"] == pytest.approx(mine.margin, abs=1e-6)
    return confident


def test_the_three_surfaces_agree_without_calibration(router, prompts):
    confident = _assert_agree(router, prompts)
    assert all(confident)  # no threshold: every prompt with evidence is routed, by all three
    margins = router.route(prompts).margins
    assert int((margins < 0.03).sum()) >= 5, "the Space's old 0.03 rule would have said unsure here"


def test_the_three_surfaces_agree_after_calibration(router, prompts, domain_texts):
    texts = [chunk for name in ("code", "legal", "docs") for chunk in domain_texts[name][1::2]]
    labels = [name for name in ("code", "legal", "docs") for _ in domain_texts[name][1::2]]
    short = [" ".join(text.split()[:6]) for text in texts]
    router.calibrate(short, labels, max_fallback_rate=0.3)
    assert router.config.min_confidence is not None
    confident = _assert_agree(router, prompts)
    assert 0 < confident.count(False) < len(prompts), "both kinds of decision must occur, or this proves nothing"


def test_the_three_surfaces_agree_with_a_margin_threshold(router, prompts):
    router.config.min_margin = float(router.route(prompts).margins.median())
    confident = _assert_agree(router, prompts)
    assert 0 < confident.count(False) < len(prompts)


def test_a_prompt_without_evidence_falls_back_everywhere(router):
    (mine,), (server,), (space,) = _surfaces(router, [NO_EVIDENCE])
    assert (mine.expert, mine.reason, mine.confident) == (FALLBACK, "fallback", False)
    assert (server["expert"], server["reason"], server["confident"]) == (FALLBACK, "fallback", False)
    assert space["expert"] is None and space["no_evidence"] is True and space["confidence"] is None


def test_the_pipeline_scores_are_the_calibrated_probabilities(router, prompts, domain_texts):
    texts = [chunk for name in ("code", "legal", "docs") for chunk in domain_texts[name][1::2]]
    labels = [name for name in ("code", "legal", "docs") for _ in domain_texts[name][1::2]]
    router.calibrate([" ".join(text.split()[:6]) for text in texts], labels)
    assert router.config.calibration_temperatures[router.config.aggregation] != 1.0
    classify = pipeline("text-classification", model=router, tokenizer=router.tokenizer)
    routed = router.route(prompts[:20])
    for row, scores in enumerate(classify(prompts[:20], top_k=None)):
        by_label = {score["label"]: score["score"] for score in scores}
        expected = dict(zip(router.expert_names, routed.probabilities[row].tolist(), strict=True))
        assert by_label == pytest.approx(expected, rel=1e-5)
        assert scores[0]["label"] == routed.expert_names[row]
    (empty,) = classify([NO_EVIDENCE], top_k=None)
    assert all(math.isnan(score["score"]) for score in empty)  # no evidence: no probability, not a made-up expert
    output = router(**router.tokenizer([NO_EVIDENCE, prompts[0]], return_tensors="pt", padding=True))
    assert bool(output.no_evidence[0]) and torch.isnan(output.logits[0]).all()
    torch.testing.assert_close(output.logits[1].softmax(dim=0), routed.probabilities[0])
