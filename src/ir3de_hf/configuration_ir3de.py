# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""IR3DEConfig: everything needed to rebuild a router except its tensors (expert registry, ridge settings, encoder)."""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .aggregation import AGGREGATIONS

__all__ = ["FORMAT_VERSION", "ExpertSpec", "IR3DEConfig"]

FORMAT_VERSION = 3  # 3: sparse histograms + verified A, B; 2: imported moments carry an index (1 and 2 still load)
_EXPERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass(frozen=True)
class ExpertSpec:
    """One expert of the registry: a name, and where its model lives (a Hub id or a local path).

    ``base_model`` is set for PEFT adapters (the model the adapter applies to); ``revision`` pins a Hub revision.
    ``statistics`` is ``"moments"`` for an expert imported as moments ``(A_n, b_n)`` instead of a token histogram
    (see [`IR3DERouterModel.add_expert`]); such an expert can be removed or replaced, not re-weighted by token.
    ``includes_padding`` is True for moments that counted padding and BOS/EOS rows (IR3DE-AXL statistics do), which
    biases the expert towards those tokens; it is recorded so that cards and users can tell.
    """

    name: str
    source: str | None = None
    revision: str | None = None
    description: str | None = None
    base_model: str | None = None
    statistics: str | None = None
    includes_padding: bool | None = None

    def __post_init__(self) -> None:
        for attribute in ("source", "base_model"):  # a path is accepted wherever a path is meant
            value = getattr(self, attribute)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, attribute, os.fspath(value))
        if not isinstance(self.name, str) or not _EXPERT_NAME.match(self.name):
            raise ValueError(
                f"Invalid expert name {self.name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a "
                "letter or digit."
            )
        for attribute in ("source", "revision", "description", "base_model"):
            value = getattr(self, attribute)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"Expert {self.name!r}: `{attribute}` must be a string or None, got {value!r}.")
        if self.statistics not in (None, "moments"):
            raise ValueError(
                f"Expert {self.name!r}: `statistics` must be None (a token histogram) or 'moments', got "
                f"{self.statistics!r}."
            )
        if self.includes_padding is not None and not isinstance(self.includes_padding, bool):
            raise ValueError(f"Expert {self.name!r}: `includes_padding` must be True, False or None.")

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> ExpertSpec:
        unknown = set(entry) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"Unknown expert field(s) {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}."
            )
        return cls(**entry)

    @property
    def kind(self) -> str:
        """``"adapter"`` (a PEFT adapter of ``base_model``) or ``"model"`` (a full causal LM)."""
        return "adapter" if self.base_model else "model"

    def to_dict(self) -> dict[str, Any]:
        values = {key: getattr(self, key) for key in self.__dataclass_fields__}  # flat strings: no deep copy needed
        return {key: value for key, value in values.items() if value is not None}


