"""ExpertStatisticsStore: versions, settings that invalidate the tables, cheap independent copies, and routing that
stays consistent while another thread edits the experts."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.store import ExpertStatisticsStore, RoutingSettings

VOCAB, HIDDEN = 600, 12


@pytest.fixture
def embedding() -> torch.nn.Embedding:
    return torch.nn.Embedding.from_pretrained(torch.randn(VOCAB, HIDDEN, generator=torch.Generator().manual_seed(7)))


@pytest.fixture
def domains(zipf_ids) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return {name: zipf_ids(generator, (16, 48), VOCAB, offset=i * 120) for i, name in enumerate("abcde")}


def _router(embedding: torch.nn.Embedding, data: dict[str, torch.Tensor], **config) -> IR3DERouterModel:
    router = IR3DERouterModel.from_encoder(embedding, **config)
    for name, ids in data.items():
        router.add_expert(name, input_ids=ids)
    return router


def test_every_change_makes_a_new_version_and_same_settings_do_not(embedding, domains):
    store = ExpertStatisticsStore(embedding, RoutingSettings(1e-2, True, ()))
    histogram = torch.bincount(domains["a"].reshape(-1), minlength=VOCAB)
    store.add("a", histogram=histogram)
    store.add("b", histogram=histogram.flip(0))
    assert store.version == 2
    first = store.tables()
    assert store.tables() is first  # derived once per version
    store.configure(RoutingSettings(1e-2, True, ()))
    assert store.version == 2 and store.tables() is first
    versions = []
    for change in (
        lambda: store.replace("b", histogram=histogram),
        lambda: store.configure(RoutingSettings(0.5, True, ())),
        lambda: store.configure(RoutingSettings(0.5, False, ())),
        lambda: store.configure(RoutingSettings(0.5, False, (3, 4))),
        lambda: store.remove("a"),
    ):
        change()
        versions.append(store.version)
        assert store.tables().version == store.version
    assert versions == [3, 4, 5, 6, 7] and store.names == ("b",)


@pytest.mark.parametrize("field", ["ignored_token_ids", "pad_token_id"])
def test_changing_never_counted_tokens_takes_effect_on_the_next_route(embedding, domains, field):
    router = _router(embedding, domains)
    prompts = torch.cat([ids[:3, :20] for ids in domains.values()])
    before = router.route(prompts)
    decisive = int(before.token_scores.amax(dim=-1).argmax(dim=1)[0].item())  # the strongest token of prompt 0
    dropped = int(prompts[0, decisive])
    setattr(router.config, field, [dropped] if field == "ignored_token_ids" else dropped)
    after = router.route(prompts)
    fresh = _router(embedding, domains, **{field: [dropped] if field == "ignored_token_ids" else dropped})
    expected = fresh.route(prompts)
    assert after.token_votes[0, decisive] == -1 and not after.voting_mask[prompts == dropped].any()
    assert torch.equal(after.expert_ids, expected.expert_ids)
    torch.testing.assert_close(after.logits, expected.logits, rtol=0, atol=1e-6)
    for mine, theirs in zip(router.ridge_solution(), fresh.ridge_solution(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-12)


def test_a_copy_shares_the_costly_parts_and_edits_stay_apart(embedding, domains):
    router = _router(embedding, {name: domains[name] for name in "abc"})
    router.route(domains["a"][:2])  # derives the tables and A
    twin = router.copy()
    assert twin.embed_tokens is router.embed_tokens and twin.tokenizer is router.tokenizer
    assert twin.store.gram is router.store.gram  # shared, not recomputed
    twin.add_expert("d", input_ids=domains["d"])
    twin.remove_expert("a")
    assert router.expert_names == ["a", "b", "c"] and router.store.names == ("a", "b", "c")
    assert twin.expert_names == ["b", "c", "d"] and twin.expert_counts.shape == (3, VOCAB)
    assert router.expert_counts.shape == (3, VOCAB)
    scratch = _router(embedding, {name: domains[name] for name in "bcd"})
    for mine, theirs in zip(twin.ridge_solution(), scratch.ridge_solution(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-12)


def test_the_saved_tensors_mirror_the_store(embedding, domains):
    router = _router(embedding, {name: domains[name] for name in "ab"})
    router.add_expert("m", moments=router.store.moments("a"))
    router.update_expert("b", input_ids=domains["c"])
    tensors = router.statistics_tensors()
    offsets = tensors["expert_offsets"].tolist()
    assert offsets[2] == offsets[3]  # the imported expert has no histogram entries
    for position, name in enumerate("ab"):
        ids = tensors["expert_token_ids"][offsets[position] : offsets[position + 1]].long()
        counts = tensors["expert_token_counts"][offsets[position] : offsets[position + 1]]
        histogram = router.store.histogram(name)
        assert torch.equal(histogram[ids], counts) and int(counts.sum()) == int(histogram.sum())
    assert tensors["imported_moments_index"].tolist() == [2] and not tensors["moments_b"][2].any()
    router.remove_expert("a")
    tensors = router.statistics_tensors()
    assert tensors["imported_moments_index"].tolist() == [1] and router.expert_counts.shape == (2, VOCAB)


@pytest.mark.slow
def test_routing_from_eight_threads_while_experts_change_sees_whole_routers(embedding, domains):
    """8 threads route a fixed probe for 20 s (IR3DE_STRESS_SECONDS) while a ninth cycles add / update / remove:
    every result is the decision of the router before or after the edit in flight, never a mix, never an error."""
    base = {name: domains[name] for name in "abc"}
    other = domains["e"]
    states = [
        base,
        {**base, "d": domains["d"]},
        {**base, "d": other},
        base,
    ]
    edits = [
        lambda router: router.add_expert("d", input_ids=domains["d"]),
        lambda router: router.update_expert("d", input_ids=other),
        lambda router: router.remove_expert("d"),
    ]
    probe = torch.cat([ids[-4:, :24] for ids in domains.values()])
    expected = []
    for state in states[:3]:
        routed = _router(embedding, state).route(probe)
        expected.append((routed.expert_names, routed.logits))
    router = _router(embedding, base)
    completed = 0  # edits applied so far; the state after k edits is states[k % 3]
    errors: list[BaseException] = []
    mixes: list[str] = []
    calls = [0] * 8
    stop = threading.Event()

    def route(worker: int) -> None:
        while not stop.is_set():
            try:
                first = completed
                routed = router.route(probe)
                last = completed
                candidates = [expected[k % 3] for k in range(first, last + 2)]
                if not any(
                    routed.expert_names == names and torch.allclose(routed.logits, logits, atol=1e-6)
                    for names, logits in candidates
                ):
                    mixes.append(f"edits {first}..{last}: {routed.expert_names}")
                calls[worker] += 1
            except BaseException as error:  # any exception is a failure of the store's contract
                errors.append(error)
                return

    def edit() -> None:
        nonlocal completed
        while not stop.is_set():
            try:
                edits[completed % 3](router)
            except BaseException as error:
                errors.append(error)
                return
            completed += 1

    threads = [threading.Thread(target=route, args=(worker,)) for worker in range(8)]
    threads.append(threading.Thread(target=edit))
    for thread in threads:
        thread.start()
    time.sleep(float(os.environ.get("IR3DE_STRESS_SECONDS", "20")))
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == [] and mixes == []
    assert completed >= 30 and min(calls) >= 10, (completed, calls)


def _cycle(domains: dict[str, torch.Tensor]) -> tuple[list[dict[str, torch.Tensor]], list]:
    """Three routers in turn (experts a-c; d added; d replaced by other data) and the edits between them."""
    base = {name: domains[name] for name in "abc"}
    states = [base, {**base, "d": domains["d"]}, {**base, "d": domains["e"]}]
    edits = [
        lambda router: router.add_expert("d", input_ids=domains["d"]),
        lambda router: router.update_expert("d", input_ids=domains["e"]),
        lambda router: router.remove_expert("d"),
    ]
    return states, edits


def test_eight_threads_routing_while_experts_change_derive_each_version_once(embedding, domains):
    """8 threads ask for the routing tables while a ninth edits: every version is derived once however many
    threads need it (builds == versions seen), and each thread's scores equal those of a router built from scratch
    in one thread for that version."""
    states, edits = _cycle(domains)
    probe = torch.cat([ids[-4:, :24] for ids in domains.values()])
    expected = []
    for state in states:
        tables = _router(embedding, state).store.tables()
        expected.append((tables.names, tables.scores_at(probe)))
    router = _router(embedding, states[0])
    first_version, derived_before = router.store.version, router.store.tables_derived
    seen: list[tuple[int, tuple[str, ...], torch.Tensor]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def route() -> None:
        while not stop.is_set():
            try:
                tables = router.store.tables()
                seen.append((tables.version, tables.names, tables.scores_at(probe)))
            except BaseException as error:  # any exception is a failure of the store's contract
                errors.append(error)
                return

    threads = [threading.Thread(target=route) for _ in range(8)]
    for thread in threads:
        thread.start()
    for k in range(30):
        edits[k % 3](router)
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    versions = {version for version, _, _ in seen}
    assert router.store.tables_derived - derived_before == len(versions) <= 31
    assert len(versions) > 3 and len(seen) > 8 * len(versions)  # the threads did share the versions
    for version, names, scores in seen:
        expected_names, expected_scores = expected[(version - first_version) % 3]
        assert names == expected_names
        torch.testing.assert_close(scores, expected_scores, rtol=0, atol=1e-5)


def test_threads_that_wait_through_an_edit_derive_only_the_newest_version(embedding, domains):
    """8 routes wait while another thread derives; two edits land meanwhile. When the lock is free one thread
    derives the newest version and the others take it: one derivation, none for the version that was replaced, and
    every route answers as the router after both edits."""
    states, edits = _cycle(domains)
    probe = torch.cat([ids[-4:, :24] for ids in domains.values()])
    expected = _router(embedding, states[2]).route(probe)
    router = _router(embedding, states[0])
    router.route(probe)
    derived_before = router.store.tables_derived
    results = []
    with router.store._shared.lock:  # what a thread deriving the tables holds
        edits[0](router)
        threads = [threading.Thread(target=lambda: results.append(router.route(probe))) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the routes now wait for the lock, having seen the version after the first edit
        edits[1](router)
    for thread in threads:
        thread.join()
    assert router.store.tables_derived - derived_before == 1
    assert len(results) == 8
    for routed in results:
        assert routed.expert_names == expected.expert_names
        torch.testing.assert_close(routed.logits, expected.logits, rtol=0, atol=1e-6)
