"""The scaled store: A moved by the rows that changed equals an explicit float64 refit after long edit sequences,
the checkpoint's A and B are verified on load, histograms are stored sparse, and routing never needs the whole
table."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import load_file, save_file

from ir3de_hf import IR3DERouterModel
from ir3de_hf.aggregation import AGGREGATIONS
from ir3de_hf.statistics import naive_bayes_scores, ridge_solve, weighted_gram

VOCAB, HIDDEN = 700, 12


def _explicit_head(embedding: torch.Tensor, histograms: list[torch.Tensor], never: list[int], ridge_lambda: float):
    """An independent float64 refit of the default (balanced) head: A and B summed expert by expert over explicit
    per-token rows x = [E[t], 1], each expert's rows weighted by round(2^40 / its counted tokens) / 2^20."""
    width = embedding.shape[1] + 1
    a = torch.zeros(width, width, dtype=torch.float64)
    columns = []
    for histogram in histograms:
        counts = histogram.clone()
        counts[never] = 0
        weighted = counts.double() * (round(2.0**40 / int(counts.sum())) / 2.0**20)
        rows = torch.cat([embedding.double(), torch.ones(len(embedding), 1, dtype=torch.float64)], dim=1)
        a += (rows * weighted[:, None]).T @ rows
        columns.append(rows.T @ weighted)
    return ridge_solve(a, torch.stack(columns, dim=1), ridge_lambda)


def _histogram(rng: random.Random, generator: torch.Generator) -> torch.Tensor:
    """A sparse Zipf-like histogram over a random slice of the vocabulary (experts of very different sizes)."""
    support = torch.randperm(VOCAB, generator=generator)[: rng.randint(5, 200)]
    counts = torch.zeros(VOCAB, dtype=torch.int64)
    counts[support] = (1000.0 / torch.arange(1, len(support) + 1) ** 1.1).long() * rng.randint(1, 50) + 1
    return counts


def test_two_hundred_random_edits_at_256_experts_equal_an_explicit_float64_refit():
    rng = random.Random(0)
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(VOCAB, HIDDEN, generator=generator)
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(embedding), ignored_token_ids=[0, 1])
    experts = {f"e{n}": _histogram(rng, generator) for n in range(256)}
    for name, histogram in experts.items():
        router.add_expert(name, histogram=histogram)
    router.route([[5, 6, 7]])  # A built once, in one product
    kinds = []
    for step in range(200):
        kind = rng.choice(["add", "update", "remove"])
        kinds.append(kind)
        if kind == "add":
            name = f"new{step}"
            experts[name] = _histogram(rng, generator)
            router.add_expert(name, histogram=experts[name])
        elif kind == "update":
            name = rng.choice(sorted(experts))
            experts[name] = _histogram(rng, generator)
            router.update_expert(name, histogram=experts[name])
        else:
            name = rng.choice(sorted(experts))
            del experts[name]
            router.remove_expert(name)
        if step % 3 == 0:  # A is moved after most edits, and after runs of several at other times
            router.route([[5, 6, 7]])
        if step % 25 == 0:
            weight, bias = router.ridge_solution(normalize=False)
            expected_weight, expected_bias = _explicit_head(
                embedding, [experts[n] for n in router.expert_names], [0, 1], router.config.ridge_lambda
            )
            torch.testing.assert_close(weight, expected_weight, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(bias, expected_bias, rtol=1e-6, atol=1e-6)
    assert {"add", "update", "remove"} == set(kinds) and 200 < router.num_experts < 320
    weight, bias = router.ridge_solution(normalize=False)
    histograms = [experts[name] for name in router.expert_names]
    expected_weight, expected_bias = _explicit_head(embedding, histograms, [0, 1], router.config.ridge_lambda)
    torch.testing.assert_close(weight, expected_weight, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bias, expected_bias, rtol=1e-6, atol=1e-6)
    fresh = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(embedding), ignored_token_ids=[0, 1])
    for name in router.expert_names:
        fresh.add_expert(name, histogram=experts[name])
    probe = torch.randint(0, VOCAB, (64, 24), generator=generator)
    assert torch.equal(router.route(probe).expert_ids, fresh.route(probe).expert_ids)


def test_a_moves_by_the_changed_rows_and_is_rebuilt_once_64_times_more_tokens_moved_than_remain(embedding_table):
    # token counts in whole tokens: the unweighted fit (balanced experts move the same rows, in weighted units)
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(embedding_table), balance_experts=False)
    big = torch.zeros(len(embedding_table), dtype=torch.int64)
    big[:50] = 1
    small = torch.zeros_like(big)
    small[40:60] = 3
    router.add_expert("big", histogram=big)
    router.add_expert("small", histogram=small)
    router.route([[1]])
    first = router.store.gram
    assert first.moved == 0 and torch.equal(first.totals, big + small)
    router.remove_expert("small")
    router.route([[1]])
    assert router.store.gram.moved == 60  # the 20 changed rows, 3 tokens each
    router.add_expert("other", histogram=small * 30)
    router.route([[1]])
    assert router.store.gram.moved == 60 + 1_800  # under 64 x the 1,850 tokens held: moved, not rebuilt
    router.remove_expert("other")
    router.route([[1]])
    assert router.store.gram.moved == 0  # 3,660 moved > 64 x the 50 tokens held: rebuilt in one product
    exact = weighted_gram(embedding_table, torch.arange(50), big[:50])
    torch.testing.assert_close(router.store.gram.a, exact, rtol=0, atol=0)


