"""Expert lifecycle, the input paths of add_expert, routing outputs and the errors users meet."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from ir3de_hf import IR3DEConfig, IR3DERouterModel

VOCAB, HIDDEN = 400, 16


@pytest.fixture
def domains(zipf_ids) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {name: zipf_ids(generator, (20, 64), VOCAB, offset=80 * i) for i, name in enumerate("abcd")}


@pytest.fixture
def embedding() -> torch.nn.Embedding:
    return torch.nn.Embedding.from_pretrained(torch.randn(VOCAB, HIDDEN, generator=torch.Generator().manual_seed(8)))


@pytest.fixture
def prompts(zipf_ids) -> torch.Tensor:
    generator = torch.Generator().manual_seed(9)
    return torch.cat([zipf_ids(generator, (250, 16), VOCAB, offset=80 * i) for i in range(4)])


def _fit(embedding: torch.nn.Embedding, data: dict[str, torch.Tensor]) -> IR3DERouterModel:
    router = IR3DERouterModel.from_encoder(embedding, aggregation="mean")
    for name, ids in data.items():
        router.add_expert(name, input_ids=ids)
    return router


def test_add_update_remove_equal_a_fit_from_scratch(embedding, domains, prompts):
    router = _fit(embedding, {name: domains[name] for name in "abc"})
    router.route(prompts)  # solve once, so the edits below must invalidate the cached head
    updated_b = domains["b"][:7]
    router.update_expert("b", input_ids=updated_b)
    router.remove_expert("a")
    router.add_expert("d", input_ids=domains["d"])

    scratch = _fit(embedding, {"b": updated_b, "c": domains["c"], "d": domains["d"]})
    assert router.expert_names == scratch.expert_names == ["b", "c", "d"]
    assert torch.equal(router.expert_counts, scratch.expert_counts)
    for normalize in (True, False):
        for edited, fresh in zip(router.ridge_solution(normalize), scratch.ridge_solution(normalize), strict=True):
            torch.testing.assert_close(edited, fresh, rtol=1e-6, atol=1e-9)
    assert len(prompts) == 1000
    assert torch.equal(router.route(prompts).expert_ids, scratch.route(prompts).expert_ids)


def test_update_keeps_registry_fields_not_given(embedding, domains, expert_dir):
    router = _fit(embedding, {"a": domains["a"]})
    router.update_expert("a", input_ids=domains["b"], description="now b")
    router.add_expert("x", input_ids=domains["c"], source=str(expert_dir), revision="v1")
    router.update_expert("x", input_ids=domains["d"])
    assert router.config.experts == [
        {"name": "a", "description": "now b"},
        {"name": "x", "source": str(expert_dir), "revision": "v1"},
    ]


def test_texts_ids_and_dataset_give_the_same_statistics(text_router, word_tokenizer, domain_texts):
    texts = domain_texts["legal"]
    text_router.add_expert("from_texts", texts=texts)
    encoded = word_tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    text_router.add_expert("from_ids", input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    text_router.add_expert("from_dataset", dataset=Dataset.from_dict({"body": texts}), text_column="body")
    text_router.add_expert("streamed", dataset=Dataset.from_dict({"text": texts}).to_iterable_dataset())
    counts = text_router.expert_counts
    assert counts[0].sum() == sum(len(word_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    for row in counts[1:]:
        assert torch.equal(row, counts[0])


def test_special_tokens_and_padding_never_count_or_vote(text_router, word_tokenizer, domain_texts):
    assert text_router.config.pad_token_id == word_tokenizer.pad_token_id
    assert set(word_tokenizer.all_special_ids) <= set(text_router.config.ignored_token_ids)
    text_router.add_expert("code", texts=domain_texts["code"])
    text_router.add_expert("legal", texts=domain_texts["legal"])
    bos = word_tokenizer.bos_token_id
    text_router.add_expert("specials", input_ids=[[bos, bos, word_tokenizer.convert_tokens_to_ids("def")]])
    assert text_router.expert_counts[:, bos].sum() == 0
    out = text_router.route(torch.tensor([[bos, bos, bos, 0]]))
    assert out.no_evidence.tolist() == [True] and out.token_votes.tolist() == [[-1, -1, -1, -1]]


def test_real_text_routes_to_its_domain(onehot_router, domain_texts):
    text_router = onehot_router
    text_router.config.aggregation = "entropy_top_k"
    for name, texts in domain_texts.items():
        text_router.add_expert(name, texts=texts[::2])
    held_out = [(name, text) for name, texts in domain_texts.items() for text in texts[1::2]]
    out = text_router.route([text for _, text in held_out])
    accuracy = sum(chosen == name for (name, _), chosen in zip(held_out, out.expert_names, strict=True)) / len(
        held_out
    )
    assert accuracy > 0.9
    assert out.logits.shape == (len(held_out), 3)
    assert out.token_scores.shape[:2] == out.token_votes.shape == out.voting_mask.shape
    assert int(out.voting_mask.sum(dim=1).max()) <= text_router.config.top_k


def test_output_fields_for_a_single_prompt(onehot_router, domain_texts):
    onehot_router.add_expert("code", texts=domain_texts["code"])
    onehot_router.add_expert("legal", texts=domain_texts["legal"])
    out = onehot_router.route("def encode(self, obj): return obj")
    assert out.expert_names == ["code"] and out.expert_ids.tolist() == [0]
    assert out.margins.item() == pytest.approx(out.logits[0, 0].item() - out.logits[0, 1].item())
    single = IR3DERouterModel.from_encoder(onehot_router.embed_tokens, onehot_router.tokenizer)
    single.add_expert("only", texts=domain_texts["docs"])
    assert single.route("any text").margins.tolist() == [float("inf")]


def test_empty_and_all_padding_prompts_are_flagged_not_errors(text_router, domain_texts):
    text_router.add_expert("code", texts=domain_texts["code"])
    text_router.add_expert("legal", texts=domain_texts["legal"])
    out = text_router.route(["", "   ", "the license"])
    assert out.no_evidence.tolist() == [True, True, False]
    assert out.expert_ids.tolist()[:2] == [-1, -1] and out.expert_names[:2] == [None, None]
    assert out.margins.tolist()[:2] == [0.0, 0.0]
    padded = text_router.route(torch.tensor([[5, 6, 7]]), attention_mask=torch.tensor([[0, 0, 0]]))
    assert padded.no_evidence.tolist() == [True] and padded.expert_ids.tolist() == [-1]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r, d: r.route(torch.tensor([[1, 2]])), "no experts yet"),
        (lambda r, d: r.remove_expert("nope"), "No expert named 'nope'"),
        (lambda r, d: r.update_expert("nope", input_ids=d["a"]), "No expert named 'nope'"),
        (lambda r, d: r.add_expert("a", input_ids=torch.tensor([[VOCAB]])), r"\[0, 400\).*different tokenizer"),
        (lambda r, d: r.add_expert("a", histogram=torch.ones(VOCAB + 1, dtype=torch.long)), "different tokenizer"),
        (lambda r, d: r.add_expert("a", histogram=-torch.ones(VOCAB, dtype=torch.long)), "non-negative integer"),
        (lambda r, d: r.add_expert("a", texts=["hello"]), "no tokenizer"),
        (lambda r, d: r.add_expert("a"), "exactly one of texts=, input_ids=, dataset= or histogram= \\(got none\\)"),
        (lambda r, d: r.add_expert("a", input_ids=d["a"], histogram=d["a"][0]), "got input_ids=, histogram="),
        (
            lambda r, d: r.add_expert(
                "a", input_ids=torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.zeros(2, 3)
            ),
            "no usable token",
        ),
        (lambda r, d: r.add_expert("bad name!", input_ids=d["a"]), "Invalid expert name"),
        (lambda r, d: r.route("text without a tokenizer"), "no tokenizer"),
    ],
)
def test_bad_input_gets_a_clear_error(embedding, domains, call, message):
    router = IR3DERouterModel.from_encoder(embedding)
    if "no experts yet" not in message:
        router.add_expert("seed", input_ids=domains["b"])
    before = router.expert_counts.clone()
    with pytest.raises(ValueError, match=message):
        call(router, domains)
    assert torch.equal(router.expert_counts, before), "a failed call must leave the router unchanged"


def test_duplicate_name_is_refused_and_router_unchanged(embedding, domains):
    router = _fit(embedding, {"a": domains["a"]})
    with pytest.raises(ValueError, match="already exists; use update_expert"):
        router.add_expert("a", input_ids=domains["b"])
    assert router.expert_names == ["a"] and router.expert_counts.shape == (1, VOCAB)


def test_routed_ids_outside_the_vocabulary_are_refused(embedding, domains):
    router = _fit(embedding, {"a": domains["a"], "b": domains["b"]})
    with pytest.raises(ValueError, match="different tokenizer"):
        router.route(torch.tensor([[1, VOCAB + 5]]))
    # Masked positions may hold anything (e.g. -100): only attended ids are checked.
    out = router.route(torch.tensor([[1, -100]]), attention_mask=torch.tensor([[1, 0]]))
    assert out.no_evidence.tolist() == [False]


def test_tokenizer_from_another_model_is_refused(word_tokenizer):
    with pytest.raises(ValueError, match="different models"):
        IR3DERouterModel.from_encoder(torch.nn.Embedding(len(word_tokenizer) - 1, 8), word_tokenizer)


def test_config_values_are_checked_by_name():
    with pytest.raises(ValueError, match="ridge_lambda must be a finite number > 0"):
        IR3DERouterModel.from_encoder(torch.nn.Embedding(10, 4), ridge_lambda=0.0)
    with pytest.raises(ValueError, match="ridge_lambda"):
        IR3DEConfig(ridge_lambda=-1)
    with pytest.raises(
        ValueError, match="aggregation must be one of majority_vote, entropy_top_k, mean, weighted_mean"
    ):
        IR3DEConfig(aggregation="max")
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        IR3DEConfig(top_k=0)
    with pytest.raises(ValueError, match="duplicate expert name"):
        IR3DEConfig(experts=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValueError, match="must lie in \\[0, 10\\)"):
        IR3DEConfig(vocab_size=10, ignored_token_ids=[12])
    with pytest.raises(ValueError, match="newer than this ir3de_hf supports"):
        IR3DEConfig(ir3de_format_version=99)


def test_changing_lambda_or_aggregation_takes_effect_without_refitting(embedding, domains, prompts):
    router = _fit(embedding, domains)
    before = router.ridge_solution(normalize=False)[0]
    router.config.ridge_lambda = 1e3
    after = router.ridge_solution(normalize=False)[0]
    assert not torch.allclose(before, after)
    router.config.aggregation = "majority_vote"
    votes = router.route(prompts)
    torch.testing.assert_close(votes.logits.sum(dim=1), torch.ones(len(prompts)))