@strict
class IR3DEConfig(PreTrainedConfig):
    r"""
    Configuration of an [`IR3DERouterModel`]: the ordered expert registry, the ridge and aggregation settings, and the
    frozen encoder the token features come from.

    Args:
        experts (`list[dict]`, *optional*):
            The experts, in routing order. Each is a dict with `name` and optionally `source` (Hub id or local path of
            the expert model), `revision`, `description` and `base_model` (for PEFT adapters). The statistics of each
            expert are tensors of the model, not part of the config.
        ridge_lambda (`float`, *optional*, defaults to 1e-2):
            Ridge penalty λ > 0 of `(A + λI) W = B` (it also penalises the bias row, as in the reference code).
        aggregation (`str`, *optional*, defaults to `"weighted_mean"`):
            How token scores become one decision: `"majority_vote"`, `"entropy_top_k"`, `"mean"` or `"weighted_mean"`
            (the most accurate under leave-one-source-out on ir3de-multidomain at 16, 64 and 256 tokens).
        top_k (`int`, *optional*, defaults to 10):
            Number of lowest-entropy tokens that vote with `"entropy_top_k"`.
        normalize_columns (`bool`, *optional*, defaults to `True`):
            Divide each expert's weight column and bias by the column norm (the reference implementation does).
        naive_bayes_weight (`float`, *optional*, defaults to 0.0):
            Weight of a multinomial naive-Bayes term added to every token's scores: the token's log-likelihood under
            each expert's histogram (smoothed by `naive_bayes_alpha`), centred over the experts. Closed-form from the
            same histograms, still a table lookup. It helps on the training sources' own kind of text and costs on
            sources the router never saw (leave-one-source-out, see the README's generalisation section), so the
            default is 0: the ridge head alone. A saved config keeps its value; one without this field loads with 0.
        naive_bayes_alpha (`float`, *optional*, defaults to 1.0):
            Additive (Laplace) smoothing of the naive-Bayes term's token counts.
        balance_experts (`bool`, *optional*, defaults to `True`):
            Weigh every expert the same in the ridge fit (each token by 2^20 / the expert's token count) instead of
            by its token count, so an expert with little text is not outvoted by one with much. Still closed-form
            from the same histograms, and an edit still costs only the edited expert's rows. Chosen under the
            leave-one-source-out protocol (see the README's generalisation section). A saved config without this
            field loads with `False`, so older routers decide exactly as they did.
        encoder (`str`, *optional*):
            Hub id or local path of the causal LM whose input embeddings are the frozen encoder.
        encoder_revision (`str`, *optional*):
            Revision of `encoder` on the Hub.
        vocab_size (`int`, *optional*, defaults to 49152):
            Rows of the embedding table (the tokenizer's vocabulary).
        hidden_size (`int`, *optional*, defaults to 576):
            Width `d` of the embedding table.
        pad_token_id (`int`, *optional*):
            Padding id; never counted and never voting.
        ignored_token_ids (`list[int]`, *optional*):
            Further ids never counted and never voting (special tokens such as BOS/EOS or chat markers).
        tokenizer_fingerprint (`str`, *optional*):
            Hash of the tokenizer's vocabulary, to refuse statistics or experts from another tokenizer.
        encoder_by_reference (`bool`, *optional*, defaults to `False`):
            Set in a saved `config.json` when the embedding table was left out of `model.safetensors`; loading then
            re-materialises it from `encoder` at `encoder_revision` and checks it against `encoder_sha256`.
        encoder_sha256 (`str`, *optional*):
            sha256 of the float32 embedding table, written with `encoder_by_reference` (and by shared moments).
        calibration_temperatures (`dict[str, float]`, *optional*):
            Temperature `T` per aggregation, fitted by [`~IR3DERouterModel.calibrate`] on held-out data:
            `probabilities = softmax(logits / T)`. An aggregation without one uses `T = 1` (uncalibrated).
        min_confidence (`float`, *optional*):
            Calibrated top probability under which a decision is not `confident` (routed generation then uses the
            fallback expert); chosen by [`~IR3DERouterModel.calibrate`]. `None`: no threshold.
        min_margin (`float`, *optional*):
            Margin (best minus second-best logit) under which a decision is not `confident` either, in the units of
            the aggregation's scores (so one value does not carry over to another aggregation; `min_confidence` does).
            `None`: no threshold.

    Every field is checked when it is set: at construction, when a saved config loads and on assignment
    (`router.config.top_k = 0`). A bad value raises a `ValueError` that names the field and what it accepts, and
    leaves the previous value in place. `pad_token_id` and `ignored_token_ids` must lie below `vocab_size` after each
    assignment, so set `vocab_size` first when growing the vocabulary. Editing `experts` or `ignored_token_ids` in
    place (`config.experts.append(...)`) bypasses the assignment check: [`~IR3DEConfig.check`] catches it, and routing
    and saving call it.

    Example:

    ```python
    >>> from ir3de_hf import IR3DEConfig
    >>> config = IR3DEConfig(vocab_size=100, hidden_size=8, aggregation="mean")
    >>> config.expert_names
    []

    ```
    """

    model_type = "ir3de"

    experts: list[dict[str, Any]] = field(default_factory=list)
    ridge_lambda: float | int = 1e-2
    aggregation: str = "weighted_mean"
    top_k: int = 10
    normalize_columns: bool = True
    naive_bayes_weight: float | int = 0.0
    naive_bayes_alpha: float | int = 1.0
    balance_experts: bool = True
    encoder: str | None = None
    encoder_revision: str | None = None
    vocab_size: int = 49152
    hidden_size: int = 576
    pad_token_id: int | None = None
    ignored_token_ids: list[int] = field(default_factory=list)
    tokenizer_fingerprint: str | None = None
    encoder_by_reference: bool = False
    encoder_sha256: str | None = None
    calibration_temperatures: dict[str, float] = field(default_factory=dict)
    min_confidence: float | None = None
    min_margin: float | None = None
    ir3de_format_version: int = FORMAT_VERSION

    def __post_init__(self, **kwargs: Any) -> None:
        self.check()
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """Loads a config; one saved before a setting existed keeps that setting's old behaviour (no
        ``naive_bayes_weight``: the ridge head alone; no ``balance_experts``: experts weighted by token count), so
        old routers decide exactly as they did."""
        config_dict = {**_OLD_BEHAVIOUR, **config_dict}
        return super().from_dict(config_dict, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        """Checks (and normalises) a field before it is set, so that a rejected value leaves the old one in place."""
        if name in _READ_ONLY:
            raise AttributeError(f"config.{name} is read-only: it is derived from {_READ_ONLY[name]}.")
        check = _FIELD_CHECKS.get(name)
        if check is not None:
            value = check(name, value)
        if name in _TOKEN_ID_FIELDS:
            others = {key: vars(self)[key] for key in _TOKEN_ID_FIELDS if key != name and key in vars(self)}
            if len(others) == len(_TOKEN_ID_FIELDS) - 1:  # else midway through __init__: __post_init__ checks
                _check_ids_in_vocabulary(**others, **{name: value})
        super().__setattr__(name, value)
        if name == "experts":  # the labels of `pipeline("text-classification")` are the experts, always in sync
            names = [entry["name"] for entry in value]
            super().__setattr__("id2label", dict(enumerate(names)))
            super().__setattr__("label2id", {label: index for index, label in enumerate(names)})

    @property
    def expert_names(self) -> list[str]:
        return [entry["name"] for entry in self.experts]

    @property
    def expert_specs(self) -> list[ExpertSpec]:
        return [ExpertSpec.from_dict(entry) for entry in self.experts]

    @property
    def never_counted_ids(self) -> list[int]:
        """Ids never counted and never voting: `ignored_token_ids` plus `pad_token_id`."""
        ids = set(self.ignored_token_ids)
        if self.pad_token_id is not None:
            ids.add(self.pad_token_id)
        return sorted(ids)

    def check(self) -> None:
        """Raises a `ValueError` naming the first invalid field and what it accepts.

        Cheap (no work proportional to the vocabulary): call it before using a config whose lists may have been
        edited in place.
        """
        for name, check in _FIELD_CHECKS.items():
            check(name, getattr(self, name))
        _check_ids_in_vocabulary(self.vocab_size, self.pad_token_id, self.ignored_token_ids)


_EXPERTS = "config.experts; change the experts with router.add_expert / router.remove_expert (or set config.experts)"
_READ_ONLY = {  # the properties: what each is derived from, and what to change instead
    "expert_names": _EXPERTS,
    "expert_specs": _EXPERTS,
    "never_counted_ids": "config.ignored_token_ids and config.pad_token_id; set those instead",
}


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _experts(name: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be a list of dicts with a `name`, got {value!r}.")
    entries = []
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ValueError(
                f"{name}[{i}] must be a dict with a `name` and optionally {sorted(ExpertSpec.__dataclass_fields__)}, "
                f"got {entry!r}."
            )
        try:
            entries.append(ExpertSpec.from_dict(dict(entry)).to_dict())
        except ValueError as error:
            raise ValueError(f"{name}[{i}]: {error}") from error
    names = [entry["name"] for entry in entries]
    duplicates = sorted(expert for expert, times in Counter(names).items() if times > 1)
    if duplicates:
        raise ValueError(f"{name}: duplicate expert name(s) {duplicates}; names must be unique.")
    return entries


def _positive_number(name: str, value: Any) -> float | int:
    if not (isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= sys.float_info.max):
        raise ValueError(f"{name} must be a finite number > 0 (an int or a float), got {value!r}.")
    return value


def _non_negative_number(name: str, value: Any) -> float | int:
    if not (_is_number(value) and 0 <= value <= sys.float_info.max):
        raise ValueError(f"{name} must be a finite number >= 0 (0 turns it off), got {value!r}.")
    return value


def _aggregation(name: str, value: Any) -> str:
    if not isinstance(value, str) or value not in AGGREGATIONS:
        raise ValueError(f"{name} must be one of {', '.join(AGGREGATIONS)}; got {value!r}.")
    return value


def _positive_integer(name: str, value: Any) -> int:
    if not _is_integer(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return value


def _optional_string(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or None, got {value!r}.")
    return value


def _optional_token_id(name: str, value: Any) -> int | None:
    if value is not None and not (_is_integer(value) and value >= 0):
        raise ValueError(f"{name} must be None or a token id (an integer >= 0, below vocab_size), got {value!r}.")
    return value


def _token_ids(name: str, value: Any) -> list[int]:
    """Sorted, without repeats."""
    if not isinstance(value, list | tuple | set | frozenset) or not all(_is_integer(i) and i >= 0 for i in value):
        raise ValueError(f"{name} must be a list of token ids (integers >= 0, below vocab_size), got {value!r}.")
    return sorted(set(value))


def _temperatures(name: str, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or not all(
        key in AGGREGATIONS and _is_number(t) and 0 < t <= sys.float_info.max for key, t in value.items()
    ):
        raise ValueError(
            f"{name} must map aggregations ({', '.join(AGGREGATIONS)}) to finite temperatures > 0, got {value!r}."
        )
    return {key: float(t) for key, t in value.items()}


def _probability_or_none(name: str, value: Any) -> float | None:
    if value is not None and not (_is_number(value) and 0 <= value <= 1):
        raise ValueError(f"{name} must be None or a probability in [0, 1], got {value!r}.")
    return None if value is None else float(value)


def _margin_or_none(name: str, value: Any) -> float | None:
    if value is not None and not (_is_number(value) and 0 <= value <= sys.float_info.max):
        raise ValueError(f"{name} must be None or a finite number >= 0 (a margin), got {value!r}.")
    return None if value is None else float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _format_version(name: str, value: Any) -> int:
    if not _is_integer(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    if value > FORMAT_VERSION:
        raise ValueError(f"{name} {value} is newer than this ir3de_hf supports ({FORMAT_VERSION}); upgrade ir3de_hf.")
    return value


def _check_ids_in_vocabulary(vocab_size: int, pad_token_id: int | None, ignored_token_ids: list[int]) -> None:
    """The rule across fields: the ids never counted are rows of the embedding table."""
    outside = sorted({i for i in [*ignored_token_ids, pad_token_id] if i is not None and i >= vocab_size})
    if outside:
        raise ValueError(
            f"pad_token_id and ignored_token_ids must lie in [0, {vocab_size}) (below vocab_size), got {outside}."
        )


# Each check takes a field's name and value, raises a `ValueError` naming the field, and returns the value to store.
_FIELD_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "experts": _experts,
    "ridge_lambda": _positive_number,
    "aggregation": _aggregation,
    "top_k": _positive_integer,
    "normalize_columns": _boolean,
    "naive_bayes_weight": _non_negative_number,
    "naive_bayes_alpha": _positive_number,
    "balance_experts": _boolean,
    "encoder": _optional_string,
    "encoder_revision": _optional_string,
    "vocab_size": _positive_integer,
    "hidden_size": _positive_integer,
    "pad_token_id": _optional_token_id,
    "ignored_token_ids": _token_ids,
    "tokenizer_fingerprint": _optional_string,
    "encoder_by_reference": _boolean,
    "encoder_sha256": _optional_string,
    "calibration_temperatures": _temperatures,
    "min_confidence": _probability_or_none,
    "min_margin": _margin_or_none,
    "ir3de_format_version": _format_version,
}
_TOKEN_ID_FIELDS = ("vocab_size", "pad_token_id", "ignored_token_ids")
# Settings added after routers were first saved, at the values that reproduce what those routers did.
_OLD_BEHAVIOUR: dict[str, Any] = {"naive_bayes_weight": 0.0, "balance_experts": False}
