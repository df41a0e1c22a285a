# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Calibrated probabilities and a fallback threshold chosen from held-out data.

A router's ``logits`` are vote shares or mean token scores: their scale depends on the aggregation and says nothing
about how often a decision is right. [`calibrate`] routes labelled held-out prompts and

1. fits a temperature ``T`` by minimising the negative log-likelihood of the true experts under
   ``softmax(logits / T)`` (temperature scaling: one parameter, so it cannot overfit a few hundred prompts, and it
   never changes a decision). The NLL is convex in ``1 / T``, so a damped Newton iteration finds the optimum exactly;
2. picks ``min_confidence``, a threshold on the calibrated **top probability**, from a target accuracy of the routed
   prompts or a target fallback rate. For an accuracy target, the threshold is the lowest at which the lower end of
   the Wilson interval (one standard error) of the routed prompts' accuracy still reaches the target: the raw
   accuracy curve hovers around the target over a wide range of thresholds, and taking its last crossing overfits the
   calibration prompts (on halves of the ir3de-multidomain validation split it promised 99% and delivered 96.4%; with
   the bound, 99% on the validation split held at 99.6% on the test split).

What is refused, in [`calibrate`] and [`fit_calibration`] alike (so the API and ``ir3de calibrate`` cannot disagree):
a router with fewer than two experts (one softmax over one expert is always 1); calibration prompts of a single
expert (the temperature then only grows the confidence without limit: T -> 0 and a threshold of 1.0); and prompts that
leave out some of the router's experts, unless ``allow_missing_experts=True``, which records those experts in the
report and on the card: the threshold was then never checked against the prompts of the experts it did not see.

Why the top probability and not the margin: once calibrated it means the same thing for every aggregation, prompt
length and expert set (an estimated chance of being right), so one number can be read, compared and set by hand;
a margin is in the units of the aggregation's scores (vote shares vs mean scores) and must be re-learned for each.
On the ir3de-multidomain validation split both orderings give nearly the same coverage/accuracy curve, so the
interpretable one costs nothing.

>>> import torch
>>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.9]])
>>> temperature = fit_temperature(logits, torch.tensor([0, 1, 1]))
>>> round(temperature, 3)
0.343
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._extras import require
from ._figures import save_figure
from .aggregation import probabilities

if TYPE_CHECKING:
    from .configuration_ir3de import IR3DEConfig
    from .modeling_ir3de import IR3DERouterModel

__all__ = ["CalibrationReport", "calibrate", "expected_calibration_error", "fit_calibration", "fit_temperature"]

_BINS = 15
_COVERAGES = (1.0, 0.99, 0.98, 0.95, 0.9, 0.8, 0.7, 0.5)
_Z = 1.0  # the target accuracy must hold one standard error below the calibration estimate (see _threshold)
_MAX_INVERSE_TEMPERATURE = 1e6  # separable data (every prompt right) has no finite optimum: cap 1/T


