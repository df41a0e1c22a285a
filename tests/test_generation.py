"""Route-then-generate: input order, equality with calling the expert directly, forcing, fallback, streaming."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.generation import chat_prompt

GREEDY = {"max_new_tokens": 6, "do_sample": False}

PROMPTS = {
    "code": "def encode ( self , obj ) : return self . iterencode ( obj )",
    "legal": "Licensee agrees to be bound by the terms and conditions of this License Agreement",
    "docs": "The assert statement is a convenient way to insert debugging assertions into a program",
}


@pytest.fixture
def routed(onehot_router, domain_texts, expert_sources):
    """Three experts: a full model ('code', the re-seeded twin) and two LoRA adapters of one base ('legal', 'docs')."""
    for name, texts in domain_texts.items():
        onehot_router.add_expert(name, texts=texts, **expert_sources[name])
    return onehot_router


def _direct(router, expert: str, prompts: list[str]) -> list[str]:
    loaded = router.expert_pool.get(expert)
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        output = loaded.model.generate(**inputs, pad_token_id=tokenizer.pad_token_id, **GREEDY)
    return tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_results_keep_input_order_in_a_mixed_batch(routed):
    order = ["legal", "code", "docs", "legal", "code", "code"]
    prompts = [PROMPTS[name] for name in order]
    results = routed.generate(prompts, batch_size=2, **GREEDY)
    assert [r.prompt for r in results] == prompts
    assert [r.expert for r in results] == order
    assert {r.reason for r in results} == {"routed"}
    decisions = routed.route(prompts)
    assert [r.margin for r in results] == decisions.margins.tolist()


def test_greedy_through_the_router_equals_calling_the_expert(routed):
    prompts = [PROMPTS["code"], PROMPTS["legal"], PROMPTS["docs"], PROMPTS["code"] + " , indent", PROMPTS["legal"]]
    results = routed.generate(prompts, **GREEDY)
    assert [r.expert for r in results] == ["code", "legal", "docs", "code", "legal"]
    # legal and docs are adapters of one base: they ran in one mixed batch. Each answer must equal the expert's own.
    for prompt, result in zip(prompts, results, strict=True):
        assert result.text and result.text == _direct(routed, result.expert, [prompt])[0]
    assert len({r.text for r in results}) > 2, "the experts must answer differently, or the test proves nothing"


def test_adapters_of_one_base_answer_in_one_mixed_batch(routed):
    prompts = [PROMPTS["legal"], PROMPTS["docs"], PROMPTS["legal"] + " Agreement"]
    mixed = routed.generate(prompts, **GREEDY)
    separate = [
        routed.generate([prompt], expert=r.expert, **GREEDY)[0] for prompt, r in zip(prompts, mixed, strict=True)
    ]
    assert [r.text for r in mixed] == [r.text for r in separate]
    assert routed.expert_pool.batch_key("legal") == routed.expert_pool.batch_key("docs")
    assert routed.expert_pool.batch_key("code") != routed.expert_pool.batch_key("legal")


def test_forcing_an_expert(routed):
    results = routed.generate([PROMPTS["code"], PROMPTS["docs"]], expert="legal", **GREEDY)
    assert [(r.expert, r.reason) for r in results] == [("legal", "forced"), ("legal", "forced")]
    assert results[0].text == _direct(routed, "legal", [PROMPTS["code"]])[0]


def test_a_list_names_each_prompts_expert_and_mixed_experts_answer_in_one_call(routed):
    prompts = [PROMPTS["code"], PROMPTS["code"], PROMPTS["legal"], PROMPTS["docs"]]
    experts = ["legal", "code", "docs", "legal"]  # two of them not the expert the router would choose
    results = routed.generate(prompts, expert=experts, **GREEDY)
    assert [(r.prompt, r.expert, r.reason) for r in results] == [
        (prompt, name, "forced") for prompt, name in zip(prompts, experts, strict=True)
    ]
    assert all(math.isnan(r.margin) and math.isnan(r.confidence) for r in results)
    for prompt, result in zip(prompts, results, strict=True):  # legal and docs shared one mixed-adapter batch
        assert result.text == _direct(routed, result.expert, [prompt])[0]
    assert results[0].text != results[1].text, "the same prompt on two experts must differ, or this proves nothing"


def test_fallback_when_unsure_or_without_evidence(routed):
    routed.config.min_margin = 1.01  # the margin rule is the router's setting, the one every surface uses
    unsure = routed.generate([PROMPTS["code"]], fallback_expert="docs", **GREEDY)
    assert (unsure[0].expert, unsure[0].reason) == ("docs", "fallback")
    routed.config.min_margin = 0.0
    sure = routed.generate([PROMPTS["code"]], fallback_expert="docs", **GREEDY)
    assert (sure[0].expert, sure[0].reason) == ("code", "routed")
    specials_only = "<s> <s>"
    assert routed.generate([specials_only], fallback_expert="legal", **GREEDY)[0].reason == "fallback"
    with pytest.raises(ValueError, match=r"Prompt 0 has no token the router can use.*fallback_expert="):
        routed.generate([specials_only], **GREEDY)


@pytest.mark.parametrize(
    ("prompts", "kwargs", "error", "message"),
    [
        (["fine", "  "], {}, ValueError, "Prompt 1 is empty"),
        ([], {}, ValueError, "No prompts given"),
        ([3], {}, TypeError, "Prompt 0 is a int"),
        (["fine"], {"expert": "nope"}, ValueError, "No expert named 'nope'"),
        (["fine"], {"fallback_expert": "nope"}, ValueError, "No expert named 'nope'"),
        (["fine", "also fine"], {"expert": ["code"]}, ValueError, r"names 1 experts for 2 prompts; give one name per"),
        (
            ["fine", "also fine"],
            {"expert": ["code", "nope"]},
            ValueError,
            r"No expert named 'nope'.*\(in expert\[1\]\)",
        ),
        (["fine", "also fine"], {"expert": ["code", 7]}, TypeError, r"expert\[1\] must be an expert's name \(a str\)"),
        (["fine"], {"expert": 7}, TypeError, "expert must be an expert's name or a list of names, got a int"),
    ],
)
def test_bad_prompts_are_clear_errors(routed, prompts, kwargs, error, message):
    with pytest.raises(error, match=message):
        routed.generate(prompts, **kwargs, **GREEDY)
    assert routed.expert_pool.loaded == []


def test_prompts_longer_than_the_context_keep_their_end(routed):
    context = routed.expert_pool.get("code").model.config.max_position_embeddings
    tail = PROMPTS["code"]
    long_prompt = " ".join([PROMPTS["docs"]] * 20) + " " + tail
    assert len(routed.tokenizer(long_prompt)["input_ids"]) > context
    result = routed.generate([long_prompt], expert="code", **GREEDY)[0]
    kept = routed.tokenizer(long_prompt)["input_ids"][-(context - GREEDY["max_new_tokens"]) :]
    assert result.text == _direct(routed, "code", [routed.tokenizer.decode(kept)])[0]


def test_streaming_yields_the_same_text(routed):
    stream = routed.generate_stream(PROMPTS["legal"], **GREEDY)
    assert (stream.expert, stream.reason) == ("legal", "routed")
    streamed = "".join(stream)
    assert streamed.strip() == routed.generate([PROMPTS["legal"]], **GREEDY)[0].text.strip()


@pytest.fixture
def no_expert_generates(monkeypatch):
    """Fails the test if any expert model is asked to generate: bad arguments must be refused before that."""

    def refuse(*args, **kwargs):
        raise AssertionError("an expert generated despite bad arguments")

    monkeypatch.setattr("ir3de_hf.generation._run_generate", refuse)


@pytest.mark.parametrize("value", [0, -1, 2.5, "8", True, float("nan"), None])
def test_max_new_tokens_that_is_not_a_positive_int_is_refused(routed, no_expert_generates, value):
    with pytest.raises(ValueError, match=rf"max_new_tokens must be an integer >= 1, got {re.escape(repr(value))}"):
        routed.generate([PROMPTS["code"]], max_new_tokens=value)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer"):
        routed.generate_stream(PROMPTS["code"], max_new_tokens=value)
    assert routed.expert_pool.loaded == []


@pytest.mark.parametrize("expert", ["code", "legal"])  # a full model, and an adapter (the context of its base)
def test_max_new_tokens_beyond_the_experts_context_is_refused(routed, no_expert_generates, expert):
    context = 64  # the tiny Llama's max_position_embeddings (conftest)
    message = rf"max_new_tokens={context} does not fit expert '{expert}'.*context is {context}.*at most {context - 1}"
    with pytest.raises(ValueError, match=message):
        routed.generate([PROMPTS["code"], PROMPTS[expert]], max_new_tokens=context, expert=expert)
    with pytest.raises(ValueError, match=message):
        routed.generate_stream(PROMPTS[expert], max_new_tokens=context, expert=expert)


def test_one_expert_with_too_small_a_context_stops_the_whole_batch(routed, no_expert_generates):
    routed.expert_pool.get("legal").model.config.max_position_embeddings = 4096  # the adapters' base: room enough
    with pytest.raises(ValueError, match=r"max_new_tokens=100 does not fit expert 'code'.*at most 63"):
        routed.generate([PROMPTS["legal"], PROMPTS["code"]], max_new_tokens=100)


def test_max_new_tokens_up_to_the_context_minus_one_is_accepted(routed):
    [result] = routed.generate([PROMPTS["code"]], max_new_tokens=63, do_sample=False, expert="code")
    assert result.expert == "code" and isinstance(result.text, str)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "0.1", True, -0.5])
def test_min_margin_that_is_not_a_finite_number_is_refused(routed, no_expert_generates, value):
    message = rf"min_margin must be None or a finite number >= 0 \(a margin\), got {re.escape(repr(value))}"
    with pytest.raises(ValueError, match=message):
        routed.config.min_margin = value
    assert routed.config.min_margin is None  # the old value is kept
    with pytest.raises(TypeError, match=r"min_margin is a setting of the router now.*router\.config\.min_margin = "):
        routed.generate([PROMPTS["code"]], fallback_expert="docs", min_margin=value, **GREEDY)
    with pytest.raises(TypeError, match="min_margin is a setting of the router now"):
        routed.generate_stream(PROMPTS["code"], fallback_expert="docs", min_margin=value, **GREEDY)
    assert routed.expert_pool.loaded == []


def test_min_margin_is_saved_with_the_router(routed, tmp_path):
    routed.config.min_margin = 0.25
    routed.save_pretrained(tmp_path / "router")
    assert json.loads((tmp_path / "router" / "config.json").read_text())["min_margin"] == 0.25
    loaded = IR3DERouterModel.from_pretrained(tmp_path / "router")
    assert loaded.config.min_margin == 0.25
    output = loaded.route([PROMPTS["code"], PROMPTS["legal"]])
    assert output.confident.tolist() == (output.margins >= 0.25).tolist()


def _generated_ids(router, expert: str, prompt: str) -> list[int]:
    """The expert's own greedy continuation of ``prompt``, as token ids."""
    loaded = router.expert_pool.get(expert)
    inputs = loaded.tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        output = loaded.model.generate(**inputs, pad_token_id=loaded.tokenizer.pad_token_id, **GREEDY)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def test_answers_carry_their_token_counts_and_finish_reason(routed):
    prompts = [PROMPTS["legal"], PROMPTS["code"] + " , indent", PROMPTS["docs"]]
    results = routed.generate(prompts, **GREEDY)
    stream = routed.generate_stream(PROMPTS["legal"], **GREEDY)
    assert stream.completion_tokens is None and stream.finish_reason is None  # known once it has ended
    "".join(stream)
    for prompt, result in [*zip(prompts, results, strict=True), (PROMPTS["legal"], stream)]:
        tokenizer = routed.expert_pool.get(result.expert).tokenizer
        assert result.prompt_tokens == len(tokenizer(prompt)["input_ids"])  # padding not counted
        ids = _generated_ids(routed, result.expert, prompt)
        eos = routed.expert_pool.get(result.expert).model.generation_config.eos_token_id
        expected = ids.index(eos) + 1 if eos in ids else len(ids)
        assert result.completion_tokens == expected
        assert result.finish_reason == ("stop" if eos in ids else "length")
    assert {r.finish_reason for r in results} == {"length"}  # the tiny random experts never end on their own


