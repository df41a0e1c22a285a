# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The frozen encoder: the input-embedding table of a causal LM, taken from a model, a Hub id or a path.

A Hub id or path is never instantiated as a model: only its embedding tensor is read from the safetensors shard that
holds it (`ir3de_hf._embedding_file`), so an 8B encoder costs its table, not 32 GB.

A router saved "by reference" leaves the table out of its weights and names the encoder (Hub id and revision) with
the table's sha256 instead; [`referenced_embeddings`] fetches the table again and refuses any other one.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel

from ._embedding_file import read_input_embeddings
from .configuration_ir3de import IR3DEConfig
from .tokenization import beyond_table_special_ids, vocabulary_fingerprint

__all__ = ["all_finite", "embedding_fingerprint", "encoder_config", "encoder_embeddings", "referenced_embeddings"]


def embedding_fingerprint(weight: torch.Tensor) -> str:
    """sha256 of a float32 embedding table: moments are only valid with the exact table they were computed with."""
    data = weight.detach().to(device="cpu", dtype=torch.float32).contiguous()
    return "sha256:" + hashlib.sha256(data.numpy().tobytes()).hexdigest()


def encoder_embeddings(
    encoder: str | os.PathLike[str] | PreTrainedModel | nn.Embedding, revision: str | None = None
) -> tuple[torch.Tensor, str | None]:
    """The float32 embedding table (V x d) of ``encoder`` and the reference to record for it (its Hub id or path,
    None for a bare `nn.Embedding`)."""
    if isinstance(encoder, str | os.PathLike):  # only the embedding tensor is read, the model is never built
        return read_input_embeddings(encoder, revision), str(encoder)
    embeddings: nn.Module
    reference: str | None
    if isinstance(encoder, PreTrainedModel):
        embeddings, reference = encoder.get_input_embeddings(), encoder.config.name_or_path or None
    elif isinstance(encoder, nn.Embedding):
        embeddings, reference = encoder, None
    else:
        raise TypeError(
            "encoder must be a Hub id or local path, a PreTrainedModel or an nn.Embedding, got "
            f"{type(encoder).__name__}."
        )
    weight = embeddings.weight
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise TypeError(f"The encoder's input embeddings have no 2-D weight table ({type(embeddings).__name__}).")
    return weight.detach().float(), reference


def encoder_config(
    encoder: str | os.PathLike[str] | PreTrainedModel | nn.Embedding,
    tokenizer: Any = None,
    encoder_id: str | None = None,
    **config_kwargs: Any,
) -> tuple[IR3DEConfig, torch.Tensor, Any]:
    """The config of an empty router over ``encoder`` (see `IR3DERouterModel.from_encoder`), the embedding table and
    the tokenizer (loaded from ``encoder`` when that is a Hub id or path and no tokenizer is given). ``encoder_id``
    is the Hub id recorded when ``encoder`` is a local copy of a Hub model."""
    revision = config_kwargs.get("encoder_revision")
    weight, reference = encoder_embeddings(encoder, revision)
    reference = encoder_id or reference
    if isinstance(encoder, str | os.PathLike) and tokenizer is None:
        tokenizer = encoder
    if isinstance(tokenizer, str | os.PathLike):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, revision=revision)
    vocab_size, hidden_size = weight.shape
    settings: dict[str, Any] = {"encoder": reference}
    if tokenizer is not None:
        special = beyond_table_special_ids(tokenizer, vocab_size)
        pad = tokenizer.pad_token_id
        settings.update(
            pad_token_id=pad if pad is None or pad < vocab_size else None,
            ignored_token_ids=[i for i in tokenizer.all_special_ids if i not in special],
            tokenizer_fingerprint=vocabulary_fingerprint(tokenizer),
        )
    settings.update(config_kwargs)
    return IR3DEConfig(vocab_size=vocab_size, hidden_size=hidden_size, **settings), weight, tokenizer


def referenced_embeddings(config: IR3DEConfig) -> torch.Tensor:
    """The table of a router saved with ``encoder_by_reference``, loaded from ``config.encoder`` at
    ``config.encoder_revision`` and checked against the saved shape and sha256."""
    where = f"encoder {config.encoder!r}" + (
        f" at revision {config.encoder_revision}" if config.encoder_revision else ""
    )
    try:
        weight, _ = encoder_embeddings(config.encoder, config.encoder_revision)  # type: ignore[arg-type]
    except (OSError, ValueError) as error:
        raise ValueError(
            f"This router was saved without its embedding table (encoder_by_reference) and its {where} could not "
            f"be loaded: {error}"
        ) from error
    expected = (config.vocab_size, config.hidden_size)
    if tuple(weight.shape) != expected:
        raise ValueError(f"The {where} has embeddings of shape {tuple(weight.shape)}, the router needs {expected}.")
    found = embedding_fingerprint(weight)
    if found != config.encoder_sha256:
        raise ValueError(
            f"The {where} does not have the embedding table this router was saved with (sha256 {found[7:19]}… vs "
            f"{str(config.encoder_sha256)[7:19]}…): the encoder repository changed. Pin encoder_revision to the "
            "revision the router was built with."
        )
    return weight


def all_finite(table: torch.Tensor, rows: int = 4096) -> bool:
    """Whether a table holds no NaN or infinity, checked in row blocks: `torch.isfinite` on a whole 2 GB table
    allocates several times its size in temporaries."""
    return all(bool(torch.isfinite(table[start : start + rows]).all()) for start in range(0, table.shape[0], rows))
