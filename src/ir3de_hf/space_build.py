# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""A self-contained Hugging Face Space folder for a router: ``ir3de space build`` and ``ir3de space push``.

The folder is what a Space repository holds, and nothing on the building machine is referenced from it::

    README.md           the Space card: the YAML header (sdk, sdk_version, app_file, models, ...) and the app's docs
    app.py              a launcher: IR3DE_ROUTER defaults to router/ next to it, then ir3de_space/app.py runs
    ir3de_space/*.py    the Space app of this package (space_app/ of the repository), copied unchanged
    router/             router.save_pretrained(): statistics, embedding table, tokenizer, local experts copied in
    requirements.txt    torch, ir3de_hf (a wheel in wheels/, named by relative path, or a git URL), gradio, pandas
    wheels/             the ir3de_hf wheel, when it is vendored

The app is copied, not generated, and the launcher only sets its router: the Space runs exactly the app that
``ir3de demo`` runs. Base models of adapters are recorded by Hub id, so a real Space downloads them from the Hub.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement

from ._resources import resource_path
from .hub._locations import hub_id, upload_folder

__all__ = ["LAUNCHER", "build_space", "push_space", "space_models"]

APP_PACKAGE = "ir3de_space"  # folder of the copied app inside the Space
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")  # RFC 3986: no space, quote or newline
_URL_SCHEMES = ("https", "http", "ssh")  # what a Space's pip can reach (git+ is taken off first)
TORCH_REQUIREMENT = "torch==2.13.0"  # the version the package is tested with; a Space's CPU image installs it as is
LAUNCHER = f'''"""Runs the IR3DE Space app ({APP_PACKAGE}/app.py) on the router saved next to this file (router/).

Set IR3DE_ROUTER (a Hub id or a local directory) in the Space's variables to serve another router.
"""

import os
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("IR3DE_ROUTER", str(HERE / "router"))
sys.path.insert(0, str(HERE / "{APP_PACKAGE}"))  # the app imports its sibling modules
runpy.run_path(str(HERE / "{APP_PACKAGE}" / "app.py"), run_name="__main__")
'''


def build_space(
    out: str | Path,
    router: Any,
    *,
    package: str | None = None,
    wheel: str | Path | None = None,
    datasets: Iterable[str] = (),
) -> Path:
    """Writes the Space folder ``out`` for ``router`` (see the module docstring for its layout).

    Args:
        out: a missing or empty directory; refused otherwise, so a rebuild never mixes two Spaces.
        router: the `IR3DERouterModel` to serve (saved into ``out/router``).
        package: a pip URL of ir3de_hf (``git+https://...`` or a wheel's ``https://`` URL) for ``requirements.txt``
            instead of a vendored wheel; refused unless it is a remote URL that makes one PEP 508 requirement.
        wheel: an ir3de_hf wheel to vendor (refused unless it is a zip archive with a ``.dist-info/METADATA``).
            Without it (and without ``package``) the wheel is built from the checkout this module runs from; an
            installed package has no checkout and needs one of the two.
        datasets: Hub ids of datasets the Space uses, listed in the card's ``datasets:`` (each a valid repo id).

    Returns:
        ``out`` as a `Path`.
    """
    if package is not None and wheel is not None:
        raise ValueError("give --package or --wheel, not both")
    datasets = [_checked_dataset(dataset) for dataset in datasets]  # checked before anything is written
    install = _package_requirement(package) if package is not None else None
    if wheel is not None:
        _check_wheel(Path(wheel))
    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} is not an empty directory; build the Space into a new one")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed at the end: a failed build leaves no half-written Space behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would follow the folder
    try:
        _write_space(staging, router, install, wheel, datasets)
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_space(
    folder: Path, router: Any, install: str | None, wheel: str | Path | None, datasets: list[str]
) -> None:
    # the [space] extra: the app needs gradio, peft (its adapter experts) and datasets (the benchmark tab)
    install = install or f"{_vendor_wheel(folder / 'wheels', wheel)}[space]"
    _copy_app(folder / APP_PACKAGE)
    (folder / "app.py").write_text(LAUNCHER)
    (folder / "requirements.txt").write_text("\n".join(requirements(install)) + "\n")
    (folder / "README.md").write_text(space_card(space_models(router), datasets))
    router.save_pretrained(folder / "router")


def requirements(install: str) -> list[str]:
    """The lines of ``requirements.txt``: torch first (pinned, so pip never picks another build), the package, then
    what the app imports beyond it (gradio at the version it was built with, as in the card's ``sdk_version``)."""
    return [TORCH_REQUIREMENT, install, f"gradio=={_gradio_version()}", "pandas>=2"]


def space_models(router: Any) -> list[str]:
    """Hub ids of the models the router uses: its encoder, its experts and their base models (local paths are not
    linked: the Space carries those experts in ``router/experts``)."""
    names = [router.config.encoder]
    for spec in router.config.expert_specs:
        names += [spec.source, spec.base_model]
    return list(dict.fromkeys(model for model in map(hub_id, names) if model))


def space_card(models: list[str], datasets: list[str]) -> str:
    """The Space's ``README.md``: the header and body of the app's own card, with this build's ``sdk_version``,
    ``app_file``, ``models`` and ``datasets``."""
    from huggingface_hub import RepoCard

    card = RepoCard.load(resource_path("space_app/README.md"))
    card.data.sdk_version = _gradio_version()
    card.data.app_file = "app.py"
    card.data.models = models or None
    card.data.datasets = datasets or None
    return str(card)


def push_space(folder: str | Path, repo_id: str, *, private: bool | None = None, message: str | None = None) -> Any:
    """Creates the Gradio Space ``repo_id`` if needed and uploads ``folder`` to it in one commit.

    Returns:
        The `CommitInfo` of the upload.
    """
    from huggingface_hub import HfApi

    source = Path(folder)
    missing = [name for name in ("README.md", "app.py", "requirements.txt") if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} is not a Space folder (no {', '.join(missing)}); run `ir3de space build`")
    return upload_folder(
        HfApi(),
        source,
        repo_id,
        repo_type="space",
        space_sdk="gradio",
        private=private,
        commit_message=message or "Upload the IR3DE Space (ir3de space build)",
    )


def _copy_app(target: Path) -> None:
    """The app's modules only: the demo experts it finds through the package are not the served router's."""
    target.mkdir()
    for module in sorted(resource_path("space_app").glob("*.py")):
        shutil.copy2(module, target / module.name)


def _vendor_wheel(target: Path, wheel: str | Path | None) -> str:
    """Copies (or builds) the ir3de_hf wheel into ``target``; returns its requirement line, relative to the Space."""
    target.mkdir()
    if wheel is not None:
        source = Path(wheel)
        shutil.copy2(source, target / source.name)
    else:
        _build_wheel(target)
    (built,) = target.glob("*.whl")
    return f"./{target.name}/{built.name}"


def _build_wheel(target: Path) -> None:
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "pyproject.toml").is_file():
        raise FileNotFoundError(
            "ir3de_hf is installed, not run from a checkout, so no wheel can be built: pass --wheel PATH (an "
            "ir3de_hf wheel) or --package URL (e.g. git+https://github.com/ORG/ir3de_hf)"
        )
    command = [sys.executable, "-m", "pip", "wheel", str(checkout), "--no-deps", "--quiet", "-w", str(target)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise OSError(f"building the ir3de_hf wheel from {checkout} failed: {last}; pass --wheel or --package")


def _pip_url(package: str) -> str:
    """A pip URL: ``https://host/org/repo`` means the git repository (``git+`` added); wheel URLs are kept."""
    return package if package.startswith("git+") or package.endswith(".whl") else f"git+{package}"


def _package_requirement(package: str) -> str:
    """The ``requirements.txt`` line of ``--package``: a PEP 508 URL requirement of ir3de_hf on a remote URL (a git
    repository or a wheel), checked, since it is written as is (a newline or a marker would add lines or conditions
    to the Space's requirements, and a local path or file: URL names the building machine)."""
    hint = (
        "give the pip URL of ir3de_hf, like git+https://github.com/ORG/ir3de_hf or "
        "https://HOST/ir3de_hf-VERSION-py3-none-any.whl (for a wheel on this machine, use --wheel PATH)"
    )
    if not _URL_CHARACTERS.fullmatch(package):
        raise ValueError(
            f"--package {package!r} is not a pip URL (it is empty or holds whitespace or a character a URL cannot "
            f"hold); {hint}"
        )
    url = _pip_url(package)
    line = f"ir3de_hf[space] @ {url}"
    try:
        requirement = Requirement(line)
    except InvalidRequirement as error:
        reason = str(error).splitlines()[0]
        raise ValueError(f"--package {package!r} is not a valid requirement URL ({reason}); {hint}") from error
    parts = urlsplit(url.removeprefix("git+"))
    if (
        requirement.url != url
        or requirement.marker is not None
        or parts.scheme not in _URL_SCHEMES
        or not parts.netloc
    ):
        raise ValueError(f"--package {package!r} is not a remote URL; {hint}")
    return line


def _checked_dataset(dataset: str) -> str:
    """A ``--dataset`` for the card's ``datasets:`` list, which holds Hub dataset ids (``org/name``) only."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(dataset)
    except (HFValidationError, TypeError) as error:
        raise ValueError(
            f"--dataset {dataset!r} is not a Hub dataset id: give NAME or ORG/NAME (letters, digits, '-', '_' and "
            "'.', at most 96 characters), like me/ir3de-multidomain; the card's datasets: list links Hub datasets only"
        ) from error
    return dataset


def _check_wheel(wheel: Path) -> None:
    """``--wheel`` must be a wheel: a ``.whl`` zip archive with a ``NAME-VERSION.dist-info/METADATA``, else pip
    fails on the Space, long after the build said it was done."""
    if not wheel.is_file() or wheel.suffix != ".whl":
        raise FileNotFoundError(f"--wheel {wheel}: no such wheel file")
    hint = "build one with `pip wheel . --no-deps -w dist/` and pass dist/ir3de_hf-*.whl"
    if not zipfile.is_zipfile(wheel):
        raise ValueError(f"--wheel {wheel} is not a wheel: it is not a zip archive; {hint}")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    if not any(re.fullmatch(r"[^/]+\.dist-info/METADATA", name) for name in names):
        raise ValueError(f"--wheel {wheel} is not a wheel: it has no NAME-VERSION.dist-info/METADATA; {hint}")


def _gradio_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gradio")
    except PackageNotFoundError as error:
        raise OSError("gradio is not installed: pip install 'ir3de_hf[space]'") from error