@pytest.fixture
def embedding_table() -> torch.Tensor:
    return torch.randn(80, 6, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def saved(tmp_path, embedding_table):
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(embedding_table))
    generator = torch.Generator().manual_seed(4)
    for name in "abc":
        router.add_expert(name, input_ids=torch.randint(0, 80, (4, 30), generator=generator))
    router.add_expert("imported", moments=router.store.moments("a"))
    router.save_pretrained(tmp_path / "router")
    return router, tmp_path / "router"


def test_a_load_reuses_the_verified_moments_and_decides_like_the_saved_router(saved):
    router, path = saved
    loaded = IR3DERouterModel.from_pretrained(path)
    assert torch.equal(loaded.store.gram.a, router.store.gram.a)  # seeded from the file, not recomputed
    probe = torch.randint(0, 80, (50, 12), generator=torch.Generator().manual_seed(5))
    for method in AGGREGATIONS:
        router.config.aggregation = loaded.config.aggregation = method
        mine, theirs = router.route(probe), loaded.route(probe)
        assert torch.equal(mine.expert_ids, theirs.expert_ids) and torch.equal(mine.logits, theirs.logits)


@pytest.mark.parametrize(
    ("key", "edit", "message"),
    [
        (
            "moments_a",
            lambda t: t.index_put_(  # one entry off by a millionth of A's scale
                (torch.tensor([2]), torch.tensor([3])), 1e-6 * t.abs().max(), accumulate=True
            ),
            "moments_a does not match",
        ),
        ("moments_b", lambda t: t.mul_(1.001), "moments_b does not match"),
        ("expert_token_counts", lambda t: t.add_(1), "moments_a does not match"),
        ("expert_token_counts", lambda t: t.neg_(), "negative token counts"),
        ("expert_token_ids", lambda t: t.fill_(999), "outside the vocabulary"),
        ("expert_offsets", lambda t: t.flip(0), "must rise from 0"),
    ],
)
def test_statistics_edited_in_the_file_are_refused(saved, key, edit, message):
    _, path = saved
    tensors = load_file(path / "model.safetensors")
    tensors[key] = edit(tensors[key].clone())
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=message):
        IR3DERouterModel.from_pretrained(path)


def test_histograms_are_stored_sparse(saved):
    router, path = saved
    tensors = load_file(path / "model.safetensors")
    nonzero = sum(int(router.store.histogram(name).count_nonzero()) for name in "abc")
    assert tensors["expert_token_ids"].shape == (nonzero,) and tensors["expert_token_ids"].dtype == torch.int32
    assert tensors["expert_offsets"].tolist()[-2:] == [nonzero, nonzero]  # the imported expert holds no entries


def test_routing_fills_only_the_rows_its_prompts_use_and_equals_the_whole_table(embedding_table):
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(embedding_table))
    generator = torch.Generator().manual_seed(6)
    for name in "abcd":
        router.add_expert(name, input_ids=torch.randint(0, 80, (4, 30), generator=generator))
    probe = torch.tensor([[3, 4, 5], [5, 6, 7]])
    for method in AGGREGATIONS:
        router.config.aggregation = method
        lazy = router.route(probe)
        tables = router.store.tables()
        assert tables.filled_rows == 5
        full = tables.scores  # every row now
        assert tables.filled_rows == 80
        torch.testing.assert_close(lazy.token_scores, full[probe], rtol=0, atol=0)
        router.config.ridge_lambda *= 2  # a new version: tables start empty again
        router.route(probe)
    many = router.route(probe, token_details=False)
    assert many.token_scores is None and many.expert_ids.shape == (2,)


def test_the_blocked_symmetric_product_of_a_wide_table_equals_the_plain_one():
    generator = torch.Generator().manual_seed(8)
    table = torch.randn(5000, 1100, generator=generator)  # wider than one column block, more rows than one row block
    ids = torch.randperm(5000, generator=generator)[:4500]
    weights = torch.randint(-5, 20, (4500,), generator=generator)  # an edit: some counts go down
    rows = torch.cat([table[ids].double(), torch.ones(4500, 1, dtype=torch.float64)], dim=1)
    expected = (rows * weights.double()[:, None]).T @ rows
    torch.testing.assert_close(weighted_gram(table, ids, weights), expected, rtol=1e-12, atol=1e-9)


def test_naive_bayes_rows_from_some_columns_equal_those_rows_of_the_whole_table():
    counts = torch.randint(0, 9, (5, 40), generator=torch.Generator().manual_seed(9))
    counts[3] = 0  # an expert imported as moments
    whole = naive_bayes_scores(counts, 1.0)
    columns = torch.tensor([2, 7, 39])
    some = naive_bayes_scores(counts[:, columns], 1.0, expert_totals=counts.sum(dim=1), vocab_size=40)
    torch.testing.assert_close(some, whole[columns], rtol=0, atol=1e-12)
