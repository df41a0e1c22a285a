# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The input-embedding table of a causal LM read straight from its safetensors files, without building the model.

A static embedding model saved by model2vec (one tensor, ``embeddings``; its ``config.json`` names a ``model_type``
only when the model was distilled) is read the same way: its table is a router's encoder as well.

A router needs only ``E`` (V x d); instantiating an 8B encoder to take its embeddings would need 32 GB in float32.
Here ``config.json`` and the safetensors index say which tensor is the input embedding and which shard holds it; that
one shard is fetched (local directory, or the Hub through the HF cache, so offline mode works) and the one tensor is
read with ``safe_open(...).get_tensor``. Peak memory is the stored table plus its float32 copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from safetensors import safe_open

from .hub._locations import hub_file, local_path_or_hub_id

__all__ = ["read_input_embeddings"]

_CONFIG = "config.json"
_SINGLE = "model.safetensors"
_INDEX = "model.safetensors.index.json"
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# Names of the input-embedding tensor across causal-LM architectures, most common first (Llama, Mistral, Qwen, Gemma,
# Phi: model.embed_tokens; GPT-2: transformer.wte; BLOOM/Falcon: word_embeddings; GPT-NeoX: embed_in).
_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight", "tok_embeddings.weight")
_TIED_OUTPUT = "lm_head.weight"
_STATIC = "embeddings"  # the one tensor of a model2vec StaticModel's model.safetensors


def read_input_embeddings(source: str | os.PathLike[str], revision: str | None = None) -> torch.Tensor:
    """The float32 input-embedding table (V x d) of the causal LM at ``source`` (a local directory or a Hub id at
    ``revision``), read from the one safetensors file that holds it.

    Raises:
        FileNotFoundError: no such directory, or a file the index names is missing.
        ValueError: no ``config.json`` on the Hub, no safetensors weights (a ``.bin``-only checkpoint is refused
            with how to convert it), no recognisable embedding tensor, or a table whose shape disagrees with
            ``config.json``.
    """
    where = f"encoder {os.fspath(source)!r}" + (f" at revision {revision}" if revision else "")
    fetch = _Files(source, revision, where)
    config = json.loads(fetch.required(_CONFIG).read_text())
    index = fetch.optional(_INDEX)
    if index is not None:
        weight_map: dict[str, str] = json.loads(index.read_text()).get("weight_map", {})
        name = _embedding_name(list(weight_map), config, where)
        shard = fetch.required(weight_map[name])
    else:
        shard_or_none = fetch.optional(_SINGLE)
        if shard_or_none is None:
            pickled = [name for name in _PICKLED if fetch.optional(name) is not None]
            detail = f"only {pickled[0]}, a pickled checkpoint that is never loaded here" if pickled else "none"
            raise ValueError(
                f"The {where} has no safetensors weights ({_SINGLE} or {_INDEX}; found {detail}). Convert it once "
                "with transformers: AutoModelForCausalLM.from_pretrained(path).save_pretrained(new_path) writes "
                "safetensors; then pass new_path."
            )
        shard = shard_or_none
        with safe_open(shard, framework="pt") as handle:
            name = _embedding_name(list(handle.keys()), config, where)
    with safe_open(shard, framework="pt") as handle:
        table = handle.get_tensor(name)
    _check_shape(table, config, name, where)
    return table.to(torch.float32)


class _Files:
    """Files of a local checkpoint directory or of a Hub repository (fetched one by one through the HF cache)."""

    def __init__(self, source: str | os.PathLike[str], revision: str | None, where: str) -> None:
        self.located = local_path_or_hub_id(source)
        self.revision, self.where = revision, where
        if isinstance(self.located, Path) and not self.located.is_dir():
            raise FileNotFoundError(
                f"The {where} is not a directory (nor a Hub id); pass a causal LM's folder or Hub id."
            )

    def required(self, filename: str) -> Path:
        if isinstance(self.located, Path):
            path = self.located / filename
            if not path.is_file():
                raise FileNotFoundError(f"The {self.where} has no {filename}.")
            return path
        found = hub_file(self.located, filename, self.revision, where=f"The {self.where}")
        assert found is not None
        return found

    def optional(self, filename: str) -> Path | None:
        """The file, or None when the checkpoint has none (offline: when the HF cache has none)."""
        if isinstance(self.located, Path):
            path = self.located / filename
            return path if path.is_file() else None
        try:  # EntryNotFoundError covers both "not in the repository" and "not in the cache" (offline)
            return Path(hf_hub_download(self.located, filename, revision=self.revision))
        except EntryNotFoundError:
            return None


def _embedding_name(names: list[str], config: dict[str, Any], where: str) -> str:
    """The input-embedding tensor among a checkpoint's tensor names; with tied embeddings a checkpoint that kept
    only the output projection gives that."""
    if names == [_STATIC]:
        return _STATIC
    for suffix in _SUFFIXES:
        found = [name for name in names if name == suffix or name.endswith("." + suffix)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(
                f"The {where} has several input-embedding candidates {sorted(found)}; it is not a plain causal LM."
            )
    tied = config.get("tie_word_embeddings", config.get("text_config", {}).get("tie_word_embeddings", True))
    if tied and _TIED_OUTPUT in names:
        return _TIED_OUTPUT
    raise ValueError(
        f"The {where} has no input-embedding tensor (a name ending in {', '.join(_SUFFIXES)}, or {_TIED_OUTPUT} with "
        "tie_word_embeddings); it does not look like a causal LM."
    )


def _check_shape(table: torch.Tensor, config: dict[str, Any], name: str, where: str) -> None:
    text = config.get("text_config", config)
    expected = (text.get("vocab_size"), text.get("hidden_size"))
    if table.ndim != 2 or (None not in expected and tuple(table.shape) != expected):
        raise ValueError(
            f"The {where}'s tensor {name!r} has shape {tuple(table.shape)}, but its config.json says vocab_size x "
            f"hidden_size = {expected[0]} x {expected[1]}: the checkpoint and its config do not belong together."
        )
