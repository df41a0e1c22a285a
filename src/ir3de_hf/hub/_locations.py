# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Where a source lives (a local path or a Hub repository), one file of a Hub repository (through the HF cache) with
errors that say which repository failed and why, and the one-commit upload of a saved folder."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

__all__ = ["hub_file", "hub_id", "local_path_or_hub_id", "upload_folder"]


def local_path_or_hub_id(value: str | os.PathLike[str]) -> Path | str:
    """``value`` as a local `Path` when it names one, else as a Hub repository id (``"org/name"`` or ``"name"``).

    Every "local or Hub" decision of the package goes through here, so a source means the same everywhere. A string
    is local when it exists on disk, or cannot be a Hub id: it starts with ``.``, ``/`` or ``~``, holds a backslash
    (or an OS separator other than ``/``), has more than one ``/``, or fails `validate_repo_id`. A missing
    ``"org/name"`` is thus a Hub id, while a missing ``"./org/name"`` is a local path.

    Args:
        value: a path or a Hub repository id; an `os.PathLike` is always local (a `Path` is never meant as an id).

    Returns:
        The local path (``~`` expanded), or the Hub id unchanged.
    """
    if isinstance(value, os.PathLike):
        return Path(value).expanduser()
    local = Path(value).expanduser()
    separators = [separator for separator in ("\\", os.sep, os.altsep) if separator and separator != "/"]
    if (
        local.exists()
        or value.startswith((".", "/", "~"))
        or any(separator in value for separator in separators)
        or value.count("/") > 1
    ):
        return local
    try:
        validate_repo_id(value)
    except HFValidationError:
        return local
    return value


def hub_id(value: str | os.PathLike[str] | None) -> str | None:
    """``value`` when it names an ``"org/name"`` Hub repository, else None (local paths, bare names, None): cards
    link, and ``base_model`` names, only full Hub ids.

    Args:
        value: a path, a Hub repository id or None; decided by `local_path_or_hub_id`.
    """
    if value is None:
        return None
    located = local_path_or_hub_id(value)
    return located if isinstance(located, str) and located.count("/") == 1 else None


def hub_file(
    repo_id: str,
    filename: str,
    revision: str | None,
    *,
    where: str,
    missing_ok: bool = False,
    error: type[ValueError] = ValueError,
    token: str | bool | None = None,
) -> Path | None:
    """The cached path of ``filename`` in ``repo_id`` at ``revision``; ``None`` when the repository exists without
    that file and ``missing_ok``. Every failure raises ``error`` starting with ``where`` (who asked for it)."""
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, token=token))
    except LocalEntryNotFoundError as cause:  # a subclass of EntryNotFoundError: test it first
        raise error(
            f"{where} has no {filename} in the HF cache and the Hub cannot be reached{_offline()}; {_fetch(repo_id)}"
        ) from cause
    except EntryNotFoundError as cause:
        if missing_ok:
            return None
        raise error(f"{where}: the repository has no {filename}.") from cause
    except RevisionNotFoundError as cause:
        raise error(f"{where}: no such revision in the repository.") from cause
    except (RepositoryNotFoundError, HFValidationError) as cause:
        raise error(f"{where} is neither a local directory nor a Hub repository.") from cause
    except HfHubHTTPError as cause:
        raise error(f"{where} could not be fetched from the Hub: {cause}") from cause


def _offline() -> str:
    return " (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""


def _fetch(repo_id: str) -> str:
    """What to do about a Hub repository missing from the HF cache."""
    online = "set HF_HUB_OFFLINE=0 to download it" if constants.HF_HUB_OFFLINE else "connect to the Hub"
    return f"{online}, pre-download it where the Hub is reachable (`hf download {repo_id}`), or pass a local folder."


def upload_folder(
    api: HfApi,
    folder: Path,
    repo_id: str,
    *,
    commit_message: str,
    commit_description: str | None = None,
    revision: str | None = None,
    private: bool | None = None,
    create_pr: bool = False,
    repo_type: str | None = None,
    space_sdk: str | None = None,
) -> CommitInfo:
    """Creates ``repo_id`` if needed and uploads ``folder`` to it in one commit. Knows nothing of what is uploaded:
    routers, statistics, recipe outputs and Spaces all push through here, each saved complete before the upload.

    Returns:
        The `CommitInfo`; ``commit.oid`` is the revision that holds exactly this upload.
    """
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type, space_sdk=space_sdk)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        revision=revision,
        commit_message=commit_message,
        commit_description=commit_description,
        create_pr=create_pr,
        repo_type=repo_type,
    )
