"""Routers saved by older code load with identical decisions: before the statistics store (format 1,
`tests/fixtures/router_v1`) and before the scaled store (format 2, `tests/fixtures/router_v2`, 39 experts, one
imported); both are written back in format 3 (sparse histograms, verified A and B)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from ir3de_hf import IR3DERouterModel
from ir3de_hf.aggregation import AGGREGATIONS

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = json.loads((FIXTURES / "router_v1_decisions.json").read_text())


def _assert_recorded_decisions(router: IR3DERouterModel) -> None:
    for method in AGGREGATIONS:
        router.config.aggregation = method
        expected = RECORDED["decisions"][method]
        by_ids = router.route(RECORDED["probe_ids"])
        by_text = router.route(RECORDED["probe_texts"])
        assert by_ids.expert_ids.tolist() == expected["expert_ids"], method
        assert by_text.expert_ids.tolist() == expected["text_expert_ids"], method
        torch.testing.assert_close(by_ids.logits, torch.tensor(expected["logits"]), rtol=0, atol=1e-5)
        torch.testing.assert_close(by_text.logits, torch.tensor(expected["text_logits"]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("loader", [IR3DERouterModel.from_pretrained, AutoModel.from_pretrained])
def test_a_format_1_router_loads_with_identical_decisions(loader):
    assert json.loads((FIXTURES / "router_v1" / "config.json").read_text())["ir3de_format_version"] == 1
    router = loader(FIXTURES / "router_v1")
    assert router.expert_names == ["code", "legal", "medical"]
    assert router.store.imported_moments("legal") is not None and router.store.histogram("code") is not None
    assert router.config.experts[0] == {
        "name": "code",
        "source": "org/code-expert",
        "revision": "0123abc",
        "description": "code",
    }
    _assert_recorded_decisions(router)


def test_a_format_1_router_saved_again_is_format_3_with_the_same_decisions(tmp_path):
    router = IR3DERouterModel.from_pretrained(FIXTURES / "router_v1")
    router.save_pretrained(tmp_path / "v3")
    tensors = load_file(tmp_path / "v3" / "model.safetensors")
    assert tensors["imported_moments_index"].tolist() == [1] and "expert_counts" not in tensors
    assert tensors["expert_offsets"].tolist()[1:] == [tensors["expert_offsets"][1]] * 2 + [
        len(tensors["expert_token_ids"])
    ]
    assert json.loads((tmp_path / "v3" / "config.json").read_text())["ir3de_format_version"] == 3
    _assert_recorded_decisions(IR3DERouterModel.from_pretrained(tmp_path / "v3"))


def test_an_index_that_disagrees_with_the_registry_is_refused(tmp_path):
    router = IR3DERouterModel.from_pretrained(FIXTURES / "router_v1")
    router.save_pretrained(tmp_path / "v3")
    tensors = load_file(tmp_path / "v3" / "model.safetensors")
    tensors["imported_moments_index"] = torch.tensor([2])
    save_file(tensors, tmp_path / "v3" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="imported_moments_index says experts \\[2\\]"):
        IR3DERouterModel.from_pretrained(tmp_path / "v3")


def test_editing_a_format_1_router_keeps_the_imported_expert(tmp_path):
    shutil.copytree(FIXTURES / "router_v1", tmp_path / "router")
    router = IR3DERouterModel.from_pretrained(tmp_path / "router")
    legal = router.store.imported_moments("legal")
    router.remove_expert("code")
    router.save_pretrained(tmp_path / "router")
    reloaded = IR3DERouterModel.from_pretrained(tmp_path / "router")
    assert reloaded.expert_names == ["legal", "medical"]
    for mine, saved in zip(legal, reloaded.store.imported_moments("legal"), strict=True):  # type: ignore[arg-type]
        assert torch.equal(mine, saved)
    assert load_file(tmp_path / "router" / "model.safetensors")["imported_moments_index"].tolist() == [0]


def test_a_format_1_router_already_on_the_hub_loads_by_repo_id(hub):
    api = HfApi()
    api.create_repo("org/old-router")
    commit = api.upload_folder(repo_id="org/old-router", folder_path=FIXTURES / "router_v1")
    router = IR3DERouterModel.from_pretrained("org/old-router", revision=commit.oid)
    assert router.expert_names == ["code", "legal", "medical"]
    _assert_recorded_decisions(router)


V2_RECORDED = json.loads((FIXTURES / "router_v2_decisions.json").read_text())


def _assert_v2_decisions(router: IR3DERouterModel) -> None:
    for method in AGGREGATIONS:
        router.config.aggregation = method
        routed = router.route(V2_RECORDED["probe_ids"])
        expected = V2_RECORDED["decisions"][method]
        assert routed.expert_ids.tolist() == expected["expert_ids"], method
        torch.testing.assert_close(routed.logits, torch.tensor(expected["logits"]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("loader", [IR3DERouterModel.from_pretrained, AutoModel.from_pretrained])
def test_a_format_2_router_loads_with_identical_decisions(loader):
    assert json.loads((FIXTURES / "router_v2" / "config.json").read_text())["ir3de_format_version"] == 2
    router = loader(FIXTURES / "router_v2")
    assert router.num_experts == 39 and router.store.imported_moments("expert_07") is not None
    assert router.config.naive_bayes_weight == 0.1
    _assert_v2_decisions(router)


def test_a_format_2_router_saved_again_is_format_3_with_the_same_decisions(tmp_path):
    IR3DERouterModel.from_pretrained(FIXTURES / "router_v2").save_pretrained(tmp_path / "v3")
    tensors = load_file(tmp_path / "v3" / "model.safetensors")
    assert "expert_counts" not in tensors and tensors["moments_b"].shape == (39, 11)
    _assert_v2_decisions(IR3DERouterModel.from_pretrained(tmp_path / "v3"))
