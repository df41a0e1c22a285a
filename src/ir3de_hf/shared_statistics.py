# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Shareable expert statistics: what a domain owner publishes instead of its text.

An expert's IR3DE statistics are its token histogram (or, for statistics computed elsewhere, its moments
``(A_n, b_n)``). Saved as ``statistics.safetensors`` plus ``statistics.json`` (token count, tokenizer fingerprint,
encoder), they let anyone add the expert to a router with the same tokenizer, and they reveal token frequencies only.
Nothing is unpickled: safetensors and JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .encoder import embedding_fingerprint
from .hub._atomic import atomic_directory
from .hub._locations import hub_file, local_path_or_hub_id
from .statistics import augmented_moments

if TYPE_CHECKING:
    from .modeling_ir3de import IR3DERouterModel

__all__ = ["STATISTICS_FILE", "ExpertStatistics", "StatisticsError", "check_compatible"]

STATISTICS_FILE = "statistics.safetensors"
METADATA_FILE = "statistics.json"
_FORMAT = "ir3de-expert-statistics"
_VERSION = 1


class StatisticsError(ValueError):
    """Shared statistics that cannot be used: malformed, or from another tokenizer or encoder."""


@dataclass
class ExpertStatistics:
    """One expert's statistics: a token ``histogram`` (int64, length V) or ``moments`` ``(A_n, b_n)`` (float64).

    ``tokenizer_fingerprint`` ties them to a vocabulary; ``encoder_fingerprint`` (moments only) to the exact
    embedding table, since ``A_n`` and ``b_n`` are sums over its rows while a histogram does not depend on it.
    ``includes_padding`` marks moments that counted padding and BOS/EOS rows (imported IR3DE-AXL statistics).
    """

    name: str
    tokenizer_fingerprint: str
    vocab_size: int
    histogram: torch.Tensor | None = None
    moments: tuple[torch.Tensor, torch.Tensor] | None = None
    encoder: str | None = None
    encoder_revision: str | None = None
    encoder_fingerprint: str | None = None
    description: str | None = None
    includes_padding: bool = False

    def __post_init__(self) -> None:
        if (self.histogram is None) == (self.moments is None):
            raise StatisticsError(f"Statistics {self.name!r}: give exactly one of histogram= or moments=.")
        if not isinstance(self.tokenizer_fingerprint, str) or not self.tokenizer_fingerprint:
            raise StatisticsError(
                f"Statistics {self.name!r} have no tokenizer fingerprint; without it nobody can tell which tokenizer "
                "the token ids belong to."
            )
        if self.histogram is not None:
            counts = self.histogram
            if counts.dtype != torch.int64 or counts.shape != (self.vocab_size,) or bool((counts < 0).any()):
                raise StatisticsError(
                    f"Statistics {self.name!r}: the histogram must be {self.vocab_size} non-negative int64 counts "
                    f"(the vocabulary size), got dtype {counts.dtype} and shape {tuple(counts.shape)}."
                )
        else:
            a, b = self.moments  # type: ignore[misc]
            width = b.shape[0] if b.ndim == 1 else -1
            if a.dtype != torch.float64 or b.dtype != torch.float64 or a.shape != (width, width):
                raise StatisticsError(
                    f"Statistics {self.name!r}: moments must be float64 A_n (d+1, d+1) and b_n (d+1,), got "
                    f"{a.dtype} {tuple(a.shape)} and {b.dtype} {tuple(b.shape)}."
                )
            if self.encoder_fingerprint is None:
                raise StatisticsError(
                    f"Statistics {self.name!r}: moments need the encoder fingerprint of the embedding table they "
                    "were computed with."
                )

    @property
    def kind(self) -> str:
        return "histogram" if self.histogram is not None else "moments"

    @property
    def token_count(self) -> int:
        """Number of tokens counted (for moments, the bias entry of ``b_n``)."""
        if self.histogram is not None:
            return int(self.histogram.sum())
        return round(float(self.moments[1][-1]))  # type: ignore[index]

    @classmethod
    def from_router(cls, router: IR3DERouterModel, name: str, description: str | None = None) -> ExpertStatistics:
        """The statistics of expert ``name`` of ``router``, ready to save or push."""
        if name not in router.expert_names:
            known = ", ".join(router.expert_names) or "none"
            raise StatisticsError(f"No expert named {name!r}; the router's experts are: {known}.")
        spec = router.config.expert_specs[router.expert_names.index(name)]
        if router.config.tokenizer_fingerprint is None:
            raise StatisticsError(
                "The router has no tokenizer fingerprint (it was built without a tokenizer), so its statistics "
                "cannot be matched to a vocabulary; build it with IR3DERouterModel.from_encoder(..., tokenizer=...)."
            )
        common: dict[str, Any] = {
            "name": name,
            "tokenizer_fingerprint": router.config.tokenizer_fingerprint,
            "vocab_size": router.config.vocab_size,
            "encoder": router.config.encoder,
            "encoder_revision": router.config.encoder_revision,
            "description": description if description is not None else spec.description,
            "includes_padding": bool(spec.includes_padding),
        }
        imported = router.store.imported_moments(name)
        if imported is None:
            return cls(histogram=router.store.histogram(name).detach().cpu().clone(), **common)  # type: ignore[union-attr]
        fingerprint = embedding_fingerprint(router.embed_tokens.weight)
        moments = (imported[0].detach().cpu().clone(), imported[1].detach().cpu().clone())
        return cls(moments=moments, encoder_fingerprint=fingerprint, **common)

    # ------------------------------------------------------------------ files

    def metadata(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "format_version": _VERSION,
            "name": self.name,
            "kind": self.kind,
            "token_count": self.token_count,
            "vocab_size": self.vocab_size,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "encoder": self.encoder,
            "encoder_revision": self.encoder_revision,
            "encoder_fingerprint": self.encoder_fingerprint,
            "description": self.description,
            "includes_padding": self.includes_padding,
        }

    def save(self, directory: str | os.PathLike[str], card: bool = True) -> Path:
        """Writes ``statistics.safetensors``, ``statistics.json`` and (with ``card``) a ``README.md``, atomically."""
        from .model_card import statistics_card

        with atomic_directory(directory) as staging:
            if self.histogram is not None:
                tensors = {"histogram": self.histogram.contiguous()}
            else:
                a, b = self.moments  # type: ignore[misc]
                tensors = {"moments_a": a.contiguous(), "moments_b": b.contiguous()}
            save_file(tensors, staging / STATISTICS_FILE, metadata={"format": _FORMAT})
            (staging / METADATA_FILE).write_text(json.dumps(self.metadata(), indent=2, sort_keys=True) + "\n")
            if card:
                statistics_card(self).save(staging / "README.md")
        return Path(directory)

    def save_reference(self, path: str | os.PathLike[str], embeddings: torch.Tensor | None = None) -> Path:
        """Writes these statistics as an IR3DE-AXL file (one entry, tagged with the name) that an AXL peer loads
        unchanged. A histogram becomes moments over ``embeddings`` (the encoder's V x d table, required then);
        the file names ``encoder`` as its tokenizer and embedder."""
        from ._axl_format import write_axl_file

        if self.encoder is None:
            raise StatisticsError(
                f"Statistics {self.name!r} name no encoder, which an AXL file must name as its embedder."
            )
        if self.moments is not None:
            moments = self.moments
        elif embeddings is None or tuple(embeddings.shape[:1]) != (self.vocab_size,) or embeddings.ndim != 2:
            raise StatisticsError(
                f"Statistics {self.name!r} are a histogram: pass embeddings=, the encoder's embedding table "
                f"({self.vocab_size} x d), to turn them into the moments an AXL file holds."
            )
        else:
            a, b = augmented_moments(embeddings, self.histogram[None])  # type: ignore[index]
            moments = (a, b[:, 0])
        return write_axl_file(
            path,
            [self.name],
            [moments],
            tokenizer=self.encoder,
            embedder=self.encoder,
            includes_padding=self.includes_padding,
        )

    @classmethod
    def load(cls, path_or_repo_id: str | os.PathLike[str], revision: str | None = None) -> ExpertStatistics:
        """Reads statistics from a local directory or a Hub repository (at ``revision``); any inconsistency between
        the tensors and ``statistics.json`` is a `StatisticsError`."""
        directory = _locate(str(path_or_repo_id), revision)
        where = f"{path_or_repo_id}" + (f" (revision {revision})" if revision else "")
        try:
            metadata = json.loads((directory / METADATA_FILE).read_text())
            tensors = load_file(directory / STATISTICS_FILE)
        except (OSError, ValueError, SafetensorError) as error:
            raise StatisticsError(
                f"{where}: its {METADATA_FILE} or {STATISTICS_FILE} is missing, unreadable or truncated ({error}); "
                "save or push the expert's statistics again."
            ) from error
        if not isinstance(metadata, dict) or metadata.get("format") != _FORMAT:
            raise StatisticsError(f"{where}: {METADATA_FILE} is not an ir3de_hf statistics file.")
        if metadata.get("format_version", 0) > _VERSION:
            raise StatisticsError(
                f"{where}: statistics format {metadata['format_version']} is newer; upgrade ir3de_hf."
            )
        expected = {"histogram": {"histogram"}, "moments": {"moments_a", "moments_b"}}.get(str(metadata.get("kind")))
        if expected is None or set(tensors) != expected:
            raise StatisticsError(
                f"{where}: kind {metadata.get('kind')!r} with tensors {sorted(tensors)} is inconsistent; expected "
                "'histogram' with ['histogram'] or 'moments' with ['moments_a', 'moments_b']."
            )
        fields = {key: metadata.get(key) for key in ("encoder", "encoder_revision", "encoder_fingerprint")}
        try:
            statistics = cls(
                name=metadata["name"],
                tokenizer_fingerprint=metadata.get("tokenizer_fingerprint"),  # type: ignore[arg-type]
                vocab_size=int(metadata["vocab_size"]),
                histogram=tensors.get("histogram"),
                moments=(tensors["moments_a"], tensors["moments_b"]) if "moments_a" in tensors else None,
                description=metadata.get("description"),
                includes_padding=bool(metadata.get("includes_padding", False)),
                **fields,
            )
        except (KeyError, TypeError) as error:
            raise StatisticsError(f"{where}: {METADATA_FILE} lacks field {error}.") from error
        except StatisticsError as error:
            raise StatisticsError(f"{where}: {error}") from error
        if statistics.token_count != metadata.get("token_count"):
            raise StatisticsError(
                f"{where}: the tensors hold {statistics.token_count} tokens but {METADATA_FILE} says "
                f"{metadata.get('token_count')}; the files do not belong together."
            )
        return statistics


