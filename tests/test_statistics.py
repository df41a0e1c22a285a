"""The histogram identity (design.md §2): statistics from token counts equal the reference per-token sums."""

from __future__ import annotations

import math

import pytest
import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.aggregation import AGGREGATIONS, aggregate
from ir3de_hf.statistics import (
    TokenCounter,
    augmented_moments,
    explicit_moments,
    merge_histograms,
    naive_bayes_scores,
    normalize_columns,
    token_entropy,
    token_histogram,
)

VOCAB, HIDDEN, EXPERTS, PAD = 300, 12, 3, 0


def _padded_batches(generator: torch.Generator, zipf_ids) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per expert, 6 prompts of 40 positions with random right-padding filled with the pad id."""
    ids, masks, labels = [], [], []
    for expert in range(EXPERTS):
        batch = zipf_ids(generator, (6, 40), VOCAB, offset=expert * 70)
        lengths = torch.randint(1, 41, (6,), generator=generator)
        mask = (torch.arange(40)[None] < lengths[:, None]).long()
        ids.append(batch.masked_fill(mask == 0, PAD))
        masks.append(mask)
        labels.append(torch.full((6,), expert))
    return torch.cat(ids), torch.cat(masks), torch.cat(labels)


def _router(embedding: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, **config):
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(embedding), pad_token_id=PAD, **config)
    for expert in range(EXPERTS):
        rows = labels == expert
        router.add_expert(f"e{expert}", input_ids=ids[rows], attention_mask=mask[rows])
    return router


def test_histogram_never_counts_masked_positions_or_ignored_ids():
    ids = torch.tensor([[5, 5, 7, 0, 9], [7, 3, 3, 3, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    counts = token_histogram(ids, mask, vocab_size=10, ignored_token_ids=[0])
    assert counts.tolist() == [0, 0, 0, 1, 0, 2, 0, 2, 0, 0]
    assert counts.dtype == torch.int64


def test_the_counter_accumulates_like_one_histogram_and_stops_at_its_budget():
    """`TokenCounter` is the one counting primitive: batches added one by one give `token_histogram` of them all, and
    a budget counts exactly the first usable tokens (ignored ids never use it up)."""
    batches = [torch.tensor([5, 0, 5, 7]), torch.tensor([[0, 3], [3, 9]]), torch.tensor([9, 9, 1])]
    counter = TokenCounter(10, never_counted=[0])
    assert [counter.add(batch) for batch in batches] == [3, 3, 3]
    whole = torch.cat([batch.reshape(-1) for batch in batches])
    assert torch.equal(counter.counts, token_histogram(whole, vocab_size=10, ignored_token_ids=[0]))
    assert counter.counts.tolist() == [0, 1, 0, 2, 0, 2, 0, 1, 0, 3] and counter.tokens == 9

    budgeted = TokenCounter(10, never_counted=[0], budget=4)
    assert [budgeted.add(batch) for batch in batches] == [3, 1, 0]
    assert budgeted.counts.tolist() == [0, 0, 0, 1, 0, 2, 0, 1, 0, 0] and budgeted.full
    with pytest.raises(ValueError, match=r"Token ids must lie in \[0, 10\)"):
        counter.add(torch.tensor([10]))


def test_histograms_merge_by_addition(zipf_ids):
    generator = torch.Generator().manual_seed(1)
    ids = zipf_ids(generator, (8, 50), VOCAB)
    whole = token_histogram(ids, vocab_size=VOCAB)
    shards = [token_histogram(ids[i : i + 3], vocab_size=VOCAB) for i in range(0, 8, 3)]
    assert torch.equal(merge_histograms(*shards), whole)
    with pytest.raises(ValueError, match="same shape"):
        merge_histograms(whole, whole[:-1])


def test_histogram_moments_equal_explicit_per_token_sums(zipf_ids):
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(VOCAB, HIDDEN, generator=generator)
    ids, mask, labels = _padded_batches(generator, zipf_ids)
    counts = torch.stack(
        [token_histogram(ids[labels == n], mask[labels == n], vocab_size=VOCAB) for n in range(EXPERTS)]
    )
    a_hist, b_hist = augmented_moments(embedding, counts)
    a_explicit, b_explicit = explicit_moments(embedding, ids, mask, labels, EXPERTS)
    assert a_hist.dtype == b_hist.dtype == torch.float64
    assert a_hist.shape == (HIDDEN + 1, HIDDEN + 1) and b_hist.shape == (HIDDEN + 1, EXPERTS)
    torch.testing.assert_close(a_hist, a_explicit, rtol=1e-9, atol=0)
    torch.testing.assert_close(b_hist, b_explicit, rtol=1e-9, atol=0)
    # The bias corner of A is the number of counted tokens: padding is excluded.
    assert a_hist[-1, -1].item() == mask.sum().item()


def test_router_solution_equals_explicit_ridge_solve(zipf_ids):
    generator = torch.Generator().manual_seed(2)
    embedding = torch.randn(VOCAB, HIDDEN, generator=generator)
    ids, mask, labels = _padded_batches(generator, zipf_ids)
    ridge_lambda = 0.5
    router = _router(embedding, ids, mask, labels, ridge_lambda=ridge_lambda, balance_experts=False)  # the paper's

    # The pad id is never counted, so drop it from the explicit rows as well.
    a, b = explicit_moments(embedding, ids, mask * (ids != PAD), labels, EXPERTS)
    solution = torch.linalg.solve(a + ridge_lambda * torch.eye(HIDDEN + 1, dtype=torch.float64), b)
    weight, bias = router.ridge_solution(normalize=False)
    torch.testing.assert_close(weight, solution[:-1], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(bias, solution[-1], rtol=1e-6, atol=1e-9)

    norms = solution[:-1].norm(dim=0)
    weight_n, bias_n = router.ridge_solution(normalize=True)
    torch.testing.assert_close(weight_n, solution[:-1] / norms, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(bias_n, solution[-1] / norms, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(weight_n.norm(dim=0), torch.ones(EXPERTS, dtype=torch.float64))


def test_zero_norm_column_is_divided_by_eps():
    weight = torch.tensor([[3.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    bias = torch.tensor([5.0, 2e-6], dtype=torch.float64)
    scaled_weight, scaled_bias = normalize_columns(weight, bias)
    assert scaled_weight[:, 0].tolist() == [0.6, 0.8]
    assert scaled_bias.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_lookup_table_decisions_equal_embedding_matmul(zipf_ids, aggregation):
    generator = torch.Generator().manual_seed(3)
    embedding = torch.randn(VOCAB, HIDDEN, generator=generator)
    ids, mask, labels = _padded_batches(generator, zipf_ids)
    router = _router(embedding, ids, mask, labels, aggregation=aggregation, top_k=5)

    prompts = torch.cat([zipf_ids(generator, (334, 24), VOCAB, offset=n * 70) for n in range(EXPERTS)])
    prompt_mask = (torch.arange(24)[None] < torch.randint(1, 25, (len(prompts),), generator=generator)[:, None]).long()
    routed = router.route(prompts, prompt_mask)

    weight, bias = router.ridge_solution(normalize=True)
    counts = router.store.counts_matrix()
    counts[:, PAD] = 0
    naive_bayes = router.config.naive_bayes_weight * naive_bayes_scores(counts, router.config.naive_bayes_alpha)
    reference_scores = embedding.to(torch.float64)[prompts] @ weight + bias + naive_bayes[prompts]
    usable = prompt_mask.bool() & (prompts != PAD)
    reference = aggregate(reference_scores, usable, aggregation, top_k=5)
    assert len(prompts) >= 1000
    assert torch.equal(routed.expert_ids, reference.expert_ids)
    torch.testing.assert_close(routed.token_scores[usable], reference_scores[usable].float(), rtol=1e-5, atol=1e-5)


def test_majority_vote_ties_go_to_the_lowest_expert_id():
    scores = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    result = aggregate(scores, torch.tensor([[True, True, False, True]]), "majority_vote")
    assert result.expert_ids.tolist() == [2]
    tie = aggregate(scores, torch.tensor([[True, True, True, False]]), "majority_vote")
    assert tie.expert_ids.tolist() == [0]
    torch.testing.assert_close(tie.logits, torch.full((1, 3), 1 / 3))


def test_entropy_top_k_lets_only_the_most_decisive_tokens_vote():
    # Two confident tokens for expert 1, three hesitant ones for expert 0: majority says 0, top-2 entropy says 1.
    scores = torch.tensor([[[0.1, 0.0], [0.1, 0.0], [0.1, 0.0], [0.0, 9.0], [0.0, 8.0]]])
    usable = torch.ones(1, 5, dtype=torch.bool)
    assert aggregate(scores, usable, "majority_vote").expert_ids.tolist() == [0]
    decisive = aggregate(scores, usable, "entropy_top_k", top_k=2)
    assert decisive.expert_ids.tolist() == [1]
    assert decisive.voting_mask.tolist() == [[False, False, False, True, True]]


def test_mean_ignores_unusable_tokens():
    scores = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [100.0, 0.0]]])
    result = aggregate(scores, torch.tensor([[True, True, False]]), "mean")
    torch.testing.assert_close(result.logits, torch.tensor([[0.5, 1.5]]))
    assert result.expert_ids.tolist() == [1]


def test_weighted_mean_weights_tokens_by_confidence():
    # Token 1 is decisive for expert 1 (scores 0 vs 4); tokens 2 and 3 are nearly uniform and lean to expert 0.
    scores = torch.tensor([[[0.0, 4.0], [1.0, 0.9], [1.0, 0.9]]])
    usable = torch.ones(1, 3, dtype=torch.bool)
    assert aggregate(scores, usable, "mean").expert_ids.tolist() == [1]
    entropies = token_entropy(scores)
    weights = 1 - entropies / math.log(2)
    expected = (scores * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
    result = aggregate(scores, usable, "weighted_mean")
    torch.testing.assert_close(result.logits, expected)
    assert result.expert_ids.tolist() == [1]
    # A prompt of only near-uniform tokens still decides, by those tokens.
    assert aggregate(scores[:, 1:], usable[:, 1:], "weighted_mean").expert_ids.tolist() == [0]


def test_ids_outside_the_vocabulary_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 10\).*different tokenizer"):
        token_histogram(torch.tensor([[1, 10]]), vocab_size=10)
    with pytest.raises(TypeError, match="integer"):
        token_histogram(torch.tensor([[1.0, 2.0]]), vocab_size=10)