@dataclass
class CalibrationReport:
    """What [`calibrate`] fitted and how the router does on the calibration prompts.

    ``coverage`` is the share of prompts routed (confident) at ``min_confidence``, ``routed_accuracy`` the accuracy
    of those, ``accuracy`` the accuracy of all decisions. ``ece`` / ``nll`` are after calibration, the
    ``*_uncalibrated`` ones at temperature 1. ``curve`` gives threshold and accuracy at several coverages; ``bins``
    the reliability diagram (mean confidence and accuracy per confidence bin). ``missing_experts`` are the router's
    experts that no calibration prompt was labelled with (only with ``allow_missing_experts=True``).
    """

    aggregation: str
    temperature: float
    min_confidence: float | None
    prompts: int
    prompt_tokens: list[int] | None
    accuracy: float
    coverage: float
    routed_accuracy: float
    ece: float
    ece_uncalibrated: float
    nll: float
    nll_uncalibrated: float
    curve: list[dict[str, float]] = field(default_factory=list)
    bins: list[dict[str, float]] = field(default_factory=list)
    missing_experts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: what ``calibration.json`` beside a saved router holds."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CalibrationReport:
        """The report `to_dict` gave (a saved router's ``calibration.json``); unknown or missing keys are refused."""
        return cls(**values)

    def apply(self, config: IR3DEConfig) -> None:
        """Sets the fitted temperature (for this report's aggregation) and ``min_confidence`` on a router's config."""
        config.calibration_temperatures = {**config.calibration_temperatures, self.aggregation: self.temperature}
        config.min_confidence = self.min_confidence

    def markdown(self) -> str:
        """A summary and the coverage/accuracy curve as markdown (what the model card shows)."""
        threshold = "none" if self.min_confidence is None else f"{self.min_confidence:.4f}"
        tokens = "full texts" if self.prompt_tokens is None else "/".join(map(str, self.prompt_tokens)) + " tokens"
        lines = [
            f"Calibrated on {self.prompts} labelled prompts ({tokens}), aggregation `{self.aggregation}`: temperature "
            f"{self.temperature:.4g}, ECE {100 * self.ece:.2f}% (uncalibrated {100 * self.ece_uncalibrated:.2f}%), "
            f"NLL {self.nll:.3f} (uncalibrated {self.nll_uncalibrated:.3f}).",
            "",
            f"Fallback threshold `min_confidence` = {threshold}: {100 * self.coverage:.1f}% of the prompts routed, "
            f"{100 * self.routed_accuracy:.1f}% of them right (all prompts: {100 * self.accuracy:.1f}%).",
            "",
        ]
        if self.missing_experts:
            lines += [
                f"**Not calibrated for {', '.join(f'`{name}`' for name in self.missing_experts)}**: no calibration "
                "prompt was labelled with these experts, so the threshold was never checked on their prompts.",
                "",
            ]
        lines += [
            "| coverage | min. confidence | accuracy of the routed prompts |",
            "|---|---|---|",
        ]
        lines += [
            f"| {100 * p['coverage']:.1f}% | {p['threshold']:.4f} | {100 * p['accuracy']:.1f}% |" for p in self.curve
        ]
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Writes the reliability diagram and the coverage/accuracy curve side by side as a PNG."""
        # a bare Figure: no pyplot state, the caller's backend is left alone
        Figure = require("matplotlib.figure", extra="data", purpose="the reliability diagram").Figure
        figure = Figure(figsize=(10, 4.2))
        reliability, coverage = figure.subplots(1, 2)
        filled = [b for b in self.bins if b["count"]]
        width = 1 / _BINS
        reliability.bar(
            [b["lower"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
            color="#4c72b0", edgecolor="white", label="accuracy",
        )  # fmt: skip
        reliability.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
        reliability.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color="#dd8452")
        reliability.set(xlim=(0, 1), ylim=(0, 1), xlabel="calibrated top probability", ylabel="accuracy")
        reliability.set_title(f"Reliability (ECE {100 * self.ece:.2f}%, T = {self.temperature:.3g})")
        reliability.legend(loc="upper left")
        points = sorted(self.curve, key=lambda p: p["coverage"])
        coverage.plot([p["coverage"] for p in points], [p["accuracy"] for p in points], marker="o")
        if self.min_confidence is not None:
            coverage.axvline(self.coverage, color="gray", linestyle=":", label="chosen threshold")
            coverage.legend(loc="lower left")
        coverage.set(xlabel="coverage (share routed)", ylabel="accuracy of the routed prompts")
        coverage.set_title("Coverage / accuracy")
        return save_figure(figure, path)


def calibrate(
    router: IR3DERouterModel,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    target_accuracy: float | None = None,
    max_fallback_rate: float | None = None,
    prompt_tokens: int | Sequence[int] | None = None,
    allow_missing_experts: bool = False,
) -> CalibrationReport:
    """Fits the temperature of ``router.config.aggregation`` on labelled held-out ``texts`` and sets
    ``config.min_confidence``: the lowest threshold whose routed prompts reach ``target_accuracy``, or the highest
    one that sends at most ``max_fallback_rate`` of the prompts to the fallback; both: the first, refused if it
    exceeds the second; neither: no threshold (None). ``prompt_tokens`` cuts each text to its first n tokens (several
    lengths: each text once per length), to calibrate for the prompt lengths the router will see.

    The labels must cover at least two experts, and every expert of the router unless ``allow_missing_experts``
    (the missing ones are then listed in the report). Every argument is checked before anything is routed; the
    router's config is changed only when everything succeeded; its decisions never change.
    """
    target_accuracy = _checked_share("target_accuracy", target_accuracy, upper_open=False)
    max_fallback_rate = _checked_share("max_fallback_rate", max_fallback_rate, upper_open=True)
    lengths = _checked_lengths(prompt_tokens)
    _checked_flag("allow_missing_experts", allow_missing_experts)
    _check_expert_count(router.expert_names)
    targets, prompts = _labelled_prompts(router, texts, labels, lengths)
    _covered_experts(targets, torch.ones(len(targets), dtype=torch.bool), router.expert_names, allow_missing_experts)
    output = router.route(prompts, token_details=False)
    assert output.logits is not None and output.no_evidence is not None and output.expert_ids is not None
    report = fit_calibration(
        output.logits,
        output.expert_ids,
        output.no_evidence,
        targets,
        aggregation=router.config.aggregation,
        target_accuracy=target_accuracy,
        max_fallback_rate=max_fallback_rate,
        prompt_tokens=lengths,
        expert_names=router.expert_names,
        allow_missing_experts=allow_missing_experts,
    )
    report.apply(router.config)
    return report


def fit_calibration(
    logits: torch.Tensor,
    expert_ids: torch.Tensor,
    no_evidence: torch.Tensor,
    targets: torch.Tensor,
    *,
    aggregation: str,
    target_accuracy: float | None = None,
    max_fallback_rate: float | None = None,
    prompt_tokens: list[int] | None = None,
    expert_names: Sequence[str] | None = None,
    allow_missing_experts: bool = False,
) -> CalibrationReport:
    """The temperature and threshold of [`calibrate`] from routing outputs already computed (``logits``,
    ``expert_ids``, ``no_evidence`` of `IR3DERouterOutput`, ``targets`` the true expert indices): how to calibrate
    on predictions pooled from several routers, such as the held-out-source folds of
    `ir3de_hf.data.protocol.leave_one_source_out`. ``expert_names`` name the columns of ``logits`` in messages and
    in the report (default ``expert 0``, ``expert 1``, ...); the same experts are required as in [`calibrate`].
    Apply the result with [`CalibrationReport.apply`]."""
    target_accuracy = _checked_share("target_accuracy", target_accuracy, upper_open=False)
    max_fallback_rate = _checked_share("max_fallback_rate", max_fallback_rate, upper_open=True)
    _checked_flag("allow_missing_experts", allow_missing_experts)
    names = [f"expert {i}" for i in range(logits.shape[-1])] if expert_names is None else list(expert_names)
    if logits.ndim != 2 or len(names) != logits.shape[1]:
        raise ValueError(
            f"logits must be (prompts x experts) with one column per expert name, got shape {tuple(logits.shape)} "
            f"for {len(names)} names."
        )
    _check_expert_count(names)
    logits, decided = logits.float(), ~no_evidence
    if not bool(decided.any()):
        raise ValueError(
            "No calibration prompt has a token the router can use (empty, or only never-counted tokens); give "
            "held-out prompts with real text of the experts' domains."
        )
    missing = _covered_experts(targets, decided, names, allow_missing_experts)
    correct = (expert_ids == targets) & decided
    temperature = fit_temperature(logits[decided], targets[decided])
    confidence = probabilities(logits, temperature, no_evidence).max(dim=1).values
    uncalibrated = probabilities(logits, 1.0, no_evidence)
    threshold = _threshold(confidence, correct, decided, target_accuracy, max_fallback_rate)
    routed = decided if threshold is None else decided & (confidence >= threshold)
    return CalibrationReport(
        aggregation=aggregation,
        temperature=temperature,
        min_confidence=threshold,
        prompts=len(targets),
        prompt_tokens=prompt_tokens,
        accuracy=float(correct.float().mean()),
        coverage=float(routed.float().mean()),
        routed_accuracy=float(correct[routed].float().mean()) if bool(routed.any()) else float("nan"),
        ece=expected_calibration_error(confidence, correct),
        ece_uncalibrated=expected_calibration_error(uncalibrated.max(dim=1).values, correct),
        nll=_nll(logits[decided], targets[decided], temperature),
        nll_uncalibrated=_nll(logits[decided], targets[decided], 1.0),
        curve=_curve(confidence, correct, decided),
        bins=_bins(confidence, correct),
        missing_experts=missing,
    )


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature ``T`` minimising the mean NLL of ``targets`` (B,) under ``softmax(logits / T)`` (B x N).

    The NLL is convex in ``beta = 1 / T`` (gradient ``E_p[z] - z_y``, curvature ``Var_p[z]``), so a Newton iteration
    with step halving converges to the exact optimum. A router no better than uniform on these labels has no
    positive optimum: `ValueError`.
    """
    z = logits.to(torch.float64)
    z = z - z.mean(dim=1, keepdim=True)
    scale = float(z.std()) or 1.0
    beta = 1.0 / scale
    value = _mean_nll(z, targets, beta)
    for _ in range(200):
        p = torch.softmax(beta * z, dim=1)
        expected = (p * z).sum(dim=1)
        gradient = float((expected - z.gather(1, targets[:, None]).squeeze(1)).mean())
        curvature = float(((p * z * z).sum(dim=1) - expected**2).mean())
        newton = beta - gradient / curvature if curvature > 1e-300 else (4 * beta if gradient < 0 else beta / 4)
        candidate = min(max(newton, beta / 4), _MAX_INVERSE_TEMPERATURE / scale)
        new_value = _mean_nll(z, targets, candidate)
        while new_value > value and abs(candidate - beta) > 1e-12 * beta:
            candidate = (candidate + beta) / 2
            new_value = _mean_nll(z, targets, candidate)
        converged = abs(candidate - beta) <= 1e-9 * beta
        beta, value = candidate, min(value, new_value)
        if converged:
            break
    if _mean_nll(z, targets, beta) >= _mean_nll(z, targets, 0.0) - 1e-12:
        raise ValueError(
            "The router is no better than a uniform guess on these labelled prompts, so no temperature helps: check "
            "that the labels are the router's expert names for the right texts."
        )
    return 1.0 / beta


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = _BINS) -> float:
    """Mean over equal-width confidence bins of ``|accuracy - mean confidence|``, weighted by the bin's prompts."""
    return sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in _bins(confidence, correct, bins)) / len(
        confidence
    )


