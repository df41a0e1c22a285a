# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The IR3DE-AXL statistics file (``src/extract_ir3de_stats.py`` of gensyn-ai/IR3DE-AXL), read and written.

A ``torch.save`` dict: ``"A"`` a list of float32 ``(d+1, d+1)`` tensors and ``"b"`` a list of float32 ``(d+1,)``
tensors, one per entry of ``"domain_tags"`` (and of ``"datasets_names"``), with ``"tokenizer"`` and ``"embedder"`` the
Hub ids they were computed with. ``A = Σ x xᵀ`` and ``b = Σ x`` over every position of every batch (``x = [E[t], 1]``),
EOS padding included; float64 is read too, any other dtype is refused (see `_check_dtype`). Files are read with
``torch.load(weights_only=True)`` only, which refuses pickled code; this module knows nothing of routers, so
statistics and routers can both write the format.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .hub._atomic import atomic_file

__all__ = ["AXLFile", "read_axl_file", "write_axl_file"]

Moments = tuple[torch.Tensor, torch.Tensor]
_MOMENT_DTYPES = (torch.float32, torch.float64)


@dataclass
class AXLFile:
    """One checked AXL file: per entry a domain tag, a dataset name and float64 moments ``(A, b)``."""

    path: str
    tags: list[str]
    datasets: list[str]
    moments: list[Moments]
    tokenizer: str | None
    embedder: str | None
    includes_padding: bool

    @property
    def width(self) -> int:
        return int(self.moments[0][1].shape[0])


def read_axl_file(path: str | os.PathLike[str]) -> AXLFile:
    """Reads and checks one AXL statistics file; any problem is a `ValueError` naming the file and the field."""
    where = f"IR3DE-AXL statistics {os.fspath(path)!r}"
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else would go to the pickle loader
        raise ValueError(f"{where} could not be read as a torch file: not a torch.save archive.")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{where} contain objects other than tensors, lists, numbers and strings, which are never unpickled "
            f"here: {str(error).splitlines()[0]}"
        ) from error
    except (OSError, RuntimeError, EOFError) as error:
        raise ValueError(f"{where} could not be read as a torch file: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"{where} must hold a dict with A, b and domain_tags, got a {type(content).__name__}.")
    missing = [key for key in ("A", "b", "domain_tags") if key not in content]
    if missing:
        raise ValueError(
            f"{where} lack {missing}; an AXL file has A, b, domain_tags, datasets_names, tokenizer and embedder."
        )
    tags = _strings(where, "domain_tags", content["domain_tags"])
    if not tags:
        raise ValueError(f"{where}: domain_tags is empty.")
    datasets = _strings(where, "datasets_names", content.get("datasets_names", tags))
    a_list = _entries(where, "A", content["A"], 2)
    b_list = [b.reshape(-1) if b.ndim == 2 and 1 in b.shape else b for b in _entries(where, "b", content["b"], 1)]
    lengths = {"domain_tags": len(tags), "datasets_names": len(datasets), "A": len(a_list), "b": len(b_list)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{where}: one entry per domain tag is needed, got {lengths}.")
    width = b_list[0].shape[0] if b_list[0].ndim == 1 else -1
    moments = []
    for tag, a, b in zip(tags, a_list, b_list, strict=True):
        _check_dtype(where, tag, a, b)
        if b.shape != (width,) or a.shape != (width, width):
            raise ValueError(
                f"{where}: tag {tag!r} has A {tuple(a.shape)} and b {tuple(b.shape)}; every entry needs A (d+1, d+1) "
                f"and b (d+1,) of one width ({width})."
            )
        a, b = a.to(torch.float64), b.to(torch.float64)
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())) or not float(b[-1]) > 0:
            raise ValueError(
                f"{where}: tag {tag!r} has non-finite moments or no token (the bias entry b[-1] counts tokens)."
            )
        moments.append((a, b))
    tokenizer, embedder = (_optional_string(where, content, key) for key in ("tokenizer", "embedder"))
    padding = content.get("includes_padding", True)  # the AXL extractor always counts its EOS padding
    if not isinstance(padding, bool):
        raise ValueError(f"{where}: includes_padding must be True or False, got {padding!r}.")
    return AXLFile(os.fspath(path), tags, datasets, moments, tokenizer, embedder, padding)


def write_axl_file(
    path: str | os.PathLike[str],
    tags: list[str],
    moments: list[Moments],
    *,
    tokenizer: str,
    embedder: str,
    datasets: list[str] | None = None,
    includes_padding: bool = False,
) -> Path:
    """Writes an AXL statistics file that an AXL peer loads unchanged (float32 lists, as the extractor saves them),
    atomically. ``includes_padding`` is an extra key that peers ignore and `read_axl_file` reads back."""
    content: dict[str, Any] = {
        "A": [a.detach().to(device="cpu", dtype=torch.float32).contiguous() for a, _ in moments],
        "b": [b.detach().to(device="cpu", dtype=torch.float32).contiguous() for _, b in moments],
        "domain_tags": list(tags),
        "datasets_names": list(datasets if datasets is not None else tags),
        "tokenizer": tokenizer,
        "embedder": embedder,
        "includes_padding": includes_padding,
    }
    with atomic_file(path) as staging:
        torch.save(content, staging)
    return Path(path)


def _check_dtype(where: str, tag: str, a: torch.Tensor, b: torch.Tensor) -> None:
    """The extractor sums ``A`` and ``b`` in float32 accumulators and saves them as such; float64 (more precise) is
    read too. A half-precision file is refused rather than widened: widening is exact, but the rounding to 8 or 11
    mantissa bits already happened, and the solve turns it into a different head. Integer tensors are not moments."""
    for key, tensor in (("A", a), ("b", b)):
        if tensor.dtype not in _MOMENT_DTYPES:
            raise ValueError(
                f"{where}: tag {tag!r} has {key} in {str(tensor.dtype).removeprefix('torch.')}, but IR3DE-AXL "
                "statistics are float32 (the extractor's accumulators; float64 is read too): "
                + (
                    "half-precision moments have lost the digits the ridge solve needs. "
                    if tensor.dtype.is_floating_point
                    else "these are not summed float features. "
                )
                + "Extract the statistics again in float32 (or save the float32 accumulators)."
            )


def _strings(where: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{where}: {key} must be a list of strings, got {type(value).__name__}.")
    return list(value)


def _entries(where: str, key: str, value: Any, ndim: int) -> list[torch.Tensor]:
    """A list of tensors (the AXL layout), or one tensor: a single entry, or entries stacked on the first axis."""
    if isinstance(value, torch.Tensor):
        if ndim == 1 and value.ndim == 2 and 1 in value.shape:  # one b as a (d+1, 1) column or a (1, d+1) row
            value = value.reshape(-1)
        value = [value] if value.ndim == ndim else list(value)
    if not isinstance(value, list | tuple) or not value or not all(isinstance(item, torch.Tensor) for item in value):
        raise ValueError(f"{where}: {key} must be a non-empty list of tensors, got {type(value).__name__}.")
    return list(value)


def _optional_string(where: str, content: dict[Any, Any], key: str) -> str | None:
    value = content.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: {key} must be a Hub id (a string), got {type(value).__name__}.")
    return value
