# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Model cards for routers and statistics repositories, and `CardInfo`, what a router's card says beyond the router.

The cards are `string.Template` files of ``hub_cards/`` filled with blocks built here: rendering needs no jinja2 and
never touches the network (the Hub's own YAML check runs only when a card is committed). `CardInfo` is part of a
router's saved state (``card.json`` and ``calibration.json``, see `ir3de_hf.hub`), so a card survives load, save and
push; as peft's ``create_or_update_model_card``, an update keeps what it does not replace.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ._templates import template_path
from .hub._locations import hub_id

if TYPE_CHECKING:
    from .calibration import CalibrationReport
    from .configuration_ir3de import ExpertSpec, IR3DEConfig
    from .evaluation import RoutingReport
    from .shared_statistics import ExpertStatistics

__all__ = ["CALIBRATION_IMAGE", "CONFUSION_IMAGE", "CardInfo", "IR3DEModelCardData", "router_card", "statistics_card"]

CALIBRATION_IMAGE = "calibration.png"
CONFUSION_IMAGE = "confusion_matrix.png"
_LICENSE = "apache-2.0"
_TAGS = ["ir3de", "router", "mixture-of-experts", "domain-routing"]
_IMPORTED_NOTE = """\
Experts marked *moments* were imported as `(A_n, b_n)` statistics (for example from the reference implementation):
they can be removed or replaced, not re-weighted by token."""
_PADDING_NOTE = """\
Experts marked *padding counted* come from IR3DE-AXL statistics, which sum over every position of EOS-padded batches:
their moments include the padding and the BOS/EOS rows, which cannot be taken out. Such experts attract prompts by
those tokens; on our benchmark, counting EOS padding sends every 64-token prompt to one expert under majority vote."""
_NO_MODEL = "statistics only (routing, no model)"
_STATISTICS_KINDS = {
    "histogram": """\
`statistics.safetensors` holds one int64 count per vocabulary id (`histogram`): how often each token occurs in the
domain's text. It reveals token frequencies, not the text, and does not depend on the encoder.""",
    "moments": """\
`statistics.safetensors` holds the moments `A_n = Σ x xᵀ` and `b_n = Σ x` over the domain's tokens (`x = [E[t], 1]`),
valid only with the encoder whose embedding table has the fingerprint above. An expert added from moments can be
removed or replaced, not re-weighted by token.""",
}


class IR3DEModelCardData(ModelCardData):
    """Card metadata with the ir3de_hf defaults: ``library_name``, the text-classification pipeline and ir3de tags."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("library_name", "ir3de_hf")
        kwargs.setdefault("pipeline_tag", "text-classification")
        tags = list(kwargs.pop("tags", None) or [])
        kwargs["tags"] = _TAGS + [tag for tag in tags if tag not in _TAGS]
        super().__init__(**kwargs)


@dataclass
class CardInfo:
    """What a router's card says beyond the router itself: ``router.card``, saved and loaded with the router. Pass
    one to ``save_pretrained(card=...)`` or ``push_to_hub(card=...)``: the fields it sets replace the router's, the
    others are kept.

    Args:
        repo_id: the Hub id used in the usage snippet (set by ``push_to_hub``; not kept by the router).
        evaluation: a [`~ir3de_hf.evaluation.RoutingReport`]; adds accuracy, the confusion matrix (table and
            ``confusion_matrix.png``) and a ``model-index``.
        evaluation_dataset, evaluation_split: what ``evaluation`` was measured on (a Hub dataset id is linked).
        datasets: Hub ids of the datasets the experts' statistics were counted on.
        license: the card's license (default ``apache-2.0``).
        tags: card metadata (the ir3de tags are always added).
        sections: markdown placed before the usage snippet (a recipe's own results and command).
        calibration: the [`~ir3de_hf.calibration.CalibrationReport`] of `router.calibrate`; adds its coverage/accuracy
            curve, the reliability diagram (``calibration.png``) and ``calibration.json``. The fitted temperature and
            threshold are shown from the config in any case.
    """

    repo_id: str | None = None
    evaluation: RoutingReport | None = None
    evaluation_dataset: str | None = None
    evaluation_split: str | None = None
    datasets: list[str] | None = None
    license: str | None = None
    tags: list[str] | None = None
    sections: str | None = None
    calibration: CalibrationReport | None = field(default=None, repr=False)

    def updated(self, other: CardInfo | None) -> CardInfo:
        """This card with the fields ``other`` sets (not None) replaced."""
        if other is None:
            return self
        given = {f.name: getattr(other, f.name) for f in fields(other)}
        return replace(self, **{name: value for name, value in given.items() if value is not None})

    def to_dict(self) -> dict[str, Any]:
        """The fields a saved router keeps in ``card.json`` (plain JSON; the calibration report has its own file and
        ``repo_id`` belongs to a push), without the unset ones."""
        values: dict[str, Any] = {
            "evaluation": self.evaluation.to_dict() if self.evaluation is not None else None,
            "evaluation_dataset": self.evaluation_dataset,
            "evaluation_split": self.evaluation_split,
            "datasets": self.datasets,
            "license": self.license,
            "tags": self.tags,
            "sections": self.sections,
        }
        return {key: value for key, value in values.items() if value is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any], calibration: CalibrationReport | None = None) -> CardInfo:
        """The card of `to_dict`'s ``values`` (and a calibration report); unknown keys are refused."""
        from .evaluation import RoutingReport

        known = {"evaluation", "evaluation_dataset", "evaluation_split", "datasets", "license", "tags", "sections"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown card field(s) {unknown}; expected some of {sorted(known)}")
        evaluation = values.get("evaluation")
        return cls(
            **{key: value for key, value in values.items() if key != "evaluation"},
            evaluation=RoutingReport(**evaluation) if evaluation is not None else None,
            calibration=calibration,
        )


def router_card(
    config: IR3DEConfig,
    token_counts: Sequence[int],
    info: CardInfo | None = None,
    *,
    confusion_image: str | None = None,
    calibration_image: str | None = None,
    by_reference: bool = False,
) -> ModelCard:
    """The ``README.md`` of a saved or pushed router: YAML metadata (library, pipeline, tags, the encoder as
    ``base_model``, datasets, license and a ``model-index`` when an evaluation is given), the expert table with links,
    routing metrics and the confusion matrix, a usage snippet and the citation.

    Args:
        config: the router's config (registry, encoder, settings).
        token_counts: tokens counted per expert, in registry order.
        info: what the card says beyond the router.
        confusion_image: file name of the confusion-matrix PNG saved beside the card.
        calibration_image: file name of the reliability-diagram PNG saved beside the card.
        by_reference: the router is saved without its embedding table.
    """
    info = info or CardInfo()
    title = info.repo_id.split("/")[-1] if info.repo_id else "IR3DE router"
    card_data = IR3DEModelCardData(
        base_model=hub_id(config.encoder),
        datasets=info.datasets or None,
        license=info.license or _LICENSE,
        tags=info.tags,
        model_name=title,
        eval_results=_eval_results(info),
    )
    specs = config.expert_specs
    blocks = [
        _IMPORTED_NOTE if any(spec.statistics == "moments" for spec in specs) else None,
        _PADDING_NOTE if any(spec.includes_padding for spec in specs) else None,
        _evaluation(info, confusion_image),
        _calibration(config, info.calibration, calibration_image),
        info.sections,
    ]
    top_k = f" (k = {config.top_k})" if config.aggregation == "entropy_top_k" else ""
    by_reference_note = ""
    if by_reference:
        pinned = f" at revision `{config.encoder_revision}`" if config.encoder_revision else ""
        by_reference_note = (
            "\n\nThis repository holds no embedding table: `from_pretrained` re-materialises it from "
            f"`{config.encoder}`{pinned} and checks it against the sha256 in\n`config.json`."
        )
    return _render(
        "model_card.md",
        card_data,
        title=title,
        repo_id=info.repo_id or "path/to/this/router",
        num_experts=len(specs),
        encoder_line=_encoder_line(config.encoder, config.encoder_revision, config.vocab_size, config.hidden_size),
        aggregation_line=f"`{config.aggregation}`{top_k}, ridge λ = {config.ridge_lambda}, column normalisation "
        + ("on" if config.normalize_columns else "off"),
        total_tokens=f"{sum(token_counts):,}",
        expert_rows="\n".join(
            f"| {index} | {row} |" for index, row in enumerate(map(_expert_row, specs, token_counts))
        ),
        blocks="".join(f"\n{block}\n" for block in blocks if block),
        by_reference=by_reference_note,
    )


def statistics_card(
    statistics: ExpertStatistics, *, repo_id: str | None = None, expert: str | None = None
) -> ModelCard:
    """The ``README.md`` of a statistics repository (see [`ExpertStatistics`])."""
    card_data = IR3DEModelCardData(
        base_model=hub_id(statistics.encoder) if statistics.kind == "moments" else None,
        license=_LICENSE,
        tags=["ir3de-statistics"],
        pipeline_tag=None,
    )
    rows = [
        ("kind", statistics.kind),
        ("tokens", f"{statistics.token_count:,}"),
        ("vocabulary size", f"{statistics.vocab_size:,}"),
        ("tokenizer fingerprint", f"`{statistics.tokenizer_fingerprint}`"),
        ("encoder", _link(statistics.encoder) if statistics.encoder else "—"),
    ]
    if statistics.encoder_fingerprint:
        rows.append(("encoder fingerprint", f"`{statistics.encoder_fingerprint}`"))
    if statistics.includes_padding:
        rows.append(("padding counted", "yes: the moments include EOS padding and BOS/EOS rows"))
    return _render(
        "statistics_card.md",
        card_data,
        name=statistics.name,
        repo_id=repo_id or "path/to/these/statistics",
        expert_argument=f', expert="{expert}"' if expert else "",
        rows="\n".join(f"| {key} | {value} |" for key, value in rows),
        description=f"\n{statistics.description}\n" if statistics.description else "",
        explanation=_STATISTICS_KINDS[statistics.kind],
    )


def _render(template: str, card_data: ModelCardData, **values: Any) -> ModelCard:
    """Fills a ``hub_cards/`` template; every placeholder must be given (`string.Template.substitute`)."""
    text = string.Template(template_path(template).read_text(encoding="utf-8"))
    return ModelCard(text.substitute(values, card_data=card_data.to_yaml()).removesuffix("\n"))


def _expert_row(spec: ExpertSpec, tokens: int) -> str:
    kind = "model" if spec.source else _NO_MODEL
    if spec.base_model is not None:
        kind = "adapter of " + _link(spec.base_model)
    revision = f"`{spec.revision}`" if spec.revision else "main" if hub_id(spec.source) else "—"
    counted = " (moments, padding counted)" if spec.includes_padding else " (moments)" if spec.statistics else ""
    description = (spec.description or "").replace("|", "\\|").replace("\n", " ")
    model = _link(spec.source) if spec.source else "—"
    return f"`{spec.name}` | {model} | {revision} | {kind} | {tokens:,}{counted} | {description}"


def _eval_results(info: CardInfo) -> list[EvalResult] | None:
    if info.evaluation is None:
        return None
    dataset = info.evaluation_dataset or "evaluation prompts"
    metrics = [
        ("accuracy", info.evaluation.accuracy, "Routing accuracy"),
        ("recall", info.evaluation.normalized_accuracy, "Normalised accuracy (mean recall)"),
    ]
    return [
        EvalResult(
            task_type="text-classification",
            task_name="Prompt routing",
            dataset_type=hub_id(dataset) or dataset,
            dataset_name=dataset,
            dataset_split=info.evaluation_split,
            metric_type=metric_type,
            metric_value=round(value, 4),
            metric_name=metric_name,
        )
        for metric_type, value, metric_name in metrics
    ]


def _evaluation(info: CardInfo, image: str | None) -> str | None:
    report, dataset, split = info.evaluation, info.evaluation_dataset, info.evaluation_split
    if report is None:
        return None
    where = _link(dataset) if dataset and hub_id(dataset) else (dataset or "held-out prompts")
    prompts = sum(sum(row) for row in report.confusion)
    lines = [
        "## Routing quality",
        "",
        f"On {where}" + (f" (`{split}` split)" if split else "") + f", {prompts:,} prompts:",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {report.accuracy:.1%} |",
        f"| normalised accuracy (mean recall) | {report.normalized_accuracy:.1%} |",
        "",
        report.confusion_markdown(),
    ]
    if image:
        lines += ["", f"![Confusion matrix]({image})"]
    return "\n".join(lines)


def _calibration(config: IR3DEConfig, report: CalibrationReport | None, image: str | None) -> str | None:
    temperature = config.calibration_temperatures.get(config.aggregation)
    if temperature is None and config.min_confidence is None:
        return None
    shown = "none (uncalibrated)" if temperature is None else f"{temperature:.4g}"
    threshold = "none" if config.min_confidence is None else f"{config.min_confidence:.4f}"
    lines = [
        "## Calibration and fallback",
        "",
        f"`route()` returns `probabilities = softmax(logits / T)` with temperature T = {shown} for",
        f"`{config.aggregation}`, and `confident = False` for prompts whose top probability is under "
        "`min_confidence` =",
        f"{threshold}; `generate(..., fallback_expert=...)` sends those to the fallback expert.",
    ]
    if report is not None:
        lines += ["", report.markdown()]
    if image:
        lines += ["", f"![Reliability diagram and coverage/accuracy curve]({image})"]
    return "\n".join(lines)


def _link(value: str) -> str:
    repo = hub_id(value)
    return f"[{repo}](https://huggingface.co/{repo})" if repo else f"`{value}` (local)"


def _encoder_line(encoder: str | None, revision: str | None, vocab_size: int, hidden_size: int) -> str:
    where = _link(encoder) if encoder else "an embedding table given in code"
    pinned = f" at revision `{revision}`" if revision else ""
    return f"{where}{pinned}: input embeddings, {vocab_size:,} tokens x {hidden_size} dimensions, frozen"
