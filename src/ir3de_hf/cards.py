# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Model cards for routers and statistics repositories, rendered from ``hub_cards/`` templates.

Rendering never touches the network: the Hub's own YAML check runs only when a card is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ._hub_files import hub_id
from ._templates import template_path

if TYPE_CHECKING:
    from .calibration import CalibrationReport
    from .configuration_ir3de import IR3DEConfig
    from .evaluation import RoutingReport
    from .shared_statistics import ExpertStatistics

__all__ = ["CALIBRATION_IMAGE", "CONFUSION_IMAGE", "CardInfo", "IR3DEModelCardData", "router_card", "statistics_card"]

CALIBRATION_IMAGE = "calibration.png"
CONFUSION_IMAGE = "confusion_matrix.png"
_TAGS = ["ir3de", "router", "mixture-of-experts", "domain-routing"]


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
    """What a router's card says beyond the router itself; pass it to ``save_pretrained(card=...)`` or
    ``push_to_hub(card=...)``.

    Args:
        repo_id: the Hub id used in the usage snippet (set by ``push_to_hub``).
        evaluation: a [`~ir3de_hf.evaluation.RoutingReport`]; adds accuracy, the confusion matrix (table and
            ``confusion_matrix.png``) and a ``model-index``.
        evaluation_dataset, evaluation_split: what ``evaluation`` was measured on (a Hub dataset id is linked).
        datasets: Hub ids of the datasets the experts' statistics were counted on.
        license, tags: card metadata (the ir3de tags are always added).
        sections: markdown placed before the usage snippet (a recipe's own results and command).
        calibration: the [`~ir3de_hf.calibration.CalibrationReport`] of `router.calibrate`; adds its coverage/accuracy
            curve and the reliability diagram (``calibration.png``). The fitted temperature and threshold are shown
            from the config in any case.
    """

    repo_id: str | None = None
    evaluation: RoutingReport | None = None
    evaluation_dataset: str | None = None
    evaluation_split: str | None = None
    datasets: list[str] | None = None
    license: str = "apache-2.0"
    tags: list[str] | None = None
    sections: str | None = None
    calibration: CalibrationReport | None = None


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
    repo_id, evaluation = info.repo_id, info.evaluation
    evaluation_dataset, evaluation_split = info.evaluation_dataset, info.evaluation_split
    encoder = hub_id(config.encoder)
    name = repo_id or "path/to/this/router"
    title = repo_id.split("/")[-1] if repo_id else "IR3DE router"
    eval_results = None
    if evaluation is not None:
        dataset = evaluation_dataset or "evaluation prompts"
        metrics = [
            ("accuracy", evaluation.accuracy, "Routing accuracy"),
            ("recall", evaluation.normalized_accuracy, "Normalised accuracy (mean recall)"),
        ]
        eval_results = [
            EvalResult(
                task_type="text-classification",
                task_name="Prompt routing",
                dataset_type=hub_id(dataset) or dataset,
                dataset_name=dataset,
                dataset_split=evaluation_split,
                metric_type=metric_type,
                metric_value=round(value, 4),
                metric_name=metric_name,
            )
            for metric_type, value, metric_name in metrics
        ]
    card_data = IR3DEModelCardData(
        base_model=encoder,
        datasets=info.datasets or None,
        license=info.license,
        tags=info.tags,
        model_name=title,
        eval_results=eval_results,
    )
    specs = config.expert_specs
    experts = [
        {
            "name": spec.name,
            "model": _link(spec.source) if spec.source else "—",
            "revision": f"`{spec.revision}`" if spec.revision else "main" if hub_id(spec.source) else "—",
            "kind": ("adapter of " + (_link(spec.base_model) if spec.base_model else "?"))
            if spec.kind == "adapter"
            else "model",
            "tokens": f"{tokens:,}"
            + (" (moments, padding counted)" if spec.includes_padding else " (moments)" if spec.statistics else ""),
            "description": (spec.description or "").replace("|", "\\|").replace("\n", " "),
        }
        for spec, tokens in zip(specs, token_counts, strict=True)
    ]
    total = sum(token_counts)
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("model_card.md")),
        title=title,
        repo_id=name,
        num_experts=len(experts),
        experts=experts,
        imported=any(spec.statistics == "moments" for spec in specs),
        padding_counted=any(spec.includes_padding for spec in specs),
        encoder=config.encoder,
        encoder_revision=config.encoder_revision,
        encoder_line=_encoder_line(config.encoder, config.encoder_revision, config.vocab_size, config.hidden_size),
        aggregation=config.aggregation,
        top_k=config.top_k,
        ridge_lambda=config.ridge_lambda,
        normalize_columns=config.normalize_columns,
        total_tokens=f"{total:,}",
        by_reference=by_reference,
        evaluation=_evaluation(evaluation, evaluation_dataset, evaluation_split, confusion_image),
        sections=info.sections,
        calibration=_calibration(config, info.calibration, calibration_image),
    )


def statistics_card(
    statistics: ExpertStatistics, *, repo_id: str | None = None, expert: str | None = None
) -> ModelCard:
    """The ``README.md`` of a statistics repository (see [`ExpertStatistics`])."""
    encoder = hub_id(statistics.encoder)
    card_data = IR3DEModelCardData(
        base_model=encoder if statistics.kind == "moments" else None,
        license="apache-2.0",
        tags=["ir3de-statistics"],
        pipeline_tag=None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("statistics_card.md")),
        name=statistics.name,
        repo_id=repo_id or "path/to/these/statistics",
        expert=expert,
        kind=statistics.kind,
        tokens=f"{statistics.token_count:,}",
        vocab_size=f"{statistics.vocab_size:,}",
        tokenizer_fingerprint=statistics.tokenizer_fingerprint,
        encoder=_link(statistics.encoder) if statistics.encoder else "—",
        encoder_fingerprint=statistics.encoder_fingerprint,
        includes_padding=statistics.includes_padding,
        description=statistics.description,
    )


def _calibration(config: IR3DEConfig, report: CalibrationReport | None, image: str | None) -> dict[str, Any] | None:
    temperature = config.calibration_temperatures.get(config.aggregation)
    if temperature is None and config.min_confidence is None:
        return None
    return {
        "temperature": "none (uncalibrated)" if temperature is None else f"{temperature:.4g}",
        "min_confidence": "none" if config.min_confidence is None else f"{config.min_confidence:.4f}",
        "report": report.markdown() if report is not None else None,
        "image": image,
    }


def _link(value: str) -> str:
    repo = hub_id(value)
    return f"[{repo}](https://huggingface.co/{repo})" if repo else f"`{value}` (local)"


def _encoder_line(encoder: str | None, revision: str | None, vocab_size: int, hidden_size: int) -> str:
    where = _link(encoder) if encoder else "an embedding table given in code"
    pinned = f" at revision `{revision}`" if revision else ""
    return f"{where}{pinned}: input embeddings, {vocab_size:,} tokens x {hidden_size} dimensions, frozen"


def _evaluation(
    report: RoutingReport | None, dataset: str | None, split: str | None, image: str | None
) -> dict[str, Any] | None:
    if report is None:
        return None
    prompts = sum(sum(row) for row in report.confusion)
    return {
        "dataset": _link(dataset) if dataset and hub_id(dataset) else (dataset or "held-out prompts"),
        "split": split,
        "prompts": f"{prompts:,}",
        "accuracy": f"{report.accuracy:.1%}",
        "normalized_accuracy": f"{report.normalized_accuracy:.1%}",
        "confusion": report.confusion_markdown(),
        "image": image,
    }