def _mean_nll(z: torch.Tensor, targets: torch.Tensor, beta: float) -> float:
    return float(-torch.log_softmax(beta * z, dim=1).gather(1, targets[:, None]).mean())


def _nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> float:
    return _mean_nll(logits.to(torch.float64), targets, 1 / temperature)


def _checked_share(name: str, value: float | None, *, upper_open: bool) -> float | None:
    if value is None:
        return None
    interval = "(0, 1)" if upper_open else "(0, 1]"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number in {interval}, got {value!r} (a {type(value).__name__}).")
    if not math.isfinite(value) or not (0 < value < 1 if upper_open else 0 < value <= 1):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}.")
    return float(value)


def _checked_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} (a {type(value).__name__}).")


def _checked_lengths(prompt_tokens: object) -> list[int] | None:
    """``prompt_tokens`` as a list of distinct lengths >= 1 (None: full texts)."""
    if prompt_tokens is None:
        return None
    expected = "prompt_tokens must be an integer >= 1 or a list of them (the prompt lengths to calibrate for)"
    lengths = [prompt_tokens] if isinstance(prompt_tokens, int) else prompt_tokens
    if not isinstance(lengths, list | tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in lengths
    ):
        raise TypeError(f"{expected}, got {prompt_tokens!r}.")
    if not lengths or min(lengths) < 1:
        raise ValueError(f"{expected}, got {prompt_tokens!r}.")
    repeated = sorted({n for n in lengths if lengths.count(n) > 1})
    if repeated:
        raise ValueError(f"prompt_tokens (--tokens) lists {repeated} more than once; give each prompt length once.")
    return list(lengths)


