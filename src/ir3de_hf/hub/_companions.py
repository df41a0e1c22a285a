# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The one writer of a saved router's files beside transformers' ``config.json`` and ``model.safetensors``.

It gets plain data (`Companions`) and writes, in the save's staging directory: the tokenizer, the local experts'
folders, the card's data files (``card.json``, ``calibration.json``: what `saved_card` reads back, so the card
survives load -> save -> push), its figures and the ``README.md`` model card. Nothing here calls back into the
router.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..configuration_ir3de import IR3DEConfig
    from ..model_card import CardInfo

__all__ = ["CALIBRATION_FILE", "CARD_FILE", "Companions", "write_companions"]

CARD_FILE = "card.json"
CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Companions:
    """What a saved router holds beside its config and weights.

    Attributes:
        config: the config as saved (portable paths already in place).
        token_counts: tokens counted per expert, in registry order.
        tokenizer: the router's tokenizer, or None.
        card: the card content (the router's ``card``).
        by_reference: the save leaves the embedding table out.
        experts: per expert name, the local folder to copy to ``experts/<name>`` and its portable base model.
    """

    config: IR3DEConfig
    token_counts: Sequence[int]
    tokenizer: Any
    card: CardInfo
    by_reference: bool
    experts: dict[str, tuple[Path, str | None]]


def write_companions(directory: Path, companions: Companions) -> None:
    """Writes the tokenizer, the expert folders, the card's data files and figures, and ``README.md``."""
    from ..model_card import CALIBRATION_IMAGE, CONFUSION_IMAGE, router_card

    if companions.tokenizer is not None:
        companions.tokenizer.save_pretrained(directory)
    for name, (folder, base_model) in companions.experts.items():
        copy_expert(folder, directory / "experts" / name, base_model)
    card = companions.card
    values = card.to_dict()
    if values:
        _write_json(directory / CARD_FILE, values)
    confusion_image = calibration_image = None
    if card.calibration is not None:
        _write_json(directory / CALIBRATION_FILE, card.calibration.to_dict())
    if (card.evaluation is not None or card.calibration is not None) and _can_draw():
        if card.evaluation is not None:
            from ..evaluation import plot_confusion_matrix

            confusion_image = plot_confusion_matrix(card.evaluation, directory / CONFUSION_IMAGE).name
        if card.calibration is not None:
            calibration_image = card.calibration.plot(directory / CALIBRATION_IMAGE).name
    model_card = router_card(
        companions.config,
        companions.token_counts,
        card,
        confusion_image=confusion_image,
        calibration_image=calibration_image,
        by_reference=companions.by_reference,
    )
    model_card.save(directory / "README.md")


def copy_expert(source: Path, destination: Path, base_model: str | None) -> None:
    """Copies an expert folder (hard links where the filesystem allows, so an adapter or model costs no space). The
    copy of an adapter's ``adapter_config.json`` names ``base_model`` (the registry's portable value) instead of the
    path peft wrote there."""
    shutil.copytree(source, destination, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".*"))
    adapter_config = destination / "adapter_config.json"
    if base_model is not None and adapter_config.is_file():
        values = json.loads(adapter_config.read_text())
        values["base_model_name_or_path"] = base_model
        adapter_config.unlink()  # a hard link to the original: write a file of its own
        adapter_config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


def _can_draw() -> bool:
    """Whether matplotlib is there to draw the card's figures. Without it (the core install) the reports are still
    saved and the card only lacks the pictures, with a warning: loading and saving a router never needs plots."""
    if importlib.util.find_spec("matplotlib") is None:
        warnings.warn(
            "The card's figures are not drawn: matplotlib is not installed (pip install 'ir3de_hf[data]'); the "
            "reports themselves are saved.",
            stacklevel=5,
        )
        return False
    return True


def _write_json(path: Path, values: Any) -> None:
    path.write_text(json.dumps(values, indent=2) + "\n")


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
