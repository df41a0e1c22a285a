# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The reference implementation's expert checkpoints as standard transformers folders.

The authors save each expert as ``torch.save(wrapper.state_dict())`` of a ``LlamaWrapper`` whose ``_model`` is a
``LlamaForCausalLM`` (gensyn-ai/IR3DE: models/llama.py), so every key starts with ``_model.``. Such a file is read
with ``torch.load(weights_only=True)`` (tensors only, nothing unpickled), the prefix is stripped, the tensors are
checked key by key against a ``LlamaForCausalLM`` of the given config and saved as safetensors with the config,
the tokenizer, a generation config (EOS padding, as the authors generate) and a card naming the source file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from .._templates import template_path
from ..hub._atomic import atomic_directory
from ..hub._locations import hub_id

__all__ = ["WRAPPER_PREFIX", "ConvertedCheckpoint", "convert_reference_expert", "reference_state_dict"]

WRAPPER_PREFIX = "_model."


@dataclass(frozen=True)
class ConvertedCheckpoint:
    """A converted expert: its folder and the provenance its card records."""

    name: str
    directory: Path
    source: str
    source_file: str
    sha256: str
    parameters: int
    dropped_keys: tuple[str, ...]


def reference_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The ``LlamaForCausalLM`` tensors of a reference wrapper checkpoint (prefix stripped) and the keys outside the
    wrapper's ``_model`` that are left behind. Anything but a weights-only dict of tensors is a `ValueError`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path.name} is not a weights-only torch checkpoint ({reason}).") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} does not hold a state dict (a mapping of names to tensors).")
    inner = {key[len(WRAPPER_PREFIX) :]: value for key, value in state.items() if key.startswith(WRAPPER_PREFIX)}
    if not inner:
        shown = ", ".join(list(state)[:3]) or "none"
        raise ValueError(
            f"{path.name} has no key starting with {WRAPPER_PREFIX!r} (keys: {shown}, ...): it is not a checkpoint of "
            "the reference LlamaWrapper."
        )
    return inner, sorted(key for key in state if not key.startswith(WRAPPER_PREFIX))


def convert_reference_expert(
    name: str,
    checkpoint: Path,
    target: Path,
    config: LlamaConfig,
    tokenizer: Any,
    *,
    source: str,
    repo_id: str | None = None,
) -> ConvertedCheckpoint:
    """Writes ``checkpoint`` (a reference wrapper's ``.pth``) to ``target`` as a bf16 ``LlamaForCausalLM`` folder
    that `AutoModelForCausalLM` and our `ExpertPool` load; the save is atomic. ``source`` names where the file came
    from (Hub id or folder) in the card, ``repo_id`` where the folder will be pushed (its usage snippet)."""
    state, outside = reference_state_dict(checkpoint)
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(config)
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(
            f"{checkpoint.name} lacks {len(missing)} tensor(s) of a LlamaForCausalLM ({', '.join(missing[:3])}, ...): "
            "it is not a checkpoint of this architecture."
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ValueError(
                f"{checkpoint.name}: {key} has shape {tuple(state[key].shape)} but the expert config gives {shape}; "
                "pass the checkpoint's sizes with --expert-config."
            )
    weights = {key: state[key].to(torch.bfloat16) for key in expected}
    skeleton.load_state_dict(weights, strict=True, assign=True)
    skeleton.config.dtype = torch.bfloat16
    skeleton.generation_config = _generation_config(tokenizer)
    converted = ConvertedCheckpoint(
        name=name,
        directory=target,
        source=source,
        source_file=checkpoint.name,
        sha256=_sha256(checkpoint),
        parameters=sum(tensor.numel() for tensor in weights.values()),
        dropped_keys=tuple(outside + sorted(set(state) - set(expected))),
    )
    with atomic_directory(target, keep_others=False) as staging:
        skeleton.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        expert_card(converted, skeleton.config, repo_id).save(staging / "README.md")
    return converted


def expert_card(expert: ConvertedCheckpoint, config: LlamaConfig, repo_id: str | None = None) -> ModelCard:
    """The ``README.md`` of a converted expert: where its weights come from and what the conversion did."""
    data = ModelCardData(
        library_name="transformers", pipeline_tag="text-generation", tags=["llama", "ir3de", "ir3de-expert"]
    )
    return ModelCard.from_template(
        data,
        template_path=str(template_path("reference_expert_card.md")),
        name=expert.name,
        repo_id=repo_id or "path/to/this/expert",
        source=_link(expert.source),
        source_file=expert.source_file,
        sha256=expert.sha256,
        prefix=WRAPPER_PREFIX,
        parameters=f"{expert.parameters:,}",
        dropped_keys=", ".join(f"`{key}`" for key in expert.dropped_keys),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        vocab_size=f"{config.vocab_size:,}",
    )


def _link(source: str) -> str:
    repo = hub_id(source)
    return f"[{repo}](https://huggingface.co/{repo})" if repo else "a local folder"


def _generation_config(tokenizer: Any) -> GenerationConfig:
    """EOS doubles as padding, as in the authors' generation code."""
    eos = tokenizer.eos_token_id
    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=eos)


def _sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