def _check_expert_count(names: Sequence[str]) -> None:
    """Temperature scaling sharpens or flattens the choice between experts: with one expert there is no choice."""
    if len(names) < 2:
        has = f"one ({names[0]!r})" if names else "none"
        raise ValueError(
            f"Calibration needs a router with at least two experts, this one has {has}: add experts first "
            "(router.add_expert, or ir3de add-expert), then calibrate."
        )


def _covered_experts(
    targets: torch.Tensor, decided: torch.Tensor, names: Sequence[str], allow_missing: bool
) -> list[str]:
    """The experts no prompt is labelled with (refused unless ``allow_missing``); refuses prompts of one expert
    only among those the router can route: their NLL falls without limit as T -> 0, so no temperature is fitted."""
    labelled = set(targets.tolist())
    missing = [name for i, name in enumerate(names) if i not in labelled]
    routable = sorted(set(targets[decided].tolist()))
    if len(routable) == 1:
        only = names[routable[0]]
        usable = "" if bool(decided.all()) else " that have a token the router can use"
        raise ValueError(
            f"Only expert {only!r} appears in the calibration prompts{usable}: a temperature cannot be fitted from "
            "one class; give held-out prompts of at least two experts (ideally all of them)."
        )
    if missing and not allow_missing:
        raise ValueError(
            f"The calibration prompts have no prompt of the router's expert(s) {', '.join(map(repr, missing))}: add "
            "held-out prompts labelled with them (--data FILE on the command line), or pass "
            "allow_missing_experts=True (--allow-missing-experts) to calibrate without them; the report and the card "
            "then name them."
        )
    return missing


