# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Where a recipe's inputs come from and where its outputs go: a local folder or a Hub snapshot in, one commit per
converted folder out (through `ir3de_hf.hub._locations.upload_folder`, as every push of the package)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

from ..hub._locations import local_path_or_hub_id, upload_folder

__all__ = ["local_folder", "push_folders"]


def local_folder(source: str, revision: str | None, repo_type: str | None, patterns: list[str]) -> Path:
    """``source`` as a local folder: itself, or the snapshot of that Hub repository (only the files matching
    ``patterns``) through the HF cache, which also serves it offline once downloaded."""
    located = local_path_or_hub_id(source)
    if isinstance(located, Path):
        if not located.is_dir():
            raise ValueError(f"{source!r} is not a folder (nor a Hub repository id).")
        return located
    try:
        return Path(snapshot_download(located, revision=revision, repo_type=repo_type, allow_patterns=patterns))
    except LocalEntryNotFoundError as error:
        raise ValueError(f"{source!r} is not in the HF cache and the Hub cannot be reached.") from error
    except (HfHubHTTPError, HFValidationError) as error:
        raise ValueError(f"{source!r} could not be downloaded from the Hub: {error}") from error


def push_folders(folders: Mapping[str, Path], repos: Mapping[str, str], messages: Sequence[str]) -> dict[str, str]:
    """Pushes each folder to its repository (created if needed) in one commit; returns the commit per name. The token
    is the one of ``hf auth login`` or ``HF_TOKEN``."""
    api, commits = HfApi(), {}
    for (name, folder), message in zip(folders.items(), messages, strict=True):
        commit = upload_folder(api, folder, repos[name], commit_message=message)
        commits[name] = commit.oid
        print(f"pushed {name} to {repos[name]} at {commit.oid}")
    return commits
