# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The IR3DE-AXL statistics format, both ways: import AXL files into a router of moment-based experts, and export a
router's experts as an AXL file that an AXL peer loads unchanged.

Import merges files exactly as AXL peers do (``peer.py``): the moments of every entry that shares a domain tag are
summed (``coding`` counted on two datasets is one expert), tags in first-seen order; the head is then our solve, which
is the peers' ``(A + λI) W = B`` with column normalisation. AXL statistics count EOS padding and BOS/EOS rows (the
extractor pads with EOS and ignores the attention mask); imported experts record it as ``includes_padding`` and the
model card says so. The older single-file layout (summed ``A``, ``b`` as a (d+1) x N matrix) that no released code
writes is no longer read.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
from torch import nn
from transformers import PreTrainedModel

from ._axl_format import AXLFile, Moments, read_axl_file, write_axl_file
from ._embedding_file import read_input_embeddings
from .encoder import embedding_fingerprint
from .hub._locations import local_path_or_hub_id
from .modeling_ir3de import IR3DERouterModel

__all__ = ["ReferenceStatistics", "export_reference", "import_reference_router", "load_reference_statistics"]

_PATTERN = "*.pth"
_GLOB = ("*", "?", "[")


@dataclass
class ReferenceStatistics:
    """AXL files merged by tag: float64 moments per tag, the datasets and files each came from, and the ids of the
    tokenizer and embedder they were computed with."""

    tags: list[str] = field(default_factory=list)
    moments: list[Moments] = field(default_factory=list)
    datasets: list[list[str]] = field(default_factory=list)
    includes_padding: list[bool] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    tokenizer: str | None = None
    embedder: str | None = None

    def add(self, axl: AXLFile) -> None:
        """Adds a file's entries: a tag seen before gets the sum of the moments, as AXL peers merge them."""
        if self.files and (axl.tokenizer, axl.embedder) != (self.tokenizer, self.embedder):
            raise ValueError(
                f"{axl.path!r} was computed with tokenizer {axl.tokenizer!r} and embedder {axl.embedder!r}, but "
                f"{self.files[0]!r} with {self.tokenizer!r} and {self.embedder!r}: statistics of different "
                "embedders cannot be merged into one router (AXL peers keep them apart too)."
            )
        if self.moments and axl.width != self.moments[0][1].shape[0]:
            raise ValueError(
                f"{axl.path!r} has moments of width {axl.width}, {self.files[0]!r} of width "
                f"{self.moments[0][1].shape[0]}: they come from different embedders."
            )
        self.files.append(axl.path)
        self.tokenizer, self.embedder = axl.tokenizer, axl.embedder
        for tag, dataset, (a, b) in zip(axl.tags, axl.datasets, axl.moments, strict=True):
            if tag in self.tags:
                index = self.tags.index(tag)
                self.moments[index] = (self.moments[index][0] + a, self.moments[index][1] + b)
                self.datasets[index].append(dataset)
                self.includes_padding[index] = self.includes_padding[index] or axl.includes_padding
            else:
                self.tags.append(tag)
                self.moments.append((a, b))
                self.datasets.append([dataset])
                self.includes_padding.append(axl.includes_padding)


def reference_files(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    include: str = _PATTERN,
    revision: str | None = None,
) -> list[str]:
    """The AXL files named by ``sources``, in order: a file, a glob (sorted matches), a directory (its files matching
    ``include``, sorted) or a Hub repository (its files matching ``include`` at ``revision``, through the HF cache, so
    offline mode works once they are cached)."""
    items = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    if not items:
        raise ValueError("No statistics given: pass AXL files, a glob, a directory or a Hub repository of them.")
    files: list[str] = []
    for item in items:
        located = local_path_or_hub_id(item)
        if isinstance(located, str):
            found = _hub_files(located, include, revision)
        elif any(mark in str(item) for mark in _GLOB):
            found = sorted(glob.glob(os.path.expanduser(os.fspath(item))))
        elif located.is_dir():
            found = sorted(str(path) for path in located.glob(include) if path.is_file())
        elif located.is_file():
            found = [str(located)]
        else:
            raise ValueError(f"Statistics {os.fspath(item)!r}: no such file or directory.")
        if not found:
            raise ValueError(f"Statistics {os.fspath(item)!r}: no file matches {include!r} there.")
        files.extend(found)
    return files


