"""Routers that mean the same thing on another machine (no local absolute path saved or pushed), and the
text-classification pipeline over the experts."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from ir3de_hf import IR3DERouterModel
from ir3de_hf.experts import ExpertPool


def _with_local_experts(router: IR3DERouterModel, domain_texts, expert_dirs) -> IR3DERouterModel:
    """Experts in local folders: a full model and an adapter (its base model read from its adapter_config.json)."""
    router.add_expert("code", texts=domain_texts["code"], source=expert_dirs["base"])  # a Path
    router.add_expert("legal", texts=domain_texts["legal"], source=str(expert_dirs["lora1"]))
    router.add_expert("docs", texts=domain_texts["docs"])
    return router


@pytest.fixture
def local_router(onehot_router, domain_texts, expert_dirs) -> IR3DERouterModel:
    return _with_local_experts(onehot_router, domain_texts, expert_dirs)


def _saved_text(directory: Path) -> str:
    return (directory / "config.json").read_text() + (directory / "README.md").read_text()


def test_a_saved_router_holds_no_path_of_this_machine_and_moves_with_its_experts(
    local_router, expert_dirs, domain_texts, tmp_path
):
    assert local_router.config.expert_specs[1].base_model == str(expert_dirs["base"])  # from adapter_config.json
    local_router.save_pretrained(tmp_path / "saved")
    text = (
        _saved_text(tmp_path / "saved")
        + (tmp_path / "saved" / "experts" / "legal" / "adapter_config.json").read_text()
    )
    for machine_path in (str(tmp_path), *(str(path) for path in expert_dirs.values()), str(Path.home())):
        assert machine_path not in text
    experts = json.loads((tmp_path / "saved" / "config.json").read_text())["experts"]
    assert [entry.get("source") for entry in experts] == ["./experts/code", "./experts/legal", None]
    assert experts[1]["base_model"].startswith("../")  # a local base model: relative to the router

    moved = Path(shutil.move(tmp_path / "saved", tmp_path / "moved"))  # a local base model stays beside it
    loaded = IR3DERouterModel.from_pretrained(moved)
    assert loaded.config.expert_specs[0].source == str((moved / "experts" / "code").resolve())
    prompt = domain_texts["legal"][0]
    assert (
        loaded.generate([prompt], max_new_tokens=3)[0].text
        == local_router.generate([prompt], max_new_tokens=3)[0].text
    )


def test_without_copies_experts_are_recorded_relative_to_the_router(local_router, expert_dirs, tmp_path):
    local_router.save_pretrained(tmp_path / "router", copy_experts=False)
    experts = json.loads((tmp_path / "router" / "config.json").read_text())["experts"]
    assert experts[0]["source"].startswith("../") and not (tmp_path / "router" / "experts").exists()
    loaded = IR3DERouterModel.from_pretrained(tmp_path / "router")
    assert loaded.config.expert_specs[0].source == str(Path(expert_dirs["base"]).resolve())


def test_an_encoder_from_the_hf_cache_is_recorded_by_hub_id_and_revision(tiny_llama, word_tokenizer, tmp_path):
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / ("a" * 40)
    tiny_llama.save_pretrained(snapshot)
    word_tokenizer.save_pretrained(snapshot)
    router = IR3DERouterModel.from_encoder(snapshot)
    router.add_expert("a", input_ids=[[5, 6, 7]])
    router.save_pretrained(tmp_path / "router")
    config = json.loads((tmp_path / "router" / "config.json").read_text())
    assert (config["encoder"], config["encoder_revision"]) == ("org/tiny", "a" * 40)
    assert "base_model: org/tiny" in (tmp_path / "router" / "README.md").read_text()


def test_encoder_id_names_a_local_copy_of_a_hub_model(tiny_llama, word_tokenizer, tmp_path):
    router = IR3DERouterModel.from_encoder(tiny_llama, word_tokenizer, encoder_id="org/tiny-llama")
    assert router.config.encoder == "org/tiny-llama"


def test_a_local_encoder_that_is_no_hf_cache_snapshot_warns_and_points_to_encoder_id(
    tiny_llama, word_tokenizer, tmp_path
):
    tiny_llama.save_pretrained(tmp_path / "mirror")  # an offline copy, as ir3de_hf.assets.smollm2_path() returns
    word_tokenizer.save_pretrained(tmp_path / "mirror")
    router = IR3DERouterModel.from_encoder(tmp_path / "mirror")
    router.add_expert("a", input_ids=[[5, 6, 7]])
    with pytest.warns(UserWarning, match=r"local folder .*mirror.* \(\.\./mirror\).*encoder_id='org/name'"):
        router.save_pretrained(tmp_path / "router")
    assert "base_model" not in (tmp_path / "router" / "README.md").read_text()

    named = IR3DERouterModel.from_encoder(tmp_path / "mirror", encoder_id="org/tiny-llama")
    named.add_expert("a", input_ids=[[5, 6, 7]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        named.save_pretrained(tmp_path / "named")
    assert "base_model: org/tiny-llama" in (tmp_path / "named" / "README.md").read_text()


def test_pushed_local_experts_travel_in_the_repository(hub, onehot_router, domain_texts, expert_dirs, tmp_path):
    with pytest.raises(ValueError, match=r"base model of expert\(s\) legal \(.*tiny-expert.*\) is a local folder"):
        _with_local_experts(onehot_router, domain_texts, expert_dirs).push_to_hub("org/refused")
    local_router = onehot_router
    local_router.remove_expert("legal")
    pool = ExpertPool(base_model_paths={"org/tiny-base": expert_dirs["base"]})  # the base by Hub id, found here
    local_router.expert_pool = pool
    local_router.add_expert(
        "legal", texts=domain_texts["legal"], source=expert_dirs["lora1"], base_model="org/tiny-base"
    )
    commit = local_router.push_to_hub("org/with-experts")
    assert {"experts/code/config.json", "experts/legal/adapter_config.json"} <= set(hub.files("org/with-experts"))
    for name, content in hub.files("org/with-experts").items():
        if name.endswith((".json", ".md")):
            assert str(tmp_path.parent) not in content.decode()
    loaded = IR3DERouterModel.from_pretrained("org/with-experts", revision=commit.oid)
    assert Path(loaded.config.expert_specs[0].source).parts[-2:] == ("experts", "code")
    assert loaded.config.expert_specs[2].base_model == "org/tiny-base"
    loaded.expert_pool = ExpertPool(base_model_paths={"org/tiny-base": expert_dirs["base"]})
    adapter = domain_texts["legal"][0]
    assert (
        loaded.generate([adapter], max_new_tokens=3)[0].text
        == local_router.generate([adapter], max_new_tokens=3)[0].text
    )
    prompt = domain_texts["code"][0]
    assert (
        loaded.generate([prompt], max_new_tokens=3)[0].text
        == local_router.generate([prompt], max_new_tokens=3)[0].text
    )


# ------------------------------------------------------------------------------------------------ pipeline


def test_the_text_classification_pipeline_names_the_experts(local_router, domain_texts, tmp_path):
    local_router.save_pretrained(tmp_path / "router")
    classify = pipeline("text-classification", model=str(tmp_path / "router"))
    prompts = [domain_texts[name][1] for name in ("code", "legal", "docs")]
    routed = local_router.route(prompts)
    ranked = classify(prompts, top_k=None)
    for row, scores in enumerate(ranked):
        assert sorted(score["label"] for score in scores) == ["code", "docs", "legal"]
        assert scores[0]["label"] == routed.expert_names[row]
        expected = torch.softmax(routed.logits[row], dim=0).max().item()
        assert scores[0]["score"] == pytest.approx(expected, rel=1e-5)
        assert sum(score["score"] for score in scores) == pytest.approx(1.0)
    assert [answer["label"] for answer in classify(prompts)] == routed.expert_names
    on_object = pipeline("text-classification", model=local_router, tokenizer=local_router.tokenizer)
    assert len(on_object(prompts[0], top_k=2)) == 2


def test_labels_follow_the_registry(local_router, tmp_path):
    assert local_router.config.id2label == {0: "code", 1: "legal", 2: "docs"}
    local_router.remove_expert("legal")
    assert local_router.config.id2label == {0: "code", 1: "docs"}
    assert local_router.config.label2id == {"code": 0, "docs": 1}
    local_router.save_pretrained(tmp_path)
    loaded = IR3DERouterModel.from_pretrained(tmp_path)
    assert loaded.config.id2label == {0: "code", 1: "docs"} and loaded.config.num_labels == 2


# ------------------------------------------------------------------------------------------------ progress


@pytest.mark.parametrize(
    ("texts", "show", "expected"),
    [(3000, None, True), (3000, False, False), (10, None, False), (10, True, True)],
    ids=["many texts", "many texts, turned off", "few texts", "few texts, turned on"],
)
def test_counting_text_shows_a_progress_bar_when_it_takes_a_while(
    onehot_router, domain_texts, capfd, texts, show, expected
):
    corpus = (domain_texts["code"] * (texts // len(domain_texts["code"]) + 1))[:texts]
    capfd.readouterr()
    onehot_router.add_expert("code", texts=corpus, show_progress_bar=show)
    assert ("Counting tokens of 'code'" in capfd.readouterr().err) is expected
