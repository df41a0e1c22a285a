"""Encoders are read embedding-only: the input-embedding tensor from the one safetensors file that holds it, never the
causal LM (an 8B encoder would need 32 GB in float32)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import save_file

from ir3de_hf import IR3DERouterModel
from ir3de_hf._embedding_file import read_input_embeddings


@pytest.fixture
def sharded_dir(_tiny_llama, _word_tokenizer, tmp_path) -> Path:
    """The tiny Llama saved in several shards, with every shard but the embedding's overwritten by garbage."""
    directory = tmp_path / "sharded"
    _tiny_llama.save_pretrained(directory, max_shard_size="100KB")
    _word_tokenizer.save_pretrained(directory)
    weight_map = json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]
    holder = weight_map["model.embed_tokens.weight"]
    others = sorted(set(weight_map.values()) - {holder})
    assert len(others) >= 2
    for shard in others:
        (directory / shard).write_bytes(b"\x00garbage" * 100)
    return directory


def test_a_sharded_checkpoint_with_corrupt_other_shards_yields_the_embedding(sharded_dir, _tiny_llama):
    expected = _tiny_llama.get_input_embeddings().weight.detach()
    assert torch.equal(read_input_embeddings(sharded_dir), expected)
    router = IR3DERouterModel.from_encoder(sharded_dir, aggregation="mean")
    assert torch.equal(router.embed_tokens.weight, expected)
    assert router.config.encoder == str(sharded_dir) and router.tokenizer is not None
    router.add_expert("code", texts=["def main(): return 0"])
    router.add_expert("prose", texts=["the cat sat on the mat"])
    assert router.route(["def main(): return 0"]).expert_names == ["code"]


def test_a_hub_encoder_downloads_config_index_and_one_shard(sharded_dir, _tiny_llama, hub):
    api = HfApi()
    api.create_repo("org/sharded-llama")
    api.upload_folder(repo_id="org/sharded-llama", folder_path=sharded_dir)
    router = IR3DERouterModel.from_encoder("org/sharded-llama")
    assert torch.equal(router.embed_tokens.weight, _tiny_llama.get_input_embeddings().weight.detach())
    assert router.config.encoder == "org/sharded-llama"
    import huggingface_hub.constants as hub_constants

    cached = {path.name for path in Path(hub_constants.HF_HUB_CACHE).rglob("*.safetensors")}
    holder = json.loads((sharded_dir / "model.safetensors.index.json").read_text())["weight_map"]
    assert cached == {holder["model.embed_tokens.weight"]}


def test_single_file_and_tied_checkpoints(tmp_path, _tiny_llama):
    table = _tiny_llama.get_input_embeddings().weight.detach()
    config = {"vocab_size": table.shape[0], "hidden_size": table.shape[1], "tie_word_embeddings": True}
    (tmp_path / "tied").mkdir()
    (tmp_path / "tied" / "config.json").write_text(json.dumps(config))
    save_file(
        {"lm_head.weight": table.to(torch.bfloat16), "model.norm.weight": torch.ones(32)},
        tmp_path / "tied" / "model.safetensors",
    )
    loaded = read_input_embeddings(tmp_path / "tied")
    assert loaded.dtype == torch.float32 and torch.equal(loaded, table.to(torch.bfloat16).float())

    untied = tmp_path / "untied"
    untied.mkdir()
    (untied / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    save_file({"lm_head.weight": table}, untied / "model.safetensors")
    with pytest.raises(ValueError, match="has no input-embedding tensor"):
        read_input_embeddings(untied)

    (untied / "config.json").write_text(json.dumps({**config, "vocab_size": 7}))
    save_file({"model.embed_tokens.weight": table}, untied / "model.safetensors")
    with pytest.raises(ValueError, match=r"config\.json says vocab_size x hidden_size = 7 x 32"):
        read_input_embeddings(untied)


def test_a_bin_only_checkpoint_is_refused_with_how_to_convert(tmp_path, _tiny_llama):
    (tmp_path / "config.json").write_text(_tiny_llama.config.to_json_string())
    torch.save({"model.embed_tokens.weight": torch.zeros(3, 2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(
        ValueError, match=r"found only pytorch_model.bin.*save_pretrained\(new_path\) writes safetensors"
    ):
        IR3DERouterModel.from_encoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        read_input_embeddings(tmp_path / "missing")


_PEAK = """
import json, os, sys
import torch
from ir3de_hf._embedding_file import read_input_embeddings

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
before = rss("VmRSS:")
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # resets the peak (VmHWM) to the current RSS
table = read_input_embeddings(sys.argv[1])
float(table.sum())  # touch every page: a table backed by the file's mapping counts once it is read
print(json.dumps({"peak": rss("VmHWM:") - before, "table": table.numel() * 4}))
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_peak_memory_is_bounded_by_twice_the_table(tmp_path, dtype):
    rows, width = 32768, 512  # 64 MiB in float32: large enough to dominate the interpreter's own allocations
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": rows, "hidden_size": width}))
    tensors = {
        "model.embed_tokens.weight": torch.randn(rows, width).to(dtype),
        "lm_head.weight": torch.zeros(rows, width),
    }
    save_file(tensors, tmp_path / "model.safetensors")
    del tensors
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PEAK), str(tmp_path)], capture_output=True, text=True, check=True
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["peak"] <= 2.1 * measured["table"], measured
