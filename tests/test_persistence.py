"""save_pretrained / from_pretrained / AutoModel round trips, and atomic saves."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from ir3de_hf import IR3DEConfig, IR3DERouterModel


@pytest.fixture
def fitted(text_router, domain_texts, expert_dir) -> IR3DERouterModel:
    for name, texts in domain_texts.items():
        text_router.add_expert(name, texts=texts, source=str(expert_dir), description=f"{name} texts")
    text_router.config.aggregation = "majority_vote"
    return text_router


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("loader", [IR3DERouterModel.from_pretrained, AutoModel.from_pretrained])
def test_round_trip_keeps_statistics_decisions_and_tokenizer(fitted, domain_texts, tmp_path, loader):
    fitted.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    loaded = loader(tmp_path)

    assert isinstance(loaded, IR3DERouterModel)
    assert loaded.expert_names == fitted.expert_names
    for mine, saved in zip(fitted.config.expert_specs, loaded.config.expert_specs, strict=True):
        assert saved.source == str((tmp_path / "experts" / mine.name).resolve())  # copied in, found there again
        assert (mine.name, mine.description, mine.base_model) == (saved.name, saved.description, saved.base_model)
    assert loaded.config.aggregation == "majority_vote"
    assert torch.equal(loaded.expert_counts, fitted.expert_counts)
    assert torch.equal(loaded.embed_tokens.weight, fitted.embed_tokens.weight)
    assert loaded.tokenizer.get_vocab() == fitted.tokenizer.get_vocab()
    prompts = [text for texts in domain_texts.values() for text in texts[:5]]
    before, after = fitted.route(prompts), loaded.route(prompts)
    assert torch.equal(before.expert_ids, after.expert_ids)
    assert torch.equal(before.logits, after.logits)
    for weights_before, weights_after in zip(fitted.ridge_solution(), loaded.ridge_solution(), strict=True):
        assert torch.equal(weights_before, weights_after)


def test_saved_files_are_safetensors_and_json_only(fitted, tmp_path, expert_dir):
    fitted.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    assert set(tensors) == {
        "embed_tokens.weight",
        "expert_offsets",
        "expert_token_ids",
        "expert_token_counts",
        "moments_a",
        "moments_b",
    }
    assert tensors["expert_token_counts"].dtype == torch.int64 and tensors["moments_a"].dtype == torch.float64
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "ir3de" and config["architectures"] == ["IR3DERouterModel"]
    assert config["experts"][0] == {"name": "code", "source": "./experts/code", "description": "code texts"}
    assert _digest(tmp_path / "experts" / "code") == _digest(expert_dir)  # the expert folder travels with the router
    assert str(tmp_path) not in (tmp_path / "config.json").read_text() + (tmp_path / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl"}]


def test_auto_config_resolves_the_model_type(fitted, tmp_path):
    fitted.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, IR3DEConfig)
    assert config.expert_names == ["code", "legal", "docs"]


def test_interrupted_save_leaves_the_previous_save_intact(fitted, domain_texts, tmp_path, monkeypatch):
    fitted.save_pretrained(tmp_path)
    (tmp_path / "NOTES.md").write_text("user file")
    before = _digest(tmp_path)

    fitted.add_expert("extra", texts=domain_texts["code"][:3])

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fitted.tokenizer, "save_pretrained", fail)  # the weights are already written by then
    with pytest.raises(OSError, match="disk full"):
        fitted.save_pretrained(tmp_path)

    assert _digest(tmp_path) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    reloaded = IR3DERouterModel.from_pretrained(tmp_path)
    assert reloaded.expert_names == ["code", "legal", "docs"]


def test_saving_again_replaces_files_and_keeps_foreign_ones(fitted, domain_texts, tmp_path):
    fitted.save_pretrained(tmp_path)
    (tmp_path / "NOTES.md").write_text("user file")
    fitted.remove_expert("docs")
    fitted.save_pretrained(tmp_path)
    assert (tmp_path / "NOTES.md").read_text() == "user file"
    assert IR3DERouterModel.from_pretrained(tmp_path).expert_names == ["code", "legal"]


def test_router_without_experts_or_tokenizer_round_trips(tmp_path):
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding(20, 4), ridge_lambda=0.5)
    router.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert loaded.expert_names == [] and loaded.tokenizer is None
    assert loaded.expert_counts.shape == (0, 20)
    assert loaded.config.ridge_lambda == 0.5


def test_half_precision_load_keeps_the_encoder_in_float32(fitted, tmp_path):
    fitted.save_pretrained(tmp_path)
    loaded = IR3DERouterModel.from_pretrained(tmp_path, dtype=torch.bfloat16, device_map="cpu")
    assert loaded.embed_tokens.weight.dtype == torch.float32
    assert loaded.expert_counts.dtype == torch.int64
    assert torch.equal(loaded.embed_tokens.weight, fitted.embed_tokens.weight)


def test_unknown_config_fields_survive_a_round_trip(tmp_path):
    config = IR3DEConfig(vocab_size=10, hidden_size=4, project_note="kept")
    config.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).project_note == "kept"


def test_push_through_save_pretrained_is_refused_with_a_pointer(fitted, tmp_path):
    with pytest.raises(ValueError, match=r"router\.push_to_hub"):
        fitted.save_pretrained(tmp_path, push_to_hub=True)


def test_loading_parses_the_config_once_and_builds_the_store_once(fitted, tmp_path, monkeypatch):
    import ir3de_hf.modeling_ir3de as modeling

    fitted.save_pretrained(tmp_path)
    calls = {"config": 0, "store": 0}
    parse, build = IR3DEConfig.from_dict.__func__, modeling.ExpertStatisticsStore.__init__

    def counted_parse(cls, *args, **kwargs):
        calls["config"] += 1
        return parse(cls, *args, **kwargs)

    def counted_build(self, *args, **kwargs):
        calls["store"] += 1
        build(self, *args, **kwargs)

    monkeypatch.setattr(IR3DEConfig, "from_dict", classmethod(counted_parse))
    monkeypatch.setattr(modeling.ExpertStatisticsStore, "__init__", counted_build)
    loaded = IR3DERouterModel.from_pretrained(tmp_path)
    assert calls == {"config": 1, "store": 1}
    assert torch.equal(loaded.expert_counts, fitted.expert_counts)
