# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""One file of a Hub repository (through the HF cache), with errors that say which repository failed and why."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

__all__ = ["hub_file"]


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
            f"{where} has no {filename} in the HF cache and the Hub cannot be reached; download it while online or "
            "pass a local directory."
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