@pytest.mark.parametrize("value", [0, -3, 1.5, "2", False])
def test_batch_size_below_one_or_not_an_int_is_refused(routed, no_expert_generates, value):
    with pytest.raises(ValueError, match=rf"batch_size must be an integer >= 1, got {re.escape(repr(value))}"):
        routed.generate([PROMPTS["code"]], batch_size=value, **GREEDY)
    assert routed.expert_pool.loaded == []


def test_chat_prompt_is_one_rule_for_lone_turns_and_chats(word_tokenizer):
    chat = [
        {"role": "user", "content": "What does clause 4 say?"},
        {"role": "assistant", "content": "It limits liability."},
        {"role": "user", "content": "And clause 5?"},
    ]
    assert chat_prompt(word_tokenizer, chat[:1]) == ("What does clause 4 say?", None)  # generate templates it
    assert chat_prompt(word_tokenizer, chat) == (
        "What does clause 4 say?\n\nIt limits liability.\n\nAnd clause 5?",
        False,
    )  # no chat template: the turns joined by blank lines
    word_tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert chat_prompt(word_tokenizer, chat[:1]) == ("What does clause 4 say?", None)
    expected = "<user>What does clause 4 say?\n<assistant>It limits liability.\n<user>And clause 5?\n<assistant>"
    assert chat_prompt(word_tokenizer, chat) == (expected, False)
    assert chat_prompt(word_tokenizer, [{"role": "system", "content": "Be brief."}]) == (
        "<system>Be brief.\n<assistant>",
        False,
    )
    with pytest.raises(ValueError, match="No messages given"):
        chat_prompt(word_tokenizer, [])
