# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Hub round trips: push and pull routers, publish expert statistics.

transformers' own ``push_to_hub`` replaces the ``README.md`` that ``save_pretrained`` wrote with a generic card, so
routers are pushed here instead: ``create_repo(exist_ok=True)``, ``save_pretrained`` into a scratch directory (card
included), then one ``upload_folder`` commit. Loading is ``IR3DERouterModel.from_pretrained(repo_id, revision=...)``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import CommitInfo, HfApi, snapshot_download

from ._hub_files import hub_file
from .cards import CardInfo, hub_id

if TYPE_CHECKING:
    from .modeling_ir3de import IR3DERouterModel
    from .shared_statistics import ExpertStatistics

__all__ = ["pull_router", "push_router", "push_statistics_to_hub"]


def push_router(
    router: IR3DERouterModel | str | os.PathLike[str],
    repo_id: str,
    *,
    revision: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    create_pr: bool = False,
    encoder_by_reference: bool = False,
    card: CardInfo | None = None,
) -> CommitInfo:
    """Pushes a router (a loaded one, or the directory of a saved one) to ``repo_id`` in a single commit.

    Args:
        router: an `IR3DERouterModel`, or a path that `IR3DERouterModel.from_pretrained` loads.
        repo_id: ``"org/name"``; the repository is created if needed.
        revision: the branch to commit to (it must exist; default ``main``).
        encoder_by_reference: leave the embedding table out; the encoder must then be a Hub id (a local path means
            nothing to others), and its revision is pinned to the current commit when the router does not pin one.
        card: extra card content (evaluation report, datasets, license, tags); ``repo_id`` is filled in.

    Returns:
        The `CommitInfo`; ``commit.oid`` is the revision that loads exactly this push.
    """
    from .modeling_ir3de import IR3DERouterModel

    if not isinstance(router, IR3DERouterModel):
        router = IR3DERouterModel.from_pretrained(router)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    pinned = router.config.encoder_revision
    if encoder_by_reference:
        encoder = router.config.encoder
        if hub_id(encoder) is None:
            raise ValueError(
                f"encoder_by_reference=True needs the encoder to be a Hub id, but it is {encoder!r}: others could not "
                "load it. Set router.config.encoder to the encoder's Hub id (and encoder_revision), or push the "
                "router self-contained."
            )
        pinned = pinned or api.model_info(encoder).sha  # type: ignore[arg-type]
    card = replace(card or CardInfo(), repo_id=repo_id)
    saved_revision = router.config.encoder_revision
    router.config.encoder_revision = pinned
    try:
        with tempfile.TemporaryDirectory(prefix="ir3de-push-") as staging:
            router.save_pretrained(staging, encoder_by_reference=encoder_by_reference, card=card)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                revision=revision,
                commit_message=commit_message or f"Upload IR3DE router ({router.num_experts} experts)",
                commit_description=commit_description,
                create_pr=create_pr,
            )
    finally:
        router.config.encoder_revision = saved_revision


def pull_router(
    repo_id: str,
    local_dir: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
) -> Path:
    """Downloads a router repository (into ``local_dir``, or the HF cache) and returns its directory, after checking
    that it is an IR3DE router. ``IR3DERouterModel.from_pretrained`` on the result loads it offline (a router pushed by
    reference still needs its encoder, which is fetched at load time)."""
    where = f"Router {repo_id!r} (revision {revision or 'main'})"
    config_file = hub_file(repo_id, "config.json", revision, where=where, token=token)
    assert config_file is not None
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "ir3de":
        raise ValueError(
            f"{repo_id} is not an IR3DE router: its config.json has model_type {config.get('model_type')!r}, expected "
            "'ir3de'."
        )
    target = Path(local_dir) if local_dir is not None else None
    return Path(snapshot_download(repo_id, revision=revision, local_dir=target, token=token))


def push_statistics_to_hub(
    statistics: ExpertStatistics,
    repo_id: str,
    *,
    expert: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
) -> CommitInfo:
    """Publishes one expert's statistics (``statistics.safetensors``, ``statistics.json`` and a card) to ``repo_id``.

    Get them with ``router.expert_statistics(name)``; ``expert`` (the expert model's Hub id) goes into the card's
    snippet. Others add the expert with ``router.add_expert_from_hub(repo_id, expert=...)``, without the text.
    """
    from .cards import statistics_card

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ir3de-statistics-") as staging:
        statistics.save(staging, card=False)
        statistics_card(statistics, repo_id=repo_id, expert=expert).save(Path(staging) / "README.md")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=staging,
            revision=revision,
            commit_message=commit_message or f"Upload IR3DE statistics of {statistics.name!r}",
        )