def load_reference_statistics(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    include: str = _PATTERN,
    revision: str | None = None,
) -> ReferenceStatistics:
    """Reads every AXL file of ``sources`` (see `reference_files`) and merges them by tag; any problem is a
    `ValueError` naming the file and the field."""
    merged = ReferenceStatistics()
    for path in reference_files(sources, include=include, revision=revision):
        merged.add(read_axl_file(path))
    return merged


def import_reference_router(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    encoder: str | os.PathLike[str] | PreTrainedModel | nn.Embedding | None = None,
    encoder_id: str | None = None,
    tokenizer: Any = None,
    include: str = _PATTERN,
    revision: str | None = None,
    **config_kwargs: Any,
) -> IR3DERouterModel:
    """Builds a router from IR3DE-AXL statistics: one moment-based expert per domain tag, in first-seen order.

    Args:
        sources: AXL ``.pth`` files, globs, directories or a Hub repository of them (see `reference_files`).
        encoder: the embedder the moments were summed over; defaults to the files' ``embedder``, which must then be
            a Hub id (a file never chooses a local folder). Only its embedding tensor is read. Another model than
            the files' embedder is refused: a Hub id or an HF-cache snapshot of another repository, a loaded model
            whose ``name_or_path`` is another id, or a table that differs from the embedder's when that one is on
            this machine (a folder, or in the HF cache); a folder that names nothing needs ``encoder_id=``.
        encoder_id: the Hub id to record for a local ``encoder``, confirming that it is a copy of the files'
            ``embedder`` (which it must equal).
        tokenizer: defaults to the encoder's (or the files' ``tokenizer`` when it names another repository).
        include: the file pattern within directories and Hub repositories.
        revision: the revision of a Hub repository of statistics.
        **config_kwargs: [`IR3DEConfig`] fields (``ridge_lambda``, ``aggregation``...). ``balance_experts``
            defaults to False here: the reference code weighs each domain by its token count, and the import gives
            its exact head; pass True for the balanced fit of `from_encoder`'s routers. ``naive_bayes_weight`` is
            always 0 (with a warning when another value is given): the term needs token counts, which moments lack.

    Raises:
        ValueError: unreadable or inconsistent files, or an encoder other than the one the files name.
    """
    config_kwargs.setdefault("balance_experts", False)
    statistics = load_reference_statistics(sources, include=include, revision=revision)
    source, recorded, tie = _encoder(statistics, encoder, encoder_id)
    if tokenizer is None and statistics.tokenizer not in (None, statistics.embedder):
        if isinstance(local_path_or_hub_id(statistics.tokenizer), Path):  # as for the embedder: never the file's pick
            raise ValueError(
                f"{statistics.files[0]!r} names its tokenizer by the local path {statistics.tokenizer!r}, not by a "
                "Hub id: a statistics file never chooses which local folder is read. Pass tokenizer= yourself."
            )
        tokenizer = statistics.tokenizer
    named = local_path_or_hub_id(tokenizer) if isinstance(tokenizer, str) else None
    if isinstance(named, str) and statistics.tokenizer is not None and named != statistics.tokenizer:
        raise ValueError(
            f"The statistics were counted with the tokenizer {statistics.tokenizer!r}, not {named!r}: token ids of "
            "another tokenizer mean other tokens. Pass that tokenizer (or a local copy of it)."
        )
    router = IR3DERouterModel.from_encoder(source, tokenizer, encoder_id=recorded, **config_kwargs)
    width = router.config.hidden_size + 1
    if statistics.moments[0][1].shape[0] != width:
        raise ValueError(
            f"The statistics have moments of width {statistics.moments[0][1].shape[0]} (d+1) but the encoder's "
            f"embeddings have d = {router.config.hidden_size}: they were computed with another embedder."
        )
    _check_table(statistics, source, router.embed_tokens.weight, tie)
    _without_naive_bayes(router)
    for tag, moments, datasets, padding in zip(
        statistics.tags, statistics.moments, statistics.datasets, statistics.includes_padding, strict=True
    ):
        description = f"IR3DE-AXL statistics of {', '.join(datasets)}"
        router.add_expert(tag, moments=moments, includes_padding=padding, description=description)
    return router


