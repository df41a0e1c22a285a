"""The Gemma 3 270M embedding entry: the table written from a GGUF, and (slow) the real entry built from the wheels.

The cheap test writes a tiny Q8_0 GGUF and checks the hand-written safetensors file against gguf's own dequantisation;
the slow one builds the real entry in a throw-away cache (seeded with the user's downloads when there are some).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from ir3de_hf import assets
from ir3de_hf.assets import ARTIFACTS, MANIFEST_NAME, AssetError, corpus_path, gemma3_embedding_path
from ir3de_hf.encoder import all_finite

GEMMA_KEYS = ("gemma3-270m", "gemma3-270m-part1", "gemma3-270m-part2", "gemma3-270m-part3", "gemma3-270m-part4")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("IR3DE_HF_CACHE", str(root))
    return root


def test_gemma_artifacts_are_models_not_corpora() -> None:
    for key in GEMMA_KEYS:
        assert ARTIFACTS[key].version == "1.0.0" and "Gemma Terms of Use" in ARTIFACTS[key].license
        with pytest.raises(KeyError, match="unknown corpus"):
            corpus_path(key)


def test_embedding_table_is_written_row_by_row_from_a_quantised_gguf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf

    vocab, hidden = 50, 64  # Q8_0 blocks are 32 wide
    table = np.random.default_rng(0).standard_normal((vocab, hidden)).astype(np.float32)
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(path, "gemma3")
    quantised = gguf.quants.quantize(table, gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("token_embd.weight", quantised, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    monkeypatch.setattr(assets, "_GEMMA3_ROWS", 7)  # several blocks, the last one short
    tensor = gguf.GGUFReader(path).tensors[0]
    out = tmp_path / "model.safetensors"
    assert assets._write_embedding_table(tensor, out, "model.embed_tokens.weight") == (vocab, hidden)
    with safe_open(out, framework="pt") as handle:
        assert list(handle.keys()) == ["model.embed_tokens.weight"]
        written = handle.get_tensor("model.embed_tokens.weight")
    expected = gguf.quants.dequantize(quantised, gguf.GGMLQuantizationType.Q8_0)
    assert written.dtype == torch.float32 and tuple(written.shape) == (vocab, hidden)
    assert torch.equal(written, torch.from_numpy(expected))
    assert torch.allclose(written, torch.from_numpy(table), atol=0.05)  # rows are tokens, in order


@pytest.mark.slow
def test_gemma3_entry_builds_routes_and_rebuilds_after_tampering(cache: Path) -> None:
    from ir3de_hf import IR3DERouterModel

    (cache / "downloads").mkdir(parents=True)
    for key in GEMMA_KEYS:  # seed from the user's cache: the pinned sha256 is still checked before use
        shared = Path.home() / ".cache" / "ir3de_hf" / "downloads" / ARTIFACTS[key].filename
        if shared.is_file():
            shutil.copyfile(shared, cache / "downloads" / shared.name)

    path = gemma3_embedding_path()
    start = time.perf_counter()
    assert gemma3_embedding_path() == path
    assert time.perf_counter() - start < 3.0, "a second call must only verify the cached entry"

    files = json.loads((path / MANIFEST_NAME).read_text())["files"]
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "NOTICE"}
    assert expected <= set(files) and "GEMMA_TERMS.html" in files
    assert not [name for name in files if name.endswith(".gguf") or name.startswith(".")], "only the table is kept"
    assert "Gemma is provided under and subject to the Gemma Terms of Use" in (path / "NOTICE").read_text()

    router = IR3DERouterModel.from_encoder(str(path))  # reads the table with read_input_embeddings
    table = router.embed_tokens.weight.detach()
    assert tuple(table.shape) == (262144, 640) and table.dtype == torch.float32
    assert all_finite(table)
    tokenizer = router.tokenizer
    assert len(tokenizer) == tokenizer.vocab_size == table.shape[0]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (2, 1, 0)
    for text in ["def main():\n    return 42", "  Hello,   world!  ", "Ünïcödé — 日本語 🙂"]:
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    # Rows are the tokens': a word's nearest rows are its variants.
    king = tokenizer.convert_tokens_to_ids("▁king")
    cosines = (table @ table[king]) / (torch.linalg.vector_norm(table, dim=1) * table[king].norm())
    nearest = cosines.topk(6).indices.tolist()
    assert nearest[0] == king and tokenizer.convert_tokens_to_ids("▁queen") in nearest

    del table
    router.add_expert("code", texts=["def add(a, b):\n    return a + b", "for i in range(10):\n    print(i)"])
    router.add_expert("medicine", texts=["The patient presented with chest pain.", "Acute myocardial infarction."])
    chosen = router.route(["while x > 0:\n    x -= 1", "Pneumonia treated with intravenous antibiotics."])
    assert chosen.expert_names == ["code", "medicine"]
    del router

    table_file = path / "model.safetensors"
    with table_file.open("r+b") as handle:  # flip one bit in place: the file is 671 MB
        handle.seek(table_file.stat().st_size // 2)
        byte = handle.read(1)[0]
        handle.seek(-1, 1)
        handle.write(bytes([byte ^ 0x01]))
    with pytest.raises(AssetError, match=r"model\.safetensors: sha256 mismatch"):
        gemma3_embedding_path()
    assert not path.exists()
    assert gemma3_embedding_path() == path  # rebuilt from the verified downloads, offline
    assert assets.sha256_file(table_file) == files["model.safetensors"]["sha256"], "the build is deterministic"
    assert not list((cache / ".tmp").iterdir()), "no scratch directory may be left behind"
