"""Integration: the demo router with the six committed LoRA experts of SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, pipeline

from ir3de_hf import IR3DERouterModel
from ir3de_hf.assets import smollm2_path
from ir3de_hf.demo import DOMAINS, ENCODER_ID, demo_experts_path, load_demo_router, sample_prompts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_router():
    return load_demo_router()


def test_demo_router_has_the_six_experts_registered(demo_router):
    assert demo_router.expert_names == list(DOMAINS)
    for spec in demo_router.config.expert_specs:  # the adapters travel inside the saved router folder
        assert spec.kind == "adapter" and spec.base_model == ENCODER_ID
        copied, committed = Path(spec.source), demo_experts_path() / spec.name
        assert copied.parts[-2:] == ("experts", spec.name)
        assert (copied / "adapter_model.safetensors").read_bytes() == (
            committed / "adapter_model.safetensors"
        ).read_bytes()
    assert demo_router.config.aggregation == "weighted_mean" and demo_router.config.encoder == ENCODER_ID
    assert int(demo_router.expert_counts.sum(dim=1).min()) > 500_000


def test_the_saved_demo_router_names_no_path_of_this_machine(demo_router, tmp_path):
    demo_router.save_pretrained(tmp_path / "demo")
    saved = (tmp_path / "demo" / "config.json").read_text() + (tmp_path / "demo" / "README.md").read_text()
    for local in (str(tmp_path), str(Path.home()), str(smollm2_path()), str(demo_experts_path().parents[1])):
        assert local not in saved
    assert json.loads((tmp_path / "demo" / "config.json").read_text())["experts"][0]["source"] == "./experts/code"


def test_the_text_classification_pipeline_returns_the_six_experts(demo_router):
    classify = pipeline("text-classification", model=demo_router, tokenizer=demo_router.tokenizer)
    prompts = sample_prompts(demo_router.tokenizer, tokens=64)
    ranked = classify(list(prompts.values()), top_k=None)
    routed = demo_router.route(list(prompts.values())).expert_names
    for scores, expert in zip(ranked, routed, strict=True):
        assert sorted(score["label"] for score in scores) == sorted(DOMAINS)
        assert scores[0]["label"] == expert and sum(score["score"] for score in scores) == pytest.approx(1.0)
    assert sum(expert == domain for expert, domain in zip(routed, prompts, strict=True)) >= 5  # 64-token prompts


def test_second_load_comes_from_the_cache(demo_router):
    again = load_demo_router()
    assert torch.equal(again.expert_counts, demo_router.expert_counts)


def test_routed_greedy_answer_equals_the_adapter_called_directly(demo_router):
    prompts = sample_prompts(demo_router.tokenizer, tokens=32)
    chosen = demo_router.route([prompts["code"], prompts["biomedical"]]).expert_names
    assert chosen == ["code", "biomedical"]
    results = demo_router.generate([prompts["code"], prompts["biomedical"]], max_new_tokens=12, do_sample=False)
    tokenizer = demo_router.tokenizer
    for result in results:
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(smollm2_path()), demo_experts_path() / result.expert
        )
        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": result.prompt}], tokenize=False, add_generation_prompt=True
        )
        inputs = tokenizer(chat, return_tensors="pt", add_special_tokens=False)
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        direct = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert result.text == direct and result.reason == "routed"


def test_the_pushed_demo_router_names_no_path_of_this_machine(hub, demo_router, tmp_path):
    commit = demo_router.push_to_hub("org/ir3de-demo")
    files = hub.files("org/ir3de-demo")
    assert {"config.json", "README.md", "experts/code/adapter_config.json"} <= set(files)
    texts = [content.decode() for name, content in files.items() if name.endswith((".json", ".md"))]
    for local in (str(Path.home()), str(smollm2_path()), str(demo_experts_path().parents[1]), "/tmp/"):
        assert not any(local in text for text in texts), local
    assert json.loads(files["experts/code/adapter_config.json"])["base_model_name_or_path"] == ENCODER_ID
    loaded = IR3DERouterModel.from_pretrained("org/ir3de-demo", revision=commit.oid)
    assert loaded.route(["The Licensee shall not sublicense the Software."]).expert_names == ["legal"]
