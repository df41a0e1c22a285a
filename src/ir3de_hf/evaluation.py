# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Routing quality and routed perplexity: the numbers the paper compares routers on.

- routing accuracy, per-domain recall, normalised accuracy (the mean of the recalls, robust to class imbalance);
- the confusion matrix as a markdown table and a PNG;
- routed perplexity per true domain, and normalised performance = mean over domains of ``ppl_oracle / ppl_routed``
  x 100, where perplexities aggregate token NLLs (not a mean of per-text perplexities).

>>> report = routing_report(["a", "a", "b"], ["a", "b", "b"], labels=["a", "b"])
>>> report.accuracy, report.normalized_accuracy, report.recall
(0.6666666666666666, 0.75, {'a': 0.5, 'b': 1.0})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._extras import require
from ._figures import save_figure
from .perplexity import NLLTotal

__all__ = [
    "RoutingReport",
    "evaluate_routing",
    "normalized_performance",
    "perplexity_by_domain",
    "plot_confusion_matrix",
    "routing_report",
]

NO_DECISION = "(none)"


@dataclass
class RoutingReport:
    """Routing quality on labelled prompts. ``confusion[i][j]`` counts prompts of ``labels[i]`` routed to
    ``columns[j]``; ``columns`` is ``labels`` plus ``"(none)"`` when some prompts got no decision."""

    labels: list[str]
    columns: list[str]
    confusion: list[list[int]]
    accuracy: float
    normalized_accuracy: float
    recall: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "normalized_accuracy": self.normalized_accuracy,
            "recall": self.recall,
            "labels": self.labels,
            "columns": self.columns,
            "confusion": self.confusion,
        }

    def confusion_markdown(self) -> str:
        """The confusion matrix as a markdown table (rows: true domain, columns: chosen expert)."""
        lines = ["| true \\ routed | " + " | ".join(self.columns) + " | recall |"]
        lines.append("|---" * (len(self.columns) + 2) + "|")
        for label, row in zip(self.labels, self.confusion, strict=True):
            cells = " | ".join(str(count) for count in row)
            lines.append(f"| {label} | {cells} | {self.recall[label]:.1%} |")
        return "\n".join(lines)


def routing_report(
    true_labels: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str] | None = None
) -> RoutingReport:
    """Compares routing decisions with the true domains. A ``None`` decision (no evidence) counts as wrong."""
    if len(true_labels) != len(predicted):
        raise ValueError(f"{len(true_labels)} true labels but {len(predicted)} predictions; they must pair up.")
    if not true_labels:
        raise ValueError("No prompts to evaluate.")
    labels = list(labels) if labels is not None else sorted(set(true_labels))
    unknown = sorted(set(true_labels) - set(labels))
    if unknown:
        raise ValueError(f"True labels {unknown} are not among the labels {labels}.")
    columns = list(labels) + ([NO_DECISION] if any(p is None for p in predicted) else [])
    foreign = sorted({p for p in predicted if p is not None} - set(labels))
    columns += foreign
    index = {name: i for i, name in enumerate(columns)}
    confusion = [[0] * len(columns) for _ in labels]
    for truth, choice in zip(true_labels, predicted, strict=True):
        confusion[labels.index(truth)][index[NO_DECISION if choice is None else choice]] += 1
    recall = {
        label: row[index[label]] / sum(row) for label, row in zip(labels, confusion, strict=True) if sum(row) > 0
    }
    correct = sum(row[index[label]] for label, row in zip(labels, confusion, strict=True))
    return RoutingReport(
        labels=labels,
        columns=columns,
        confusion=confusion,
        accuracy=correct / len(true_labels),
        normalized_accuracy=sum(recall.values()) / len(recall),
        recall=recall,
    )


def evaluate_routing(
    router: Any, texts: Sequence[str], domains: Sequence[str], lengths: Sequence[int] = (16, 64, 256)
) -> dict[int, RoutingReport]:
    """Routes each text cut to its first ``n`` tokens (router's tokenizer, no special tokens) for every ``n`` in
    ``lengths``; the router's expert names are the domain labels."""
    if router.tokenizer is None:
        raise ValueError("The router has no tokenizer; evaluation routes text.")
    ids = router.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return {
        n: routing_report(domains, router.route([row[:n] for row in ids]).expert_names, labels=router.expert_names)
        for n in lengths
    }


def plot_confusion_matrix(report: RoutingReport, path: str | Path, title: str = "IR3DE routing") -> Path:
    """Writes the confusion matrix, normalised by row (recall on the diagonal), as a PNG."""
    # A bare Figure (no pyplot, no matplotlib.use) leaves the caller's backend and figure registry alone.
    Figure = require("matplotlib.figure", extra="data", purpose="the confusion-matrix plot").Figure

    shares = [[count / max(1, sum(row)) for count in row] for row in report.confusion]
    figure = Figure(figsize=(1.1 * len(report.columns) + 2.5, 0.8 * len(report.labels) + 1.8))
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(report.columns)), report.columns, rotation=35, ha="right")
    axes.set_yticks(range(len(report.labels)), report.labels)
    axes.set_xlabel("routed to")
    axes.set_ylabel("true domain")
    axes.set_title(f"{title}: accuracy {report.accuracy:.1%}")
    for i, row in enumerate(report.confusion):
        for j, count in enumerate(row):
            if count:
                axes.text(j, i, str(count), ha="center", va="center", color="white" if shares[i][j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true domain")
    return save_figure(figure, path)


def perplexity_by_domain(
    true_labels: Sequence[str], nll: Sequence[NLLTotal], labels: Sequence[str] | None = None
) -> dict[str, float]:
    """Perplexity per true domain from per-text NLL totals: ``exp(Σ nll / Σ tokens)`` over the domain's texts."""
    if len(true_labels) != len(nll):
        raise ValueError(f"{len(true_labels)} labels but {len(nll)} NLL totals; they must pair up.")
    totals: dict[str, NLLTotal] = {label: NLLTotal(0.0, 0) for label in (labels or sorted(set(true_labels)))}
    for label, total in zip(true_labels, nll, strict=True):
        totals[label] = totals[label] + total
    return {label: total.perplexity for label, total in totals.items()}


def normalized_performance(oracle: Mapping[str, float], routed: Mapping[str, float]) -> float:
    """Mean over domains of ``ppl_oracle / ppl_routed`` x 100: 100 means routing as well as knowing the domain."""
    if set(oracle) != set(routed):
        raise ValueError(f"Domains differ: oracle has {sorted(oracle)}, routed has {sorted(routed)}.")
    return 100 * sum(oracle[domain] / routed[domain] for domain in oracle) / len(oracle)
