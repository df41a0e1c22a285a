# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""IR3DEConfig: everything needed to rebuild a router except its tensors (expert registry, ridge settings, encoder)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .aggregation import AGGREGATIONS

__all__ = ["FORMAT_VERSION", "ExpertSpec", "IR3DEConfig"]

FORMAT_VERSION = 2  # 2: imported moments carry an explicit index (format 1 still loads)
_EXPERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass(frozen=True)
class ExpertSpec:
    """One expert of the registry: a name, and where its model lives (a Hub id or a local path).

    ``base_model`` is set for PEFT adapters (the model the adapter applies to); ``revision`` pins a Hub revision.
    ``statistics`` is ``"moments"`` for an expert imported as moments ``(A_n, b_n)`` instead of a token histogram
    (see [`IR3DERouterModel.add_expert`]); such an expert can be removed or replaced, not re-weighted by token.
    """

    name: str
    source: str | None = None
    revision: str | None = None
    description: str | None = None
    base_model: str | None = None
    statistics: str | None = None

    def __post_init__(self) -> None:
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
        return {key: value for key, value in asdict(self).items() if value is not None}


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
            (the most accurate on the ir3de-multidomain validation split at 16, 64 and 256 tokens).
        top_k (`int`, *optional*, defaults to 10):
            Number of lowest-entropy tokens that vote with `"entropy_top_k"`.
        normalize_columns (`bool`, *optional*, defaults to `True`):
            Divide each expert's weight column and bias by the column norm (the reference implementation does).
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
    encoder: str | None = None
    encoder_revision: str | None = None
    vocab_size: int = 49152
    hidden_size: int = 576
    pad_token_id: int | None = None
    ignored_token_ids: list[int] = field(default_factory=list)
    tokenizer_fingerprint: str | None = None
    encoder_by_reference: bool = False
    encoder_sha256: str | None = None
    ir3de_format_version: int = FORMAT_VERSION

    def __post_init__(self, **kwargs: Any) -> None:
        self.experts = [ExpertSpec.from_dict(dict(entry)).to_dict() for entry in self.experts]
        self.ignored_token_ids = sorted({int(i) for i in self.ignored_token_ids})
        self.check()
        super().__post_init__(**kwargs)

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
        """Raises a `ValueError` naming the first invalid field and what it accepts."""
        if isinstance(self.ridge_lambda, bool) or not isinstance(self.ridge_lambda, int | float):
            raise ValueError(f"ridge_lambda must be a positive number, got {self.ridge_lambda!r}.")
        if not (self.ridge_lambda > 0 and math.isfinite(self.ridge_lambda)):
            raise ValueError(f"ridge_lambda must be a finite number > 0, got {self.ridge_lambda}.")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}; got {self.aggregation!r}.")
        for attribute in ("top_k", "vocab_size", "hidden_size"):
            value = getattr(self, attribute)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{attribute} must be an integer >= 1, got {value!r}.")
        names = self.expert_names
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"experts: duplicate expert name(s) {duplicates}; names must be unique.")
        outside = [i for i in self.never_counted_ids if not 0 <= i < self.vocab_size]
        if outside:
            raise ValueError(f"pad_token_id and ignored_token_ids must lie in [0, {self.vocab_size}), got {outside}.")
        if self.ir3de_format_version > FORMAT_VERSION:
            raise ValueError(
                f"ir3de_format_version {self.ir3de_format_version} is newer than this ir3de_hf supports "
                f"({FORMAT_VERSION}); upgrade ir3de_hf."
            )
