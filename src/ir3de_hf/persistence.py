# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""What a saved router holds beside transformers' config and weights, and the checks around loading it.

`IR3DERouterModel.save_pretrained` writes, inside one atomic directory swap (`ir3de_hf._saving`): transformers'
``config.json`` and ``model.safetensors``, then the companions written here (tokenizer files, the confusion-matrix
image, the ``README.md`` model card). Loading refuses a foreign ``model_type`` before any weight is read.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import torch
from huggingface_hub import CommitInfo, HfApi, snapshot_download
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer
from transformers.utils import cached_file

from ._hub_files import hub_id, local_path_or_hub_id, upload_directory
from ._saving import atomic_directory
from .cards import CALIBRATION_IMAGE, CONFUSION_IMAGE, CardInfo, router_card
from .checkpoint import FORMAT_KEYS
from .configuration_ir3de import IR3DEConfig
from .encoder import embedding_fingerprint

if TYPE_CHECKING:
    from .modeling_ir3de import IR3DERouterModel

__all__ = [
    "ENCODER_KEY",
    "PushOptions",
    "by_reference_overrides",
    "check_pushable",
    "check_save_target",
    "check_weights",
    "copy_expert",
    "expected_tensors",
    "hub_kwargs",
    "overridden",
    "pinned_encoder_revision",
    "portable_registry",
    "push_router",
    "read_statistics",
    "resolve_registry",
    "save_router",
    "saved_config",
    "saved_tokenizer",
    "write_companions",
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
        card: extra model-card content (evaluation report, datasets, license, tags).
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


def save_router(
    router: IR3DERouterModel,
    directory: str | os.PathLike[str],
    save_weights: Callable[..., None],
    *,
    card: CardInfo | None,
    encoder_by_reference: bool,
    overwrite: bool,
    copy_experts: bool,
    weights_options: dict[str, Any],
) -> None:
    """The body of `IR3DERouterModel.save_pretrained`: checks the target, writes config and weights with
    ``save_weights`` (transformers' own `save_pretrained`), the local experts and the companions into a new directory
    with no local absolute path, and swaps it in atomically."""
    config = router.config
    config.check()
    overrides = by_reference_overrides(config, router.embed_tokens.weight) if encoder_by_reference else {}
    state = {
        key: value for key, value in router.state_dict().items() if not (encoder_by_reference and key == ENCODER_KEY)
    }
    weights_options = {**weights_options, "state_dict": state | router.statistics_tensors()}
    replaces_foreign = check_save_target(directory, overwrite)
    portable, copies = portable_registry(config, directory, copy_experts)
    bases = {entry["name"]: entry.get("base_model") for entry in portable["experts"]}
    with (
        atomic_directory(directory, keep_others=not replaces_foreign) as staging,
        overridden(config, overrides | portable),
    ):
        save_weights(staging, **weights_options)
        for name, folder in copies.items():
            copy_expert(folder, staging / "experts" / name, bases[name])
        counts = router.store.token_counts()
        write_companions(staging, config, counts, router.tokenizer, card, by_reference=encoder_by_reference)


def push_router(router: IR3DERouterModel, repo_id: str, options: PushOptions) -> CommitInfo:
    """The body of `IR3DERouterModel.push_to_hub`: one commit of the router saved into a scratch folder."""
    check_pushable(router.config)
    by_reference = options.get("encoder_by_reference", False)
    api = HfApi(token=options.get("token"))
    pinned = pinned_encoder_revision(api, router.config) if by_reference else router.config.encoder_revision
    card = replace(options.get("card") or CardInfo(), repo_id=repo_id)
    with overridden(router.config, {"encoder_revision": pinned}):
        return upload_directory(
            api,
            repo_id,
            lambda staging: router.save_pretrained(staging, encoder_by_reference=by_reference, card=card),
            revision=options.get("revision"),
            commit_message=options.get("commit_message") or f"Upload IR3DE router ({router.num_experts} experts)",
            commit_description=options.get("commit_description"),
            private=options.get("private"),
            create_pr=options.get("create_pr", False),
        )


def by_reference_overrides(config: IR3DEConfig, weight: torch.Tensor) -> dict[str, Any]:
    """The config fields of a save without the embedding table: the flag and the table's sha256."""
    if not config.encoder:
        raise ValueError(
            "encoder_by_reference=True needs config.encoder (the Hub id or path of the model whose input embeddings "
            "this router uses); this router's encoder was given as a tensor. Set router.config.encoder, or save the "
            "router self-contained."
        )
    return {"encoder_by_reference": True, "encoder_sha256": embedding_fingerprint(weight)}


def pinned_encoder_revision(api: HfApi, config: IR3DEConfig) -> str | None:
    """The encoder revision a by-reference push records: the router's own pin, else the encoder's current commit."""
    if hub_id(config.encoder) is None:
        raise ValueError(
            f"encoder_by_reference=True needs the encoder to be a Hub id, but it is {config.encoder!r}: others could "
            "not load it. Set router.config.encoder to the encoder's Hub id (and encoder_revision), or push the "
            "router self-contained."
        )
    return config.encoder_revision or api.model_info(config.encoder).sha  # type: ignore[arg-type]


def write_companions(
    directory: Path,
    config: IR3DEConfig,
    token_counts: Sequence[int],
    tokenizer: Any,
    card: CardInfo | None,
    by_reference: bool,
) -> None:
    """Writes the tokenizer, the confusion-matrix image (when ``card`` has an evaluation), the reliability diagram
    (when it has a calibration report) and the model card."""
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    image = calibration_image = None
    if card is not None and card.evaluation is not None:
        from .evaluation import plot_confusion_matrix

        image = plot_confusion_matrix(card.evaluation, directory / CONFUSION_IMAGE).name
    if card is not None and card.calibration is not None:
        calibration_image = card.calibration.plot(directory / CALIBRATION_IMAGE).name
    model_card = router_card(
        config,
        token_counts,
        card,
        confusion_image=image,
        calibration_image=calibration_image,
        by_reference=by_reference,
    )
    model_card.save(directory / "README.md")


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
    return overrides, copies


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


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


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
    config_file = cached_file(name_or_path, "config.json", **where)
    try:
        values = json.loads(Path(config_file).read_text())  # type: ignore[arg-type]
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


def saved_tokenizer(name_or_path: str | os.PathLike[str], where: Mapping[str, Any]) -> Any:
    """The tokenizer saved with a router, or None when it was saved without one."""
    found = cached_file(name_or_path, "tokenizer_config.json", _raise_exceptions_for_missing_entries=False, **where)
    return AutoTokenizer.from_pretrained(name_or_path, **where) if found else None
