# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Hub round trips: push a router (or the directory of a saved one), pull a router, publish one expert's statistics.

Every push is one commit of a folder saved complete into a scratch directory (model2vec's shape, in
`IR3DERouterModel.push_to_hub`): the ir3de model card that ``save_pretrained`` writes, with its figures and data
files, is the one the Hub shows (transformers' own ``push_to_hub`` would replace it). Loading is
``IR3DERouterModel.from_pretrained(repo_id, revision=...)``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import CommitInfo, HfApi, snapshot_download
from typing_extensions import Unpack

from ..model_card import statistics_card
from ..modeling_ir3de import IR3DERouterModel
from ._locations import hub_file, upload_folder
from ._router_files import PushOptions

if TYPE_CHECKING:
    from ..shared_statistics import ExpertStatistics

__all__ = ["pull_router", "push_router", "push_statistics_to_hub"]


def push_router(
    router: IR3DERouterModel | str | os.PathLike[str], repo_id: str, **options: Unpack[PushOptions]
) -> CommitInfo:
    """Pushes a router, or the directory of a saved one, to ``repo_id`` in a single commit: the same as
    ``IR3DERouterModel.from_pretrained(router).push_to_hub(repo_id, **options)`` (see [`IR3DERouterModel.push_to_hub`]
    for the options). Returns the `CommitInfo`."""
    if not isinstance(router, IR3DERouterModel):
        router = IR3DERouterModel.from_pretrained(router)
    return router.push_to_hub(repo_id, **options)


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
    with tempfile.TemporaryDirectory(prefix="ir3de-upload-") as scratch:
        folder = statistics.save(Path(scratch) / "statistics", card=False)
        statistics_card(statistics, repo_id=repo_id, expert=expert).save(folder / "README.md")
        return upload_folder(
            HfApi(token=token),
            folder,
            repo_id,
            revision=revision,
            commit_message=commit_message or f"Upload IR3DE statistics of {statistics.name!r}",
            private=private,
        )