def _without_naive_bayes(router: IR3DERouterModel) -> None:
    """Sets ``naive_bayes_weight`` to 0, warning when another (valid) value was asked for: the term needs each
    expert's token counts and imported experts hold moments only, so the config says what routing does."""
    asked = router.config.naive_bayes_weight
    if asked:
        warnings.warn(
            f"naive_bayes_weight={asked} is set to 0: imported IR3DE-AXL experts hold moments (A_n, b_n) only, and "
            "the naive-Bayes term needs each expert's token counts, so it would add nothing. To use it, give the "
            "experts their counts again (router.update_expert(name, texts=...) or histogram=...), then set "
            "router.config.naive_bayes_weight.",
            UserWarning,
            stacklevel=3,
        )
    router.config.naive_bayes_weight = 0.0


def export_reference(
    router: IR3DERouterModel, path: str | os.PathLike[str], experts: Sequence[str] | None = None
) -> Path:
    """Writes the moments ``(A_n, b_n)`` the router solves with (those of ``experts``, default all) as one AXL
    file, one entry per expert named by the expert; an AXL peer loads it unchanged and `import_reference_router`
    gives back the same head.

    The moments are the raw sums the reference code adds up, unweighted: a peer solves the head this router has with
    ``balance_experts=False`` (import with ``balance_experts=True`` to get back a balanced router's head)."""
    names = list(experts) if experts else router.expert_names
    unknown = [name for name in names if name not in router.expert_names]
    if unknown or len(set(names)) != len(names):
        raise ValueError(
            f"Experts {names} must be distinct experts of the router ({', '.join(router.expert_names) or 'none'})."
        )
    embedder = router.config.encoder
    if embedder is None:
        raise ValueError(
            "The router names no encoder (it was built from an embedding table in code), so AXL peers could not "
            "load its embedder; build it with IR3DERouterModel.from_encoder(hub_id_or_path) or encoder_id=."
        )
    specs = {spec.name: spec for spec in router.config.expert_specs}
    if router.config.naive_bayes_weight:
        warnings.warn(
            f"The router routes with naive_bayes_weight={router.config.naive_bayes_weight}, but an AXL file holds "
            "moments only: AXL peers and import_reference_router route without the naive-Bayes term, so their "
            "decisions can differ from this router's (compare with router.config.naive_bayes_weight = 0).",
            UserWarning,
            stacklevel=2,
        )
    return write_axl_file(
        path,
        names,
        [router.store.moments(name) for name in names],
        tokenizer=embedder,
        embedder=embedder,
        includes_padding=any(bool(specs[name].includes_padding) for name in names),
    )


def _encoder(
    statistics: ReferenceStatistics,
    encoder: str | os.PathLike[str] | PreTrainedModel | nn.Embedding | None,
    encoder_id: str | None,
) -> tuple[str | os.PathLike[str] | PreTrainedModel | nn.Embedding, str | None, str | None]:
    """The encoder to read, the Hub id to record, and what ties it to the files' ``embedder``: ``"named"`` (it is
    that Hub id, that HF-cache snapshot or that very folder), ``"asserted"`` (``encoder_id=`` says so) or None
    (nothing yet: `_check_table` decides). Anything that names another model is refused here."""
    embedder = statistics.embedder
    if encoder is None:
        if embedder is None:
            raise ValueError(
                f"{statistics.files[0]!r} names no embedder: pass encoder= (the model the moments were summed over)."
            )
        if isinstance(local_path_or_hub_id(embedder), Path):
            raise ValueError(
                f"{statistics.files[0]!r} names its embedder by the local path {embedder!r}, not by a Hub id: a "
                "statistics file never chooses which local folder is read. Pass encoder= (--encoder) yourself: that "
                "folder, or a copy of the embedder with encoder_id= (--encoder-id)."
            )
        return embedder, embedder, "named"
    if embedder is None:
        return encoder, encoder_id, None
    if encoder_id is not None and encoder_id != embedder:
        raise _other_embedder(embedder, repr(encoder_id))
    identity, how = _identity(encoder)
    if isinstance(identity, str) and identity != embedder:
        raise _other_embedder(embedder, f"{identity!r} ({how})")
    named = local_path_or_hub_id(embedder)
    if identity == embedder or (isinstance(identity, Path) and isinstance(named, Path) and _same(identity, named)):
        return encoder, embedder, "named"
    return encoder, embedder, "asserted" if encoder_id is not None else None


