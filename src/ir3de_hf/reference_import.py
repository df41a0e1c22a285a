# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Import of the reference implementation's statistics (``.pth`` dicts with ``A``, ``b``, ``domain_tags``,
``tokenizer``, ``embedder``) into an IR3DE router whose experts are moment-based.

The file is read with ``torch.load(weights_only=True)``, which refuses pickled code, and then every value is checked
to be a tensor, a string or a list of strings. The reference stores moments, not token histograms, so the imported
experts can be removed or replaced but not re-weighted by token. When the file holds the summed ``A`` (the reference's
``generate_router``), each expert gets the share of ``A`` proportional to its token count: the router's head equals
the reference's exactly, and removing an imported expert afterwards is an approximation (its own ``A_n`` is not in
the file); a file with per-domain ``A`` (N x (d+1) x (d+1)) imports exactly.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

import torch

from .modeling_ir3de import IR3DERouterModel

__all__ = ["ReferenceStatistics", "import_reference_router", "load_reference_statistics"]

_REQUIRED = ("A", "b", "domain_tags")


@dataclass
class ReferenceStatistics:
    """The checked content of a reference ``.pth``: per-domain moments in float64 and where they came from."""

    domain_tags: list[str]
    moments: list[tuple[torch.Tensor, torch.Tensor]]
    tokenizer: str | None
    embedder: str | torch.Tensor | None
    summed_a: bool


def load_reference_statistics(path: str | os.PathLike[str]) -> ReferenceStatistics:
    """Reads and checks a reference statistics file; any problem is a `ValueError` naming the file and the field."""
    where = f"Reference statistics {os.fspath(path)!r}"
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{where} contain objects other than tensors, lists and strings, which are never unpickled here: "
            f"{str(error).splitlines()[0]}"
        ) from error
    except (OSError, RuntimeError, EOFError) as error:
        raise ValueError(f"{where} could not be read as a torch file: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"{where} must hold a dict with keys {list(_REQUIRED)}, got {type(content).__name__}.")
    for key, value in content.items():
        _check_value(where, key, value)
    missing = [key for key in _REQUIRED if key not in content]
    if missing:
        raise ValueError(f"{where} lack {missing}; a reference file has A, b, domain_tags, tokenizer and embedder.")
    tags = content["domain_tags"]
    if not isinstance(tags, list) or not tags or not all(isinstance(tag, str) for tag in tags):
        raise ValueError(f"{where}: domain_tags must be a non-empty list of strings.")
    a, b = content["A"], content["b"]
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise ValueError(f"{where}: A and b must be tensors.")
    a, b = a.to(torch.float64), b.to(torch.float64)
    count = len(tags)
    if b.ndim == 2 and b.shape[1] == count and b.shape[0] != count:
        b = b.T  # the reference's layout: (d+1, N)
    width = b.shape[1] if b.ndim == 2 else -1
    if b.shape != (count, width):
        raise ValueError(f"{where}: b must have shape (d+1, {count}) for {count} domain_tags, got {tuple(b.shape)}.")
    tokens = b[:, -1]
    if a.shape == (width, width):
        moments = [(a * (tokens[n] / tokens.sum()), b[n]) for n in range(count)]
    elif a.shape == (count, width, width):
        moments = [(a[n], b[n]) for n in range(count)]
    else:
        raise ValueError(
            f"{where}: A must have shape ({width}, {width}) (summed) or ({count}, {width}, {width}) (per domain), "
            f"got {tuple(a.shape)}."
        )
    tokenizer, embedder = content.get("tokenizer"), content.get("embedder")
    if tokenizer is not None and not isinstance(tokenizer, str):
        raise ValueError(f"{where}: tokenizer must be a Hub id or path (a string).")
    return ReferenceStatistics(list(tags), moments, tokenizer, embedder, summed_a=a.ndim == 2)


def import_reference_router(
    path: str | os.PathLike[str],
    *,
    encoder: str | os.PathLike[str] | torch.nn.Module | None = None,
    tokenizer: Any = None,
    **config_kwargs: Any,
) -> IR3DERouterModel:
    """Builds a router from a reference ``.pth``: one moment-based expert per domain tag, in order.

    Args:
        path: the ``.pth`` file.
        encoder: the causal LM (Hub id, path, model or `nn.Embedding`) whose embeddings the file's moments were
            summed over; defaults to the file's ``embedder`` (a Hub id/path, or the embedding table itself).
        tokenizer: defaults to the file's ``tokenizer``.
        **config_kwargs: [`IR3DEConfig`] fields (``ridge_lambda``, ``aggregation``...).

    The moments' width must equal the encoder's hidden size plus one; nothing is returned unless every expert was
    added.
    """
    reference = load_reference_statistics(path)
    source = encoder if encoder is not None else reference.embedder
    if source is None:
        raise ValueError(f"{os.fspath(path)!r} names no embedder: pass encoder= (the model the moments came from).")
    if isinstance(source, torch.Tensor):
        source = torch.nn.Embedding.from_pretrained(source.to(torch.float32))
    router = IR3DERouterModel.from_encoder(
        source,  # type: ignore[arg-type]
        tokenizer if tokenizer is not None else reference.tokenizer,
        **config_kwargs,
    )
    for tag, moments in zip(reference.domain_tags, reference.moments, strict=True):
        router.add_expert(tag, moments=moments, description="imported from reference IR3DE statistics")
    return router


def _check_value(where: str, key: Any, value: Any) -> None:
    allowed = isinstance(value, torch.Tensor | str) or (
        isinstance(value, list | tuple) and all(isinstance(item, str | torch.Tensor) for item in value)
    )
    if not isinstance(key, str) or not allowed:
        raise ValueError(
            f"{where}: entry {key!r} is a {type(value).__name__}; only tensors, strings and lists of strings are "
            "accepted in reference statistics."
        )