def _labelled_prompts(
    router: IR3DERouterModel, texts: Sequence[str], labels: Sequence[str], lengths: list[int] | None
) -> tuple[torch.Tensor, list[Any]]:
    """The expert index per prompt and the prompts (texts, or token ids cut to each of ``lengths``)."""
    if isinstance(texts, str) or isinstance(labels, str):
        raise TypeError("texts and labels must be lists (one label per text), not a single string.")
    for name, values in (("texts", texts), ("labels", labels)):
        if not isinstance(values, Sequence):
            raise TypeError(
                f"{name} must be a list (one expert name per text in labels), got a {type(values).__name__}."
            )
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels; give one label (an expert name) per text.")
    if not texts:
        raise ValueError("No calibration texts given; calibrate on a few hundred labelled held-out prompts.")
    wrong = next(((i, label) for i, label in enumerate(labels) if not isinstance(label, str)), None)
    if wrong is not None:
        raise TypeError(f"labels must be expert names (strings); label {wrong[0]} is {wrong[1]!r}.")
    unknown = sorted({label for label in labels if label not in router.expert_names})
    if unknown:
        raise ValueError(
            f"Labels {unknown[:5]} are not experts of the router; labels must be among: "
            f"{', '.join(router.expert_names)}."
        )
    wrong = next(((i, text) for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if wrong is not None:
        raise TypeError(f"Every calibration text must be a string; text {wrong[0]} is a {type(wrong[1]).__name__}.")
    index = [router.expert_names.index(label) for label in labels]
    if lengths is None:
        return torch.tensor(index), texts
    if router.tokenizer is None:
        raise ValueError("prompt_tokens needs the router's tokenizer to cut the texts; this router has none.")
    ids = router.tokenizer(texts, add_special_tokens=False)["input_ids"]
    prompts = [row[:n] for n in lengths for row in ids]
    return torch.tensor(index * len(lengths)), prompts


def _threshold(
    confidence: torch.Tensor,
    correct: torch.Tensor,
    decided: torch.Tensor,
    target_accuracy: float | None,
    max_fallback_rate: float | None,
) -> float | None:
    """The chosen ``min_confidence`` (see [`calibrate`]), or None without a target."""
    if target_accuracy is None and max_fallback_rate is None:
        return None
    order = torch.argsort(confidence[decided], descending=True, stable=True)
    ranked = confidence[decided][order]
    hits = correct[decided][order].double().cumsum(0)
    routed = torch.arange(1, len(ranked) + 1, dtype=torch.float64)
    # A cut is only possible after the last of equal confidences (the threshold routes all of them or none).
    cuts = torch.ones(len(ranked), dtype=torch.bool)
    cuts[:-1] = ranked[1:] < ranked[:-1]
    total = len(confidence)
    if target_accuracy is not None:
        bound = _wilson_lower_bound(hits, routed)
        reach = cuts & (bound >= target_accuracy - 1e-12)
        if not bool(reach.any()):
            best = float(bound[cuts].max())
            raise ValueError(
                f"No threshold reaches target_accuracy={target_accuracy:g} on these {total} prompts with one standard "
                f"error to spare (the best is {best:.4f}); lower the target or calibrate on more labelled prompts."
            )
        k = int(torch.nonzero(reach)[-1])
        fallback = 1 - (k + 1) / total
        if max_fallback_rate is not None and fallback > max_fallback_rate + 1e-12:
            raise ValueError(
                f"target_accuracy={target_accuracy:g} needs a fallback rate of {fallback:.4f} on these prompts, more "
                f"than max_fallback_rate={max_fallback_rate:g}; relax one of the two."
            )
        return float(ranked[k])
    assert max_fallback_rate is not None
    allowed = math.floor(max_fallback_rate * total + 1e-9) - int((~decided).sum())
    if allowed < 0:
        raise ValueError(
            f"{int((~decided).sum())} of the {total} prompts have no usable token and always fall back, more than "
            f"max_fallback_rate={max_fallback_rate:g} allows."
        )
    k = max(len(ranked) - 1 - allowed, 0)  # the least confident routed prompt; ties above it route too
    return float(ranked[k])


def _wilson_lower_bound(hits: torch.Tensor, count: torch.Tensor, z: float = _Z) -> torch.Tensor:
    """Lower end of the Wilson score interval of an accuracy ``hits / count``: what the accuracy of the routed
    prompts is, with one-sided confidence ``z`` (1.645: 95%), on new prompts of the same distribution."""
    share = hits / count
    centre = share + z * z / (2 * count)
    spread = z * torch.sqrt(share * (1 - share) / count + z * z / (4 * count * count))
    return (centre - spread) / (1 + z * z / count)


def _curve(confidence: torch.Tensor, correct: torch.Tensor, decided: torch.Tensor) -> list[dict[str, float]]:
    """Threshold and accuracy of the routed prompts when the most confident ``coverage`` share is routed."""
    order = torch.argsort(confidence.masked_fill(~decided, -1.0), descending=True, stable=True)
    hits = correct[order].double().cumsum(0)
    points = []
    for share in _COVERAGES:
        k = min(max(math.ceil(share * len(order)), 1), int(decided.sum())) - 1
        if k >= 0:
            threshold, accuracy = float(confidence[order[k]]), float(hits[k]) / (k + 1)
            points.append({"coverage": (k + 1) / len(order), "threshold": threshold, "accuracy": accuracy})
    return points


def _bins(confidence: torch.Tensor, correct: torch.Tensor, bins: int = _BINS) -> list[dict[str, float]]:
    index = (confidence.double() * bins).long().clamp(0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append(
            {
                "lower": b / bins,
                "upper": (b + 1) / bins,
                "count": count,
                "confidence": float(confidence[members].double().mean()) if count else 0.0,
                "accuracy": float(correct[members].double().mean()) if count else 0.0,
            }
        )
    return rows
