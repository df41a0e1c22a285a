# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""What a saved router directory holds beside transformers' config and weights, and the checks around saving,
pushing and loading it.

Saving: `save_plan` turns a router into plain data (the weights to write, the config overrides that keep local
paths out, the expert folders to copy) before anything is written. Loading: `saved_config` parses ``config.json``
once and refuses a foreign ``model_type`` before any weight is read; `check_weights` reads the safetensors header
only; `saved_card` reads the card's data files back, so a loaded router keeps its card.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import torch
from huggingface_hub import HfApi, snapshot_download
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer
from transformers.utils import cached_file

from ..checkpoint import FORMAT_KEYS
from ..configuration_ir3de import IR3DEConfig
from ..encoder import embedding_fingerprint
from ._companions import CALIBRATION_FILE, CARD_FILE
from ._locations import hub_id, local_path_or_hub_id

if TYPE_CHECKING:
    from ..model_card import CardInfo
    from ..modeling_ir3de import IR3DERouterModel

__all__ = [
    "ENCODER_KEY",
    "WEIGHTS_FILE",
    "PushOptions",
    "SavePlan",
    "check_pushable",
    "check_save_target",
    "check_weights",
    "expected_tensors",
    "hub_kwargs",
    "overridden",
    "pinned_encoder_revision",
    "portable_registry",
    "read_statistics",
    "resolve_registry",
    "save_plan",
    "saved_card",
    "saved_config",
    "saved_tokenizer",
]

ENCODER_KEY = "embed_tokens.weight"
WEIGHTS_FILE = "model.safetensors"


class PushOptions(TypedDict, total=False):
    """Options of `IR3DERouterModel.push_to_hub` and `ir3de_hf.hub.push_router`.

    Attributes:
        revision: the branch to commit to (it must exist; default ``main``).
        commit_message, commit_description: the commit's texts.
        private: create the repository as private.
        token: a Hub token (default: the logged-in one).
        create_pr: open a pull request instead of committing to the branch.
        encoder_by_reference: leave the embedding table out (see `IR3DERouterModel.save_pretrained`).
        card: card content to add to the router's own (``router.card``: evaluation, calibration, sections...).
    """

    revision: str | None
    commit_message: str | None
    commit_description: str | None
    private: bool | None
    token: str | bool | None
    create_pr: bool
    encoder_by_reference: bool
    card: CardInfo | None


_HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "subfolder", "force_download")