def _identity(encoder: str | os.PathLike[str] | PreTrainedModel | nn.Embedding) -> tuple[Path | str | None, str]:
    """What ``encoder`` says it is, and how it says so: a Hub id (given as one, the repository of an HF-cache
    snapshot folder, or a loaded model's ``name_or_path``), a local folder, or None (a bare table)."""
    if isinstance(encoder, PreTrainedModel):
        name = encoder.config.name_or_path
        located = local_path_or_hub_id(name) if name else None
        how = "the model's config.name_or_path"
    elif isinstance(encoder, str | os.PathLike):
        located, how = local_path_or_hub_id(encoder), "the encoder given"
    else:
        return None, "a bare embedding table"
    if isinstance(located, Path):
        repo = _snapshot_repo(located)
        if repo is not None:
            return repo, f"{os.fspath(located)!r} is a snapshot of it in the HF cache"
    return located, how


def _snapshot_repo(folder: Path) -> str | None:
    """The Hub id of an HF-cache snapshot folder (``.../models--org--name/snapshots/<commit>``), else None."""
    parts = folder.expanduser().resolve().parts
    for index, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[index + 1] == "snapshots":
            return part.removeprefix("models--").replace("--", "/")
    return None


def _same(first: Path, second: Path) -> bool:
    return first.exists() and second.exists() and first.resolve() == second.resolve()


def _check_table(statistics: ReferenceStatistics, encoder: object, table: torch.Tensor, tie: str | None) -> None:
    """Compares the encoder's table with the files' embedder's, when the latter is on this machine (a local folder, or
    a Hub id in the HF cache: nothing is downloaded), unless the encoder already is that embedder by name. Without
    that table, only ``encoder_id=`` confirms that a folder is a copy of the embedder."""
    embedder = statistics.embedder
    if embedder is None or tie == "named":
        return
    label = _label(encoder)
    reference, where = _local_embeddings(embedder)
    if reference is not None:
        if tuple(reference.shape) != tuple(table.shape) or not torch.equal(reference, table.to(reference)):
            raise ValueError(
                f"The encoder {label} is not a copy of {embedder!r}, the embedder the statistics were summed over: "
                f"its embedding table {embedding_fingerprint(table)[7:19]}… {tuple(table.shape)} differs from "
                f"{where} ({embedding_fingerprint(reference)[7:19]}… {tuple(reference.shape)}). Pass "
                f"encoder={embedder!r} or an exact copy of it."
            )
        return
    if tie is None:
        raise ValueError(
            f"Cannot tell whether the encoder {label} is a copy of {embedder!r}, the embedder the statistics were "
            f"summed over: it names no Hub id, and {embedder!r} is not on this machine to compare tables with. "
            f"Pass encoder_id={embedder!r} (--encoder-id) to confirm it is (the router records that id), or "
            f"encoder={embedder!r}."
        )


def _local_embeddings(embedder: str) -> tuple[torch.Tensor | None, str]:
    """The embedder's table when it is on this machine without a download, and where it was found."""
    located = local_path_or_hub_id(embedder)
    if isinstance(located, Path):
        folder, where = (located if located.is_dir() else None), f"the folder {embedder!r}"
    else:
        found = try_to_load_from_cache(embedder, "config.json")
        folder, where = (Path(found).parent if isinstance(found, str) else None), f"{embedder!r} in the HF cache"
    if folder is None:
        return None, where
    try:
        return read_input_embeddings(folder), where
    except (OSError, ValueError):  # a shard not downloaded, no safetensors: nothing to compare with
        return None, where


def _label(encoder: object) -> str:
    if isinstance(encoder, str | os.PathLike):
        return repr(os.fspath(encoder))
    if isinstance(encoder, PreTrainedModel):
        return f"model {encoder.config.name_or_path or type(encoder).__name__!r}"
    return f"({type(encoder).__name__})"


def _other_embedder(embedder: str, other: str) -> ValueError:
    return ValueError(
        f"The statistics were summed over the embeddings of {embedder!r}, not {other}: moments are only valid "
        f"with their own embedder. Pass encoder={embedder!r} (or a local copy of it)."
    )


def _hub_files(repo_id: str, include: str, revision: str | None) -> list[str]:
    where = f"Statistics repository {repo_id!r}" + (f" at revision {revision}" if revision else "")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=[include, f"**/{include}"]))
    except LocalEntryNotFoundError as error:
        raise ValueError(
            f"{where} is not in the HF cache and the Hub cannot be reached: pre-download it where the Hub is "
            f"reachable (`hf download {repo_id}`), or pass the local files."
        ) from error
    except (HfHubHTTPError, HFValidationError) as error:
        raise ValueError(f"{where} could not be fetched: {str(error).splitlines()[0]}") from error
    return sorted(str(path) for path in folder.rglob(include) if path.is_file())
