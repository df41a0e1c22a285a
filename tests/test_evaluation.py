"""Metrics on hand-computed cases, and the baselines on real text with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch

from ir3de_hf.assets import minilm_path
from ir3de_hf.baselines import ClassifierRouter, KNNRouter, OracleRouter, RandomRouter, SentenceEncoder
from ir3de_hf.evaluation import (
    normalized_performance,
    perplexity_by_domain,
    plot_confusion_matrix,
    routing_report,
)
from ir3de_hf.perplexity import NLLTotal, per_text_nll, text_nll

TRUE = ["a", "a", "a", "b", "b", "c"]
PREDICTED = ["a", "b", "a", "b", None, "a"]


def test_confusion_matrix_accuracy_and_normalized_accuracy():
    report = routing_report(TRUE, PREDICTED, labels=["a", "b", "c"])
    assert report.columns == ["a", "b", "c", "(none)"]
    assert report.confusion == [[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]]
    assert report.accuracy == 0.5
    assert report.recall == {"a": 2 / 3, "b": 0.5, "c": 0.0}
    assert report.normalized_accuracy == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    assert report.confusion_markdown() == (
        "| true \\ routed | a | b | c | (none) | recall |\n"
        "|---|---|---|---|---|---|\n"
        "| a | 2 | 1 | 0 | 0 | 66.7% |\n"
        "| b | 0 | 1 | 0 | 1 | 50.0% |\n"
        "| c | 1 | 0 | 0 | 0 | 0.0% |"
    )


def test_normalized_accuracy_is_not_plain_accuracy_on_imbalanced_data():
    report = routing_report(["a"] * 9 + ["b"], ["a"] * 10)
    assert report.accuracy == 0.9 and report.normalized_accuracy == 0.5


def test_bad_report_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="3 true labels but 2 predictions"):
        routing_report(["a", "b", "a"], ["a", "b"])
    with pytest.raises(ValueError, match=r"True labels \['z'\] are not among the labels"):
        routing_report(["z"], ["a"], labels=["a"])


def test_perplexity_aggregates_tokens_not_per_text_perplexities():
    totals = [NLLTotal(2.0, 1), NLLTotal(10.0, 10), NLLTotal(3.0, 3)]
    by_domain = perplexity_by_domain(["a", "a", "b"], totals)
    assert by_domain["a"] == pytest.approx(math.exp(12 / 11))
    assert by_domain["a"] != pytest.approx((math.exp(2) + math.exp(1)) / 2)
    assert by_domain["b"] == pytest.approx(math.e)


def test_normalized_performance():
    assert normalized_performance({"a": 10.0, "b": 20.0}, {"a": 10.0, "b": 25.0}) == pytest.approx(90.0)
    with pytest.raises(ValueError, match="Domains differ"):
        normalized_performance({"a": 1.0}, {"b": 1.0})


def test_per_text_nll_matches_a_manual_cross_entropy(tiny_llama, word_tokenizer, domain_texts):
    texts = domain_texts["legal"][:3]
    totals = per_text_nll(tiny_llama, word_tokenizer, texts, max_tokens=20, batch_size=2)
    for text, total in zip(texts, totals, strict=True):
        ids = word_tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :20]
        with torch.no_grad():
            logits = tiny_llama(input_ids=ids).logits[0, :-1]
        expected = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        assert total.tokens == ids.shape[1] - 1
        assert total.nll == pytest.approx(expected, rel=1e-5)
    assert text_nll(tiny_llama, word_tokenizer, texts, max_tokens=20) == sum(totals, NLLTotal(0.0, 0))


def test_confusion_plot_is_a_png(tmp_path):
    path = plot_confusion_matrix(routing_report(TRUE, PREDICTED), tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_confusion_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import matplotlib
        matplotlib.use("svg")
        from ir3de_hf.evaluation import plot_confusion_matrix, routing_report
        report = routing_report({TRUE!r}, {PREDICTED!r})
        path = plot_confusion_matrix(report, {str(tmp_path / "cm.png")!r})
        assert path.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(minilm_path(), max_length=64)


def test_knn_and_classifier_route_held_out_real_text(encoder, domain_texts):
    names = list(domain_texts)
    train = [(name, text) for name, texts in domain_texts.items() for text in texts[::2]]
    held_out = [(name, text) for name, texts in domain_texts.items() for text in texts[1::2]]
    texts, labels = [t for _, t in train], [n for n, _ in train]
    for router in (KNNRouter(encoder, names).fit(texts, labels), ClassifierRouter(encoder, names).fit(texts, labels)):
        chosen = router.route([t for _, t in held_out]).expert_names
        report = routing_report([n for n, _ in held_out], chosen, labels=names)
        assert report.accuracy > 0.9, type(router).__name__


def test_knn_ties_go_to_the_nearest_neighbour(encoder):
    knn = KNNRouter(encoder, ["fruit", "car"], k=2).fit(["apple banana pear", "car engine wheel"], ["fruit", "car"])
    out = knn.route(["apple banana pear", "car engine wheel"])
    assert out.logits.tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert out.expert_names == ["fruit", "car"]


def test_random_and_oracle_routers():
    names = ["a", "b", "c"]
    first = RandomRouter(names, seed=3).route(["x"] * 300).expert_names
    assert first == RandomRouter(names, seed=3).route(["x"] * 300).expert_names
    assert {first.count(name) for name in names} <= set(range(70, 131))
    oracle = OracleRouter(names, {"p": "c", "q": "a"})
    assert oracle.route(["q", "p"]).expert_names == ["a", "c"]
    with pytest.raises(ValueError, match="does not know the domain"):
        oracle.route(["unseen"])