@contextmanager
def overridden(config: IR3DEConfig, values: Mapping[str, Any]) -> Iterator[None]:
    """Sets config fields for the duration of a save only: a by-reference save must not change the router."""
    saved = {key: getattr(config, key) for key in values}
    for key, value in values.items():
        setattr(config, key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(config, key, value)


def by_reference_overrides(config: IR3DEConfig, weight: torch.Tensor) -> dict[str, Any]:
    """The config fields of a save without the embedding table: the flag and the table's sha256."""
    if not config.encoder:
        raise ValueError(
            "encoder_by_reference=True needs config.encoder (the Hub id or path of the model whose input embeddings "
            "this router uses); this router's encoder was given as a tensor. Set router.config.encoder, or save the "
            "router self-contained."
        )
    return {"encoder_by_reference": True, "encoder_sha256": embedding_fingerprint(weight)}


@dataclass(frozen=True)
class SavePlan:
    """A router's save, decided before anything is written.

    Attributes:
        state_dict: the tensors transformers writes to ``model.safetensors`` (encoder and statistics).
        overrides: config fields recorded for the save only: portable expert sources and encoder, and the
            by-reference fields.
        experts: per expert name, the local folder to copy to ``experts/<name>`` and its portable base model.
        keep_others: carry over the files of the target that the save does not write (a router's directory, not a
            foreign one replaced with ``overwrite``).
    """

    state_dict: dict[str, torch.Tensor]
    overrides: dict[str, Any]
    experts: dict[str, tuple[Path, str | None]]
    keep_others: bool


def save_plan(
    router: IR3DERouterModel,
    directory: str | os.PathLike[str],
    *,
    encoder_by_reference: bool,
    overwrite: bool,
    copy_experts: bool,
) -> SavePlan:
    """Checks the router and the target and decides what `IR3DERouterModel.save_pretrained` writes: no local
    absolute path, no embedding table when saved by reference."""
    config = router.config
    config.check()
    overrides = by_reference_overrides(config, router.embed_tokens.weight) if encoder_by_reference else {}
    state = {
        key: value for key, value in router.state_dict().items() if not (encoder_by_reference and key == ENCODER_KEY)
    }
    replaces_foreign = check_save_target(directory, overwrite)
    portable, copies = portable_registry(config, directory, copy_experts)
    bases = {entry["name"]: entry.get("base_model") for entry in portable["experts"]}
    return SavePlan(
        state_dict=state | router.statistics_tensors(),
        overrides=overrides | portable,
        experts={name: (folder, bases[name]) for name, folder in copies.items()},
        keep_others=not replaces_foreign,
    )


def check_save_target(directory: str | os.PathLike[str], overwrite: bool) -> bool:
    """Refuses to save over a non-empty directory that is not an IR3DE router (a model checkpoint, a dataset...),
    unless ``overwrite``: its files would be replaced or mixed with the router's.

    Returns:
        Whether the save replaces a foreign directory (with ``overwrite``): its files are then not carried over.
    """
    path = Path(directory).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory; choose a directory to save the router in.")
    entries = sorted(entry.name for entry in path.iterdir()) if path.is_dir() else []
    if not entries:
        return False
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if model_type == IR3DEConfig.model_type:
        return False
    if not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        what = f"a {model_type!r} model" if isinstance(model_type, str) else "files that are not an IR3DE router"
        raise FileExistsError(
            f"{path} holds {what} ({shown}); saving the router there would replace or mix with them. Choose an "
            "empty or new directory, or pass overwrite=True (--overwrite) to replace the directory."
        )
    return True


def portable_registry(
    config: IR3DEConfig, directory: str | os.PathLike[str], copy_experts: bool
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The config fields a router saved in ``directory`` records instead of local absolute paths, and the expert
    folders to copy into it.

    A local expert source becomes ``./experts/<name>`` (copied there with ``copy_experts``) or a path relative to
    ``directory``; a local base model or encoder becomes its Hub id when it is a snapshot of the HF cache
    (``models--org--name/snapshots/<sha>``, the revision pinned), else a path relative to ``directory``.

    Returns:
        The config overrides (``experts``, and ``encoder``/``encoder_revision`` when local) and, per expert name, the
        folder to copy to ``experts/<name>``.
    """
    target = Path(directory).expanduser().resolve()
    entries, copies = [], {}
    for spec in config.expert_specs:
        entry = spec.to_dict()
        source = _local(spec.source)
        if source is not None and copy_experts and source.is_dir():
            copies[spec.name] = source
            entry["source"] = f"./experts/{spec.name}"
        elif source is not None:
            entry["source"] = _relative(source, target)
        base = _local(spec.base_model)
        if base is not None:
            entry["base_model"] = _cached_hub_id(base)[0] or _relative(base, target)
        entries.append(entry)
    overrides: dict[str, Any] = {"experts": entries}
    encoder = _local(config.encoder)
    if encoder is not None:
        repo, revision = _cached_hub_id(encoder)
        overrides["encoder"] = repo or _relative(encoder, target)
        if repo is not None and config.encoder_revision is None:
            overrides["encoder_revision"] = revision
        if repo is None:
            warnings.warn(
                f"The router's encoder is the local folder {encoder}: the saved router records it as a path relative "
                f"to its directory ({overrides['encoder']}) and its card names no base_model. If the folder is a copy "
                "of a Hub model, build the router with IR3DERouterModel.from_encoder(folder, encoder_id='org/name') "
                "or set router.config.encoder = 'org/name' before saving.",
                stacklevel=4,
            )
    return overrides, copies


def resolve_registry(config: IR3DEConfig, name_or_path: str | os.PathLike[str], where: Mapping[str, Any]) -> None:
    """Turns the relative expert sources and base models of a loaded router into paths of this machine: relative to
    its directory, or, for a router loaded from the Hub, to the downloaded folders of its repository. A relative
    encoder path is resolved against a local router directory (a Hub repository holds no encoder)."""
    relative = [
        value
        for spec in config.expert_specs
        for value in (spec.source, spec.base_model)
        if value is not None and value.startswith(("./", "../"))
    ]
    encoder = config.encoder
    if encoder is not None and encoder.startswith(("./", "../")):
        located = local_path_or_hub_id(name_or_path)
        if isinstance(located, Path):
            config.encoder = str((located.resolve() / encoder).resolve())
    if not relative:
        return
    located = local_path_or_hub_id(name_or_path)
    if isinstance(located, Path):
        root = located.resolve()
    else:
        patterns = [f"{value.removeprefix('./').rstrip('/')}/*" for value in relative]
        keep = {key: where[key] for key in ("revision", "cache_dir", "token", "local_files_only") if key in where}
        root = Path(snapshot_download(located, allow_patterns=patterns, **keep))
    experts = []
    for spec in config.expert_specs:
        entry = spec.to_dict()
        for key in ("source", "base_model"):
            value = entry.get(key)
            if isinstance(value, str) and value.startswith(("./", "../")):
                entry[key] = str((root / value).resolve())
        experts.append(entry)
    config.experts = experts


def _local(value: str | None) -> Path | None:
    if value is None:
        return None
    located = local_path_or_hub_id(value)
    return located.resolve() if isinstance(located, Path) else None


def _relative(path: Path, directory: Path) -> str:
    relative = os.path.relpath(path, directory)
    return relative if relative.startswith("..") else f"./{relative}"


def _cached_hub_id(path: Path) -> tuple[str | None, str | None]:
    """``("org/name", sha)`` for a snapshot folder of the HF cache, else ``(None, None)``."""
    parts = path.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].removeprefix("models--").replace("--", "/"), parts[-1]
    return None, None


def hub_kwargs(load_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of a `from_pretrained` call that say where files come from."""
    return {key: load_kwargs[key] for key in _HUB_KWARGS if key in load_kwargs}


def saved_config(name_or_path: str | os.PathLike[str], where: Mapping[str, Any]) -> IR3DEConfig:
    """The checked config of a saved router. Refuses, before any weight is read, a path that is not a directory, a
    repository that is not an IR3DE router (transformers would only warn and build a router from a foreign config)
    and invalid values, each with a message that names the file."""
    located = local_path_or_hub_id(name_or_path)
    if isinstance(located, Path) and not located.is_dir():
        raise FileNotFoundError(
            f"{name_or_path}: no such directory. Give the directory of a saved router, or a Hub id like 'org/name'."
        )
    config_file = cached_file(name_or_path, "config.json", _raise_exceptions_for_missing_entries=False, **where)
    if config_file is None:
        raise FileNotFoundError(
            f"{name_or_path} has no config.json, so it is not a saved router (or its save was damaged). Give the "
            "directory save_pretrained wrote, or save the router there again."
        )
    try:
        values = json.loads(Path(config_file).read_text())
        model_type = values.get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{config_file}: not a JSON object ({error}).") from error
    if model_type != IR3DEConfig.model_type:
        raise ValueError(
            f"{name_or_path} is not an IR3DE router: its config.json has model_type {model_type!r}, expected "
            f"{IR3DEConfig.model_type!r}. Load it with the matching transformers class instead."
        )
    try:
        return IR3DEConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{config_file}: {error}") from error


def check_weights(name_or_path: str | os.PathLike[str], where: Mapping[str, Any], config: IR3DEConfig) -> str:
    """Refuses a ``model.safetensors`` that is truncated, lacks a tensor or holds one whose shape or dtype disagrees
    with ``config.json``: transformers would fill what is missing with zeros and only warn. Reads the header only;
    returns the file's local path."""
    weights = cached_file(name_or_path, WEIGHTS_FILE, _raise_exceptions_for_missing_entries=False, **where)
    if weights is None:
        raise ValueError(f"{name_or_path} has no {WEIGHTS_FILE}: the router's statistics are missing.")
    try:
        with safe_open(weights, framework="pt") as handle:
            keys = handle.keys()  # a safetensors handle, not a dict
            found = {
                key: (tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype()) for key in keys
            }
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{weights}: unreadable or truncated ({error}).") from error
    for key, (shape, dtype) in expected_tensors(config).items():
        if key not in found:
            raise ValueError(f"{weights} lacks the tensor {key!r} ({dtype} {list(shape)}); the file is damaged.")
        if found[key][1] != dtype or not _same_shape(found[key][0], shape):
            raise ValueError(
                f"{weights}: {key!r} is {found[key][1]} {list(found[key][0])} but config.json needs {dtype} "
                f"{list(shape)}; the weights and the config do not belong together."
            )
    return weights


def _same_shape(found: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """``None`` in ``expected`` matches any length (the number of stored counts of a sparse histogram)."""
    return len(found) == len(expected) and all(e is None or f == e for f, e in zip(found, expected, strict=True))


def read_statistics(weights: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The statistics tensors of a saved router's ``model.safetensors`` (every key but the encoder's)."""
    with safe_open(weights, framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys() if key in FORMAT_KEYS}  # noqa: SIM118


def expected_tensors(config: IR3DEConfig) -> dict[str, tuple[tuple[int | None, ...], str]]:
    """Shape and safetensors dtype of every tensor a saved router of ``config`` must hold (``None``: any length)."""
    vocab_size, width = config.vocab_size, config.hidden_size + 1
    num_experts = len(config.experts)
    imported = sum(spec.statistics == "moments" for spec in config.expert_specs)
    tensors: dict[str, tuple[tuple[int | None, ...], str]] = {}
    if not config.encoder_by_reference:
        tensors[ENCODER_KEY] = ((vocab_size, config.hidden_size), "F32")
    if config.ir3de_format_version >= 3:
        tensors["expert_offsets"] = ((num_experts + 1,), "I64")
        tensors["expert_token_ids"] = ((None,), "I32")
        tensors["expert_token_counts"] = ((None,), "I64")
        tensors["moments_a"] = ((width, width), "F64")
        tensors["moments_b"] = ((num_experts, width), "F64")
    else:
        tensors["expert_counts"] = ((num_experts, vocab_size), "I64")
    if imported:
        tensors["imported_moments_a"] = ((imported, width, width), "F64")
        tensors["imported_moments_b"] = ((imported, width), "F64")
        if config.ir3de_format_version >= 2:
            tensors["imported_moments_index"] = ((imported,), "I64")
    return tensors


def saved_tokenizer(name_or_path: str | os.PathLike[str], where: Mapping[str, Any], config: IR3DEConfig) -> Any:
    """The tokenizer saved with a router, or None when it was saved without one (``config`` spares `AutoTokenizer`
    a second parse of ``config.json``)."""
    found = cached_file(name_or_path, "tokenizer_config.json", _raise_exceptions_for_missing_entries=False, **where)
    if not found:
        return None
    try:
        return AutoTokenizer.from_pretrained(name_or_path, config=config, **where)
    except (OSError, ValueError, KeyError, TypeError) as error:  # what the tokenizer libraries raise on bad files
        backend = cached_file(name_or_path, "tokenizer.json", _raise_exceptions_for_missing_entries=False, **where)
        what = "has no tokenizer.json" if backend is None else f"has a tokenizer.json that cannot be read ({error!r})"
        raise ValueError(
            f"{name_or_path} {what}, though its tokenizer_config.json says it was saved with a tokenizer. Save the "
            "router again with its tokenizer, or delete tokenizer_config.json to load it without one."
        ) from error


def saved_card(name_or_path: str | os.PathLike[str], where: Mapping[str, Any]) -> CardInfo:
    """The card content saved with a router (``card.json``, ``calibration.json``); empty when it has none."""
    from ..calibration import CalibrationReport
    from ..model_card import CardInfo

    values, report = (_saved_json(name_or_path, name, where) for name in (CARD_FILE, CALIBRATION_FILE))
    try:
        calibration = CalibrationReport.from_dict(report) if report is not None else None
        return CardInfo.from_dict(values or {}, calibration)
    except (TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"{name_or_path}: its {CARD_FILE} or {CALIBRATION_FILE} is malformed ({error}); delete the file or save "
            "the router again."
        ) from error


def _saved_json(name_or_path: str | os.PathLike[str], filename: str, where: Mapping[str, Any]) -> Any:
    found = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False, **where)
    if found is None:
        return None
    try:
        return json.loads(Path(found).read_text())
    except ValueError as error:
        raise ValueError(f"{found}: not valid JSON ({error}); delete the file or save the router again.") from error


def check_pushable(config: IR3DEConfig) -> None:
    """Refuses a push whose adapters name a local base model: the experts travel in the repository, a base model
    does not, and a path of this machine means nothing to others."""
    local = [f"{spec.name} ({spec.base_model})" for spec in config.expert_specs if _local(spec.base_model) is not None]
    if local:
        raise ValueError(
            f"Cannot push: the base model of expert(s) {', '.join(local)} is a local folder, which others cannot "
            "load. Name it by its Hub id (base_model='org/name') and keep loading it from here with "
            "router.expert_pool = ExpertPool(base_model_paths={'org/name': 'local/folder'})."
        )


def pinned_encoder_revision(api: HfApi, config: IR3DEConfig) -> str | None:
    """The encoder revision a by-reference push records: the router's own pin, else the encoder's current commit."""
    if hub_id(config.encoder) is None:
        raise ValueError(
            f"encoder_by_reference=True needs the encoder to be a Hub id, but it is {config.encoder!r}: others could "
            "not load it. Set router.config.encoder to the encoder's Hub id (and encoder_revision), or push the "
            "router self-contained."
        )
    return config.encoder_revision or api.model_info(config.encoder).sha  # type: ignore[arg-type]
