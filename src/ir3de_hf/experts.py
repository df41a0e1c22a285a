# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""ExpertPool: the experts behind a router, loaded lazily, placed with accelerate, unloaded least-recently-used.

Full models are loaded with `AutoModelForCausalLM.from_pretrained`; PEFT adapters of the same base share ONE copy of
that base (peft's multi-adapter switching), so six LoRA experts of a 135M model cost one 135M model plus six small
adapters. Sources are local directories or Hub ids (resolved through the HF cache, so they work offline once cached).

>>> from ir3de_hf import ExpertSpec
>>> from ir3de_hf.experts import ExpertPool
>>> pool = ExpertPool(max_memory="2GB")
>>> pool.names
[]
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ._extras import require
from .configuration_ir3de import ExpertSpec
from .hub._locations import hub_file, local_path_or_hub_id
from .tokenization import vocabulary_fingerprint

__all__ = ["ExpertPool", "LoadedModel", "with_adapter_base"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


@dataclass
class LoadedModel:
    """A ready expert: the model to call ``generate`` on (adapter already active) and its tokenizer."""

    name: str
    model: Any
    tokenizer: Any


@dataclass
class _Unit:
    """What occupies memory: one full model, or one base model with the adapters loaded on it."""

    model: Any
    tokenizer: Any
    bytes: int
    experts: set[str] = field(default_factory=set)


class ExpertPool:
    """Registry and lazy loader of expert models.

    Args:
        specs: experts to register now (each is checked, see [`register`]).
        dtype: dtype to load the experts in (e.g. `torch.bfloat16` on GPUs); defaults to the checkpoint's.
        device_map: default placement passed to `from_pretrained` (`"cpu"`, `"cuda:0"`, `"auto"`, a dict...).
        placement: per-expert placement overriding `device_map`, e.g. `{"code": "cuda:0", "legal": "cuda:1"}`.
        max_memory: budget for loaded experts (bytes or a string like `"8GB"`); least-recently-used experts are
            unloaded before a load would exceed it.
        tokenizer_fingerprint: the router's vocabulary fingerprint; experts whose tokenizer differs are refused.
        base_model_paths: where to find base models of adapters, e.g. `{"HuggingFaceTB/SmolLM2-135M-Instruct":
            "/models/smollm2"}` for hosts that keep models outside the HF cache.
    """

    def __init__(
        self,
        specs: Iterable[ExpertSpec] = (),
        *,
        dtype: torch.dtype | None = None,
        device_map: str | dict[str, Any] | None = None,
        placement: Mapping[str, str | dict[str, Any]] | None = None,
        max_memory: int | str | None = None,
        tokenizer_fingerprint: str | None = None,
        base_model_paths: Mapping[str, str | os.PathLike[str]] | None = None,
    ) -> None:
        self.dtype = dtype
        self.device_map = device_map
        self.placement = dict(placement or {})
        self.max_memory = max_memory
        self.tokenizer_fingerprint = tokenizer_fingerprint
        self.base_model_paths = {key: str(value) for key, value in (base_model_paths or {}).items()}
        self._specs: dict[str, ExpertSpec] = {}
        self._units: OrderedDict[tuple[str, str | None, str], _Unit] = OrderedDict()
        for spec in specs:
            self.register(spec)

    # ------------------------------------------------------------------ registry

    @property
    def max_memory(self) -> int | None:
        """Budget in bytes for loaded experts (`None`: unlimited). Accepts strings like `"8GB"` when set."""
        return self._max_memory

    @max_memory.setter
    def max_memory(self, size: int | str | None) -> None:
        self._max_memory = _parse_size(size)

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    @property
    def loaded(self) -> list[str]:
        """Names of the experts currently in memory, least recently used first."""
        return [name for unit in self._units.values() for name in sorted(unit.experts)]

    def spec(self, name: str) -> ExpertSpec:
        if name not in self._specs:
            raise ValueError(
                f"No expert named {name!r} in the pool (registered: {', '.join(self._specs) or 'none'}); an expert "
                "needs a source= (Hub id or local directory) to generate."
            )
        return self._specs[name]

    def register(self, spec: ExpertSpec) -> None:
        """Adds an expert after checking that its source exists and that its tokenizer matches the router's.

        Nothing is loaded except the tokenizer. Raises `ValueError` naming the expert and its source otherwise.
        """
        spec = with_adapter_base(spec)
        marker = "adapter_config.json" if spec.kind == "adapter" else "config.json"
        if _locate(spec.name, _source(spec), spec.revision, marker) is None:
            hint = "" if spec.kind == "adapter" else " (if it is a PEFT adapter, also give base_model=)"
            raise ValueError(f"Expert {spec.name!r}: {spec.source!r} has no {marker}{hint}.")
        if spec.kind == "adapter":
            _locate(spec.name, self._base_source(spec), None, "config.json", role="base model")
        if self.tokenizer_fingerprint is not None:
            found = vocabulary_fingerprint(self._load_tokenizer(spec))
            if found != self.tokenizer_fingerprint:
                raise ValueError(
                    f"Expert {spec.name!r} ({spec.source}) uses a different tokenizer than the router "
                    f"(vocabulary fingerprint {found[:19]}… vs {self.tokenizer_fingerprint[:19]}…); route only to "
                    "experts that share the router encoder's tokenizer."
                )
        self.unregister(spec.name, missing_ok=True)
        self._specs[spec.name] = spec

    def unregister(self, name: str, missing_ok: bool = False) -> None:
        if name not in self._specs:
            if missing_ok:
                return
            self.spec(name)
        self.unload(name)
        del self._specs[name]

    # ------------------------------------------------------------------ loading

    def get(self, name: str) -> LoadedModel:
        """Returns expert ``name`` ready to generate, loading it (and unloading others) if needed."""
        spec = self.spec(name)
        key = self._unit_key(spec)
        unit = self._units.get(key)
        if unit is None:
            self._make_room(self._estimate_bytes(spec), keep=None)
            unit = self._load_unit(spec)
            self._units[key] = unit
        elif name not in unit.experts:
            self._make_room(_adapter_bytes(spec), keep=key)
            unit.model.load_adapter(spec.source, adapter_name=name, revision=spec.revision)
            unit.experts.add(name)
            unit.bytes = _module_bytes(unit.model)
        self._units.move_to_end(key)
        if spec.kind == "adapter":
            unit.model.set_adapter(name)
        return LoadedModel(name, unit.model, unit.tokenizer)

    def batch_key(self, name: str) -> tuple[str, str | None, str]:
        """Experts with equal keys share one model in memory (the adapters of one base on one device), so their
        prompts can be generated in one mixed batch."""
        return self._unit_key(self.spec(name))

    def unload(self, name: str) -> None:
        """Frees expert ``name`` (an adapter is deleted from its base; the base goes with its last adapter)."""
        for key, unit in list(self._units.items()):
            if name in unit.experts:
                unit.experts.discard(name)
                if unit.experts and self._specs[name].kind == "adapter":
                    unit.model.delete_adapter(name)
                    unit.bytes = _module_bytes(unit.model)
                else:
                    del self._units[key]

    def clear(self) -> None:
        self._units.clear()

    @property
    def memory_bytes(self) -> int:
        return sum(unit.bytes for unit in self._units.values())

    def _make_room(self, needed: int, keep: tuple[str, str | None, str] | None) -> None:
        if self.max_memory is None:
            return
        if needed > self.max_memory:
            raise ValueError(
                f"An expert needs about {needed / 1e6:.0f} MB, more than the pool's max_memory of "
                f"{self.max_memory / 1e6:.0f} MB; raise max_memory or load it in a smaller dtype."
            )
        while self.memory_bytes + needed > self.max_memory:
            victims = [key for key in self._units if key != keep]
            if not victims:
                return
            del self._units[victims[0]]

    def _unit_key(self, spec: ExpertSpec) -> tuple[str, str | None, str]:
        placement = repr(self.placement.get(spec.name, self.device_map))
        if spec.kind == "adapter":
            return (f"base:{self._base_source(spec)}", None, placement)
        return (f"model:{spec.name}:{spec.source}", spec.revision, placement)

    def _base_source(self, spec: ExpertSpec) -> str:
        base = spec.base_model or ""
        return self.base_model_paths.get(base, base)

    def _load_kwargs(self, spec: ExpertSpec) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.dtype is not None:
            kwargs["dtype"] = self.dtype
        device_map = self.placement.get(spec.name, self.device_map)
        if device_map is not None:
            require("accelerate", extra="experts", purpose="placing experts with a device_map")  # transformers uses it
            kwargs["device_map"] = device_map
        return kwargs

    def _load_unit(self, spec: ExpertSpec) -> _Unit:
        model: Any
        if spec.kind == "adapter":
            PeftModel = require("peft", extra="experts", purpose="loading a LoRA adapter expert").PeftModel
            base = AutoModelForCausalLM.from_pretrained(self._base_source(spec), **self._load_kwargs(spec))
            model = PeftModel.from_pretrained(base, _source(spec), adapter_name=spec.name, revision=spec.revision)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                _source(spec), revision=spec.revision, **self._load_kwargs(spec)
            )
        model.eval()
        return _Unit(model, self._load_tokenizer(spec), _module_bytes(model), {spec.name})

    def _load_tokenizer(self, spec: ExpertSpec) -> Any:
        if (
            spec.kind == "adapter"
            and _locate(spec.name, _source(spec), spec.revision, "tokenizer_config.json") is None
        ):
            return AutoTokenizer.from_pretrained(self._base_source(spec))
        return AutoTokenizer.from_pretrained(_source(spec), revision=spec.revision)

    def _estimate_bytes(self, spec: ExpertSpec) -> int:
        """Parameter bytes of the model to load, from its config on the meta device (nothing is allocated)."""
        source = self._base_source(spec) if spec.kind == "adapter" else _source(spec)
        revision = None if spec.kind == "adapter" else spec.revision
        config = AutoConfig.from_pretrained(source, revision=revision)
        with torch.device("meta"):  # a thread-local mode, unlike accelerate's init_empty_weights (a global patch)
            skeleton = AutoModelForCausalLM.from_config(config)
        dtype = self.dtype or getattr(config, "dtype", None) or torch.float32
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        parameters = sum(parameter.numel() for parameter in skeleton.parameters())
        extra = _adapter_bytes(spec) if spec.kind == "adapter" else 0
        return parameters * torch.empty((), dtype=dtype).element_size() + extra


def with_adapter_base(spec: ExpertSpec) -> ExpertSpec:
    """``spec`` with ``base_model`` read from the adapter's ``adapter_config.json`` (``base_model_name_or_path``) when
    its source is a PEFT adapter and no base model was given; other specs unchanged."""
    if spec.base_model is not None or spec.source is None:
        return spec
    try:
        directory = _locate(spec.name, spec.source, spec.revision, "adapter_config.json")
    except ValueError:
        if isinstance(local_path_or_hub_id(spec.source), Path):
            raise
        return spec  # a Hub source that cannot be reached now: `register` says so when the expert is needed
    if directory is None:
        return spec
    try:
        base = json.loads((directory / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(
            f"Expert {spec.name!r}: {spec.source!r} has an unreadable adapter_config.json ({error})."
        ) from error
    if not isinstance(base, str) or not base:
        raise ValueError(
            f"Expert {spec.name!r}: {spec.source!r} is a PEFT adapter whose adapter_config.json names no base model "
            "(base_model_name_or_path); pass base_model=."
        )
    return replace(spec, base_model=base)


def _locate(name: str, source: str, revision: str | None, filename: str, role: str = "source") -> Path | None:
    """The directory holding ``filename`` for a local directory or a Hub id (through the HF cache), or None when the
    repository exists without that file. A source that cannot be found at all is a clear error."""
    local = local_path_or_hub_id(source)
    if isinstance(local, Path):
        if not local.is_dir():
            raise ValueError(f"Expert {name!r}: {role} {source!r} is not a directory.")
        return local if (local / filename).is_file() else None
    where = f"Expert {name!r}: {role} {source!r} (revision {revision or 'main'})"
    found = hub_file(source, filename, revision, where=where, missing_ok=True)
    return found.parent if found is not None else None


def _module_bytes(model: Any) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _source(spec: ExpertSpec) -> str:
    if spec.source is None:
        raise ValueError(f"Expert {spec.name!r} has no source: give source= (a Hub id or a local directory).")
    return spec.source


def _adapter_bytes(spec: ExpertSpec) -> int:
    directory = _locate(spec.name, _source(spec), spec.revision, "adapter_config.json")
    if directory is None:
        return 0
    return sum(path.stat().st_size for path in directory.glob("adapter_model.*"))


def _parse_size(size: int | str | None) -> int | None:
    if size is None or isinstance(size, int):
        return size
    match = _SIZE.match(size)
    if not match:
        raise ValueError(f"max_memory must be a number of bytes or a size like '8GB' or '512MiB', got {size!r}.")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "B").upper()])
