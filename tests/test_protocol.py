"""The leave-one-source-out protocol: what a fold may hold, on small lists and on the committed pool."""

from __future__ import annotations

import collections

import pytest

from ir3de_hf.data import DOMAINS
from ir3de_hf.data.protocol import leave_one_source_out, protocol_source, source_pool


def _rows(per_source: dict[tuple[str, str], int]) -> tuple[list[str], list[str], list[str]]:
    domains, sources, doc_ids = [], [], []
    for (domain, source), count in per_source.items():
        for i in range(count):
            domains.append(domain)
            sources.append(source)
            doc_ids.append(f"{source}:{i // 3}")  # three windows per document
    return domains, sources, doc_ids


def test_every_source_is_held_out_once_and_never_trained_on() -> None:
    domains, sources, doc_ids = _rows({("a", "s1"): 9, ("a", "s2"): 6, ("b", "s3"): 12, ("b", "s4"): 3})
    folds = leave_one_source_out(domains, sources, doc_ids)
    assert [fold.source for fold in folds] == ["s1", "s2", "s3", "s4"]
    for fold in folds:
        assert {sources[i] for i in fold.test} == {fold.source}
        assert fold.source not in {sources[i] for i in fold.train}
        assert not {doc_ids[i] for i in fold.test} & {doc_ids[i] for i in fold.train}
        assert len(fold.train) + len(fold.test) == len(domains)  # no cap: everything is on one side
        assert fold.domain == domains[fold.test[0]]


def test_caps_keep_one_training_choice_per_source() -> None:
    domains, sources, doc_ids = _rows({("a", "s1"): 50, ("a", "s2"): 40, ("b", "s3"): 30, ("b", "s4"): 5})
    folds = leave_one_source_out(domains, sources, doc_ids, max_train_per_source=10, max_test_per_source=7, seed=3)
    train_of = collections.defaultdict(set)
    for fold in folds:
        assert len(fold.test) == min(7, sources.count(fold.source))
        per_source = collections.Counter(sources[i] for i in fold.train)
        assert all(count == min(10, sources.count(s)) for s, count in per_source.items())
        for s in per_source:
            train_of[s].add(tuple(i for i in fold.train if sources[i] == s))
    assert all(len(choices) == 1 for choices in train_of.values())  # the same rows in every fold
    again = leave_one_source_out(domains, sources, doc_ids, max_train_per_source=10, max_test_per_source=7, seed=3)
    assert again == folds
    other_seed = leave_one_source_out(domains, sources, doc_ids, max_train_per_source=10, max_test_per_source=7)
    assert other_seed != folds


@pytest.mark.parametrize(
    ("domains", "sources", "doc_ids", "message"),
    [
        (["a", "b", "a", "b"], ["s1", "s1", "s2", "s3"], ["d1", "d2", "d3", "d4"], "two domains"),
        (["a", "a", "b", "b"], ["s1", "s2", "s3", "s4"], ["d1", "d1", "d3", "d4"], "appears in sources"),
        (["a", "a", "b", "b"], ["s1", "s2", "s3", "s3"], ["d1", "d2", "d3", "d4"], r"\['b'\] have one source"),
        (["a"], ["s1", "s2"], ["d1", "d2"], "must pair up"),
    ],
)
def test_refuses_folds_that_would_leak_or_be_empty(domains, sources, doc_ids, message) -> None:
    with pytest.raises(ValueError, match=message):
        leave_one_source_out(domains, sources, doc_ids)


def test_composite_sources_are_split_into_their_corpora() -> None:
    assert protocol_source("pypi-click-requests", "click:core.py") == "pypi-click"
    assert protocol_source("pypi-click-requests", "requests:api.py") == "pypi-requests"
    assert protocol_source("brown-editorial-government", "brown:cb07") == "brown-editorial"
    assert protocol_source("brown-editorial-government", "brown:ch12") == "brown-government"
    assert protocol_source("sotu", "sotu:1790-Washington") == "sotu"


def test_the_committed_pool_gives_three_sources_per_domain_and_disjoint_folds() -> None:
    pool = source_pool()
    keys, doc_ids = list(pool["protocol_source"]), list(pool["doc_id"])
    per_domain = collections.defaultdict(set)
    for domain, key in zip(pool["domain"], keys, strict=True):
        per_domain[domain].add(key)
    assert set(per_domain) == set(DOMAINS)
    assert all(len(sources) >= 3 for sources in per_domain.values()), dict(per_domain)
    domains = list(pool["domain"])
    folds = leave_one_source_out(domains, keys, doc_ids, max_train_per_source=800, max_test_per_source=200)
    assert len(folds) == sum(len(sources) for sources in per_domain.values())
    for fold in folds:
        test_docs = {doc_ids[i] for i in fold.test}
        assert not test_docs & {doc_ids[i] for i in fold.train}
        assert {keys[i] for i in fold.test} == {fold.source} and fold.source not in {keys[i] for i in fold.train}
        assert len(fold.test) >= 30
