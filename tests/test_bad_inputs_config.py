"""Config values are checked when set (construction, assignment, loading): a bad value raises a `ValueError` naming
the field and what it accepts, and leaves the config and the routing as they were."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from ir3de_hf import IR3DEConfig, IR3DERouterModel, IR3DERouterOutput

VOCAB = 20
PROBE = torch.tensor([[1, 2, 10], [11, 12, 3], [4, 10, 2]])

RIDGE = r"ridge_lambda must be a finite number > 0"
TOP_K = r"top_k must be an integer >= 1"
BOOLEAN = r"normalize_columns must be True or False"
AGGREGATION = r"aggregation must be one of majority_vote, entropy_top_k, mean, weighted_mean"
PAD = r"pad_token_id must be None or a token id \(an integer >= 0, below vocab_size\)"
IN_VOCABULARY = rf"pad_token_id and ignored_token_ids must lie in \[0, {VOCAB}\)"
IGNORED = r"ignored_token_ids must be a list of token ids"

BAD_VALUES = [
    pytest.param("ridge_lambda", float("inf"), RIDGE, id="ridge_lambda-inf"),
    pytest.param("ridge_lambda", float("nan"), RIDGE, id="ridge_lambda-nan"),
    pytest.param("ridge_lambda", "0.01", RIDGE, id="ridge_lambda-str"),
    pytest.param("ridge_lambda", None, RIDGE, id="ridge_lambda-None"),
    pytest.param("ridge_lambda", True, RIDGE, id="ridge_lambda-bool"),
    pytest.param("ridge_lambda", 0, RIDGE, id="ridge_lambda-zero"),
    pytest.param("ridge_lambda", -1, RIDGE, id="ridge_lambda-negative"),
    pytest.param("top_k", 0, TOP_K, id="top_k-zero"),
    pytest.param("top_k", -3, TOP_K, id="top_k-negative"),
    pytest.param("top_k", 2.5, TOP_K, id="top_k-float"),
    pytest.param("top_k", True, TOP_K, id="top_k-bool"),
    pytest.param("top_k", "10", TOP_K, id="top_k-str"),
    pytest.param("normalize_columns", "no", BOOLEAN, id="normalize_columns-str"),
    pytest.param("normalize_columns", 1, BOOLEAN, id="normalize_columns-int"),
    pytest.param("normalize_columns", None, BOOLEAN, id="normalize_columns-None"),
    pytest.param("aggregation", "median", AGGREGATION, id="aggregation-unknown"),
    pytest.param("aggregation", None, AGGREGATION, id="aggregation-None"),
    pytest.param("pad_token_id", -1, PAD, id="pad_token_id-negative"),
    pytest.param("pad_token_id", VOCAB, IN_VOCABULARY, id="pad_token_id-vocab_size"),
    pytest.param("pad_token_id", VOCAB + 7, IN_VOCABULARY, id="pad_token_id-beyond"),
    pytest.param("pad_token_id", 1.5, PAD, id="pad_token_id-float"),
    pytest.param("ignored_token_ids", [-1], IGNORED, id="ignored_token_ids-negative"),
    pytest.param("ignored_token_ids", ["a"], IGNORED, id="ignored_token_ids-str"),
    pytest.param("ignored_token_ids", [True], IGNORED, id="ignored_token_ids-bool"),
    pytest.param("ignored_token_ids", 5, IGNORED, id="ignored_token_ids-not-a-list"),
    pytest.param("ignored_token_ids", [3, VOCAB], IN_VOCABULARY, id="ignored_token_ids-vocab_size"),
    pytest.param(
        "experts", [{"name": "a"}, {"name": "a"}], r"experts: duplicate expert name\(s\) \['a'\]", id="experts-dup"
    ),
    pytest.param(
        "experts",
        [{"name": "a", "colour": "red"}],
        r"experts\[0\]: Unknown expert field\(s\) \['colour'\]",
        id="experts-unknown-field",
    ),
    pytest.param(
        "experts",
        [{"name": "a"}, {"name": "bad name!"}],
        r"experts\[1\]: Invalid expert name 'bad name!'",
        id="experts-bad-name",
    ),
    pytest.param("experts", ["a"], r"experts\[0\] must be a dict with a `name`", id="experts-entry-not-a-dict"),
    pytest.param("experts", 5, r"experts must be a list of dicts with a `name`", id="experts-not-a-list"),
    pytest.param("encoder", 5, r"encoder must be a string or None", id="encoder-int"),
    pytest.param("tokenizer_fingerprint", 3, r"tokenizer_fingerprint must be a string or None", id="fingerprint-int"),
    pytest.param("encoder_by_reference", "yes", r"encoder_by_reference must be True or False", id="by_reference-str"),
    pytest.param("vocab_size", 0, r"vocab_size must be an integer >= 1", id="vocab_size-zero"),
    pytest.param("hidden_size", 0, r"hidden_size must be an integer >= 1", id="hidden_size-zero"),
    pytest.param("ir3de_format_version", 99, r"ir3de_format_version 99 is newer than this", id="format-newer"),
]

GOOD_VALUES = [
    pytest.param("ridge_lambda", 1, 1, id="ridge_lambda-int"),
    pytest.param("ridge_lambda", 0.5, 0.5, id="ridge_lambda-float"),
    pytest.param("top_k", 3, 3, id="top_k"),
    pytest.param("normalize_columns", False, False, id="normalize_columns"),
    pytest.param("aggregation", "majority_vote", "majority_vote", id="aggregation"),
    pytest.param("ignored_token_ids", [2, 1, 2], [1, 2], id="ignored_token_ids-sorted-unique"),
    pytest.param("ignored_token_ids", (10,), [10], id="ignored_token_ids-tuple"),
    pytest.param("pad_token_id", 10, 10, id="pad_token_id"),
    pytest.param("pad_token_id", None, None, id="pad_token_id-None"),
]


@pytest.fixture
def embedding() -> torch.nn.Embedding:
    return torch.nn.Embedding(VOCAB, 4)


def _router(embedding: torch.nn.Embedding, **settings: Any) -> IR3DERouterModel:
    router = IR3DERouterModel.from_encoder(embedding, **settings)
    router.add_expert("a", input_ids=torch.tensor([[1, 2, 3, 4]]))
    router.add_expert("b", input_ids=torch.tensor([[10, 11, 12]]))
    return router


def _assert_same_routing(out: IR3DERouterOutput, reference: IR3DERouterOutput) -> None:
    for key in ("logits", "expert_ids", "token_scores", "voting_mask"):
        assert torch.equal(getattr(out, key), getattr(reference, key)), key


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
def test_a_bad_assignment_is_refused_and_changes_nothing(embedding, name, value, message):
    router = _router(embedding, aggregation="entropy_top_k", top_k=2, ignored_token_ids=[4])
    before = router.route(PROBE)
    saved = router.config.to_dict()
    with pytest.raises(ValueError, match=message):
        setattr(router.config, name, value)
    assert router.config.to_dict() == saved
    _assert_same_routing(router.route(PROBE), before)


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
def test_a_bad_value_is_refused_at_construction(name, value, message):
    with pytest.raises(ValueError, match=message):
        IR3DEConfig(**{"vocab_size": VOCAB, "hidden_size": 4} | {name: value})


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
def test_a_saved_config_with_a_bad_value_does_not_load(tmp_path, name, value, message):
    IR3DEConfig(vocab_size=VOCAB, hidden_size=4).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {name: value}))
    with pytest.raises(ValueError, match=message):
        IR3DEConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(("name", "value", "stored"), GOOD_VALUES)
def test_a_good_assignment_takes_effect_on_the_next_route(embedding, name, value, stored):
    settings = {"aggregation": "entropy_top_k", "top_k": 2}
    router = _router(embedding, **settings)
    router.route(PROBE)  # solve once, so the assignment must invalidate the cached tables
    setattr(router.config, name, value)
    assert getattr(router.config, name) == stored
    _assert_same_routing(router.route(PROBE), _router(embedding, **settings | {name: stored}).route(PROBE))


def test_ids_stay_below_vocab_size_whatever_the_order_of_assignment():
    config = IR3DEConfig(pad_token_id=8, ignored_token_ids=[3], vocab_size=10, hidden_size=4)
    with pytest.raises(ValueError, match=r"must lie in \[0, 8\) \(below vocab_size\), got \[8\]"):
        config.vocab_size = 8
    with pytest.raises(ValueError, match=r"must lie in \[0, 10\) \(below vocab_size\), got \[10\]"):
        config.ignored_token_ids = [3, 10]
    with pytest.raises(ValueError, match=r"must lie in \[0, 10\) \(below vocab_size\), got \[12\]"):
        config.pad_token_id = 12
    assert (config.vocab_size, config.pad_token_id, config.ignored_token_ids) == (10, 8, [3])
    config.vocab_size = 13  # growing the vocabulary first lets the ids follow
    config.pad_token_id = 12
    config.ignored_token_ids = [3, 10]
    with pytest.raises(ValueError, match=r"must lie in \[0, 12\) \(below vocab_size\), got \[12\]"):
        config.vocab_size = 12
    assert config.never_counted_ids == [3, 10, 12]


def test_in_place_edits_are_caught_by_check(embedding):
    router = _router(embedding)
    router.config.ignored_token_ids.append(-2)
    with pytest.raises(ValueError, match=IGNORED):
        router.config.check()
    router.config.ignored_token_ids = [4]
    router.config.experts.append({"name": "a"})
    with pytest.raises(ValueError, match=r"experts: duplicate expert name\(s\) \['a'\]"):
        router.config.check()


def test_check_does_no_work_proportional_to_the_vocabulary():
    config = IR3DEConfig(vocab_size=2**62, hidden_size=4, ignored_token_ids=[2**61], pad_token_id=0)
    config.check()  # would never return if it walked the vocabulary