def check_compatible(statistics: ExpertStatistics, router: IR3DERouterModel, where: str) -> None:
    """Raises a `StatisticsError` unless ``statistics`` were counted with ``router``'s tokenizer (and, for moments,
    computed with its exact embedding table)."""
    mine = router.config.tokenizer_fingerprint
    if mine is None:
        raise StatisticsError(
            "This router has no tokenizer fingerprint, so shared statistics cannot be checked against it; build it "
            "with IR3DERouterModel.from_encoder(..., tokenizer=...)."
        )
    if statistics.tokenizer_fingerprint != mine or statistics.vocab_size != router.config.vocab_size:
        raise StatisticsError(
            f"{where}: statistics {statistics.name!r} were counted with another tokenizer (vocabulary fingerprint "
            f"{statistics.tokenizer_fingerprint[:19]}…, {statistics.vocab_size} ids) than this router's "
            f"({mine[:19]}…, {router.config.vocab_size} ids); their token ids mean different tokens here."
        )
    if statistics.moments is not None:
        table = embedding_fingerprint(router.embed_tokens.weight)
        if statistics.encoder_fingerprint != table:
            raise StatisticsError(
                f"{where}: moments {statistics.name!r} were computed with another embedding table (encoder "
                f"{statistics.encoder!r}, fingerprint {str(statistics.encoder_fingerprint)[:19]}…) than this "
                f"router's ({table[:19]}…); moments are only valid with the exact encoder they were summed over."
            )


def _locate(path_or_repo_id: str, revision: str | None) -> Path:
    located = local_path_or_hub_id(path_or_repo_id)
    if isinstance(located, Path):
        if not located.is_dir():
            raise StatisticsError(f"Statistics {path_or_repo_id!r}: no such directory.")
        return located
    where = f"Statistics {path_or_repo_id!r} (revision {revision or 'main'})"
    hub_file(located, METADATA_FILE, revision, where=where, error=StatisticsError)
    found = hub_file(located, STATISTICS_FILE, revision, where=where, error=StatisticsError)
    assert found is not None
    return found.parent
