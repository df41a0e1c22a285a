"""Balanced experts (`balance_experts`): every expert weighs the same in the ridge fit. The head must be exactly the
weighted ridge solution, invariant to how much text an expert has, kept exact through edits, saves and loads."""

from __future__ import annotations

import json

import pytest
import torch

from ir3de_hf import IR3DEConfig, IR3DERouterModel
from ir3de_hf.statistics import normalize_columns, ridge_solve

VOCAB, HIDDEN = 500, 10


@pytest.fixture
def embedding() -> torch.nn.Embedding:
    return torch.nn.Embedding.from_pretrained(torch.randn(VOCAB, HIDDEN, generator=torch.Generator().manual_seed(3)))


@pytest.fixture
def histograms(zipf_ids) -> dict[str, torch.Tensor]:
    """Three experts of very different sizes (8, 40 and 200 sequences of 32 tokens)."""
    generator = torch.Generator().manual_seed(5)
    sizes = {"small": 8, "medium": 40, "large": 200}
    return {
        name: torch.bincount(zipf_ids(generator, (rows, 32), VOCAB, offset=70 * i).reshape(-1), minlength=VOCAB)
        for i, (name, rows) in enumerate(sizes.items())
    }


def _router(embedding, histograms, **config) -> IR3DERouterModel:
    router = IR3DERouterModel.from_encoder(embedding, **config)
    for name, counts in histograms.items():
        router.add_expert(name, histogram=counts)
    return router


def _scores(router: IR3DERouterModel) -> torch.Tensor:
    return router._tables().scores.double()


def test_the_head_is_the_ridge_solution_with_each_expert_weighted_by_one_over_its_token_count(embedding, histograms):
    router = _router(embedding, histograms, naive_bayes_weight=0.0)
    assert router.config.balance_experts  # the default
    moments = [router.store.moments(name) for name in histograms]
    weights = [round(2.0**40 / int(counts.sum())) / 2.0**20 for counts in histograms.values()]  # ≈ 2^20 / tokens
    a = sum(w * a_n for w, (a_n, _) in zip(weights, moments, strict=True))
    b = torch.stack([w * b_n for w, (_, b_n) in zip(weights, moments, strict=True)], dim=1)
    weight, bias = normalize_columns(*ridge_solve(a, b, router.config.ridge_lambda))
    expected = embedding.weight.double() @ weight + bias
    torch.testing.assert_close(_scores(router), expected, rtol=1e-5, atol=1e-6)


def test_a_balanced_head_does_not_change_when_an_expert_has_ten_times_the_text(embedding, histograms):
    base = _router(embedding, histograms, naive_bayes_weight=0.0)
    more = _router(embedding, {**histograms, "small": 10 * histograms["small"]}, naive_bayes_weight=0.0)
    torch.testing.assert_close(_scores(more), _scores(base), rtol=1e-6, atol=1e-7)
    unbalanced = [
        _router(embedding, h, naive_bayes_weight=0.0, balance_experts=False)
        for h in (histograms, {**histograms, "small": 10 * histograms["small"]})
    ]
    assert (_scores(unbalanced[0]) - _scores(unbalanced[1])).abs().max() > 1e-2  # the unweighted fit does change


def test_a_small_expert_wins_its_own_tokens_back_when_balanced(embedding, histograms):
    """Tokens the small expert uses most: unweighted, the large expert (25x more text) takes many of them."""
    top = torch.argsort(histograms["small"], descending=True)[:40]
    prompts = top[:, None].tolist()  # one-token prompts
    routed = {}
    for balance in (False, True):
        router = _router(embedding, histograms, naive_bayes_weight=0.0, balance_experts=balance)
        routed[balance] = sum(name == "small" for name in router.route(prompts).expert_names)
    assert routed[True] > routed[False]


def test_edits_and_switching_the_setting_give_the_head_of_a_fresh_fit(embedding, histograms):
    router = _router(embedding, histograms)
    router.route([[1]])
    router.remove_expert("medium")
    router.add_expert("medium", histogram=histograms["medium"])
    router.route([[1]])
    router.add_expert("extra", histogram=histograms["small"] + histograms["large"])
    router.remove_expert("extra")
    order = {name: histograms[name] for name in ("small", "large", "medium")}  # "medium" was added back last
    torch.testing.assert_close(_scores(router), _scores(_router(embedding, order)), rtol=1e-6, atol=1e-7)
    router.config.balance_experts = False
    fresh = _router(embedding, order, balance_experts=False)
    torch.testing.assert_close(_scores(router), _scores(fresh), rtol=1e-6, atol=1e-7)
    router.config.balance_experts = True
    router.config.ignored_token_ids = [0, 1, 2]  # changes every expert's token count, so every weight
    fresh = _router(embedding, order, ignored_token_ids=[0, 1, 2])
    torch.testing.assert_close(_scores(router), _scores(fresh), rtol=1e-6, atol=1e-7)


def test_save_and_load_keep_a_balanced_head_and_a_config_without_the_field_loads_unbalanced(
    embedding, histograms, tmp_path
):
    router = _router(embedding, histograms)
    prompts = torch.randint(0, VOCAB, (30, 12), generator=torch.Generator().manual_seed(1)).tolist()
    router.save_pretrained(tmp_path / "balanced")
    loaded = IR3DERouterModel.from_pretrained(tmp_path / "balanced")  # verifies the stored A against the histograms
    assert loaded.config.balance_experts
    torch.testing.assert_close(loaded.route(prompts).logits, router.route(prompts).logits)
    config = json.loads((tmp_path / "balanced" / "config.json").read_text())
    del config["balance_experts"]
    assert IR3DEConfig.from_dict(config).balance_experts is False
