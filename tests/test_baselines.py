"""The scikit-learn and model2vec baselines (the ``bench`` extra), adding a domain to any trained baseline, and the
static table distilled from MiniLM (`minilm_static_path`)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from safetensors.torch import load_file

from ir3de_hf.assets import minilm_path, minilm_static_path
from ir3de_hf.baselines import (
    ClassifierRouter,
    KNNRouter,
    LogisticRegressionRouter,
    Model2VecRouter,
    SentenceEncoder,
)
from ir3de_hf.evaluation import routing_report

Split = tuple[list[str], list[str]]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(minilm_path(), max_length=64)


def split(domain_texts: dict[str, list[str]], names: list[str]) -> tuple[Split, Split]:
    """Even chunks to train on, odd ones held out."""
    train = [(name, text) for name in names for text in domain_texts[name][::2]]
    held_out = [(name, text) for name in names for text in domain_texts[name][1::2]]
    return ([t for _, t in train], [n for n, _ in train]), ([t for _, t in held_out], [n for n, _ in held_out])


def test_logistic_regression_recovers_held_out_labels(encoder, domain_texts):
    names = list(domain_texts)
    (texts, labels), (held_texts, held_labels) = split(domain_texts, names)
    router = LogisticRegressionRouter(encoder, names).fit(texts, labels)
    out = router.route(held_texts)
    assert routing_report(held_labels, out.expert_names, labels=names).accuracy > 0.9
    assert out.logits.shape == (len(held_texts), len(names))
    assert torch.allclose(out.logits.exp().sum(dim=1), torch.ones(len(held_texts)))  # log-probabilities
    assert out.expert_ids.tolist() == out.logits.argmax(dim=1).tolist()
    assert out.expert_names == [names[i] for i in out.expert_ids.tolist()]
    assert (out.margins >= 0).all() and not out.no_evidence.any()
    same = router.route_embeddings(encoder.encode(held_texts))
    assert torch.equal(same.logits, out.logits)


def test_logistic_regression_errors(encoder, domain_texts):
    with pytest.raises(ValueError, match="before route"):
        LogisticRegressionRouter(encoder, ["a", "b"]).route(["x"])
    with pytest.raises(ValueError, match="not among the expert names"):
        LogisticRegressionRouter(encoder, ["a", "b"]).fit(["x", "y"], ["a", "c"])
    with pytest.raises(ValueError, match="every expert"):
        LogisticRegressionRouter(encoder, ["a", "b", "c"]).fit(["x", "y"], ["a", "b"])


@pytest.mark.parametrize(
    "make",
    [
        lambda encoder, names: KNNRouter(encoder, names),
        lambda encoder, names: ClassifierRouter(encoder, names),
        lambda encoder, names: LogisticRegressionRouter(encoder, names),
    ],
    ids=["knn", "classifier", "logistic_regression"],
)
def test_add_domain_refits_with_the_new_label(encoder, domain_texts, make: Callable[..., KNNRouter]):
    (texts, labels), _ = split(domain_texts, ["code", "legal"])
    (new_texts, _), (held_texts, held_labels) = split(domain_texts, ["docs"])
    router = make(encoder, ["code", "legal"]).fit(texts, labels)
    assert "docs" not in router.route(held_texts).expert_names
    assert router.add_domain("docs", new_texts) is router
    assert router.expert_names == ["code", "legal", "docs"]
    out = router.route(held_texts)
    assert out.logits.shape == (len(held_texts), 3)
    assert routing_report(held_labels, out.expert_names, labels=router.expert_names).accuracy > 0.9
    with pytest.raises(ValueError, match="already exists"):
        router.add_domain("docs", new_texts)


@pytest.mark.slow  # distils the table once (about 40-90 s on two cores) unless it is cached
def test_minilm_static_table_is_minilm_wordpiece_and_deterministic(tmp_path):
    from ir3de_hf import assets

    entry = minilm_static_path()
    table = load_file(entry / "model.safetensors")
    assert list(table) == ["embeddings"]
    assert table["embeddings"].shape == (29525, 256) and table["embeddings"].dtype == torch.float16
    assert torch.isfinite(table["embeddings"]).all()
    tokenizer = json.loads((entry / "tokenizer.json").read_text())
    minilm = json.loads((minilm_path() / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "WordPiece" and len(tokenizer["model"]["vocab"]) == 29525
    for part in ("normalizer", "pre_tokenizer", "decoder"):
        assert tokenizer[part] == minilm[part], part
    assert tokenizer["normalizer"]["lowercase"] is True
    assert set(tokenizer["model"]["vocab"]) <= set(minilm["model"]["vocab"])
    config = json.loads((entry / "config.json").read_text())
    assert config["hidden_dim"] == 256 and config["tokenizer_name"] == "sentence-transformers/all-MiniLM-L6-v2"

    assets._distill_minilm(tmp_path)  # a second distillation gives the same bytes
    assert load_file(tmp_path / "model.safetensors")["embeddings"].equal(table["embeddings"])
    assert (tmp_path / "tokenizer.json").read_bytes() == (entry / "tokenizer.json").read_bytes()


@pytest.mark.slow  # needs the distilled table (see above)
def test_model2vec_router_routes_held_out_text_and_adds_a_domain(domain_texts):
    (texts, labels), (held_texts, held_labels) = split(domain_texts, ["code", "legal"])
    router = Model2VecRouter(minilm_static_path(), ["code", "legal"]).fit(texts, labels)
    out = router.route(held_texts)
    assert routing_report(held_labels, out.expert_names, labels=["code", "legal"]).accuracy > 0.9
    assert out.logits.shape == (len(held_texts), 2)
    assert torch.allclose(out.logits.exp().sum(dim=1), torch.ones(len(held_texts)))
    again = Model2VecRouter(minilm_static_path(), ["code", "legal"]).fit(texts, labels).route(held_texts)
    assert torch.equal(again.logits, out.logits)  # seeded
    (new_texts, _), (docs_texts, docs_labels) = split(domain_texts, ["docs"])
    router.add_domain("docs", new_texts)
    out = router.route(docs_texts)
    assert router.expert_names == ["code", "legal", "docs"] and out.logits.shape == (len(docs_texts), 3)
    assert routing_report(docs_labels, out.expert_names, labels=router.expert_names).accuracy > 0.8
