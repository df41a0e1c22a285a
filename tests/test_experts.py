"""ExpertPool: lazy loading, one shared base for adapters, LRU memory budget, placement, Hub ids, tokenizer checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from peft import PeftModel
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedTokenizerFast

from ir3de_hf import ExpertSpec, IR3DERouterModel
from ir3de_hf.experts import ExpertPool
from ir3de_hf.tokenization import vocabulary_fingerprint


@pytest.fixture
def pool(expert_dirs, _word_tokenizer) -> ExpertPool:
    return ExpertPool(
        [
            ExpertSpec("full", source=str(expert_dirs["base"])),
            ExpertSpec("twin", source=str(expert_dirs["twin"])),
            ExpertSpec("a1", source=str(expert_dirs["lora1"]), base_model=str(expert_dirs["base"])),
            ExpertSpec("a2", source=str(expert_dirs["lora2"]), base_model=str(expert_dirs["base"])),
        ],
        tokenizer_fingerprint=vocabulary_fingerprint(_word_tokenizer),
    )


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_registration_loads_nothing_and_get_loads_lazily(pool):
    assert pool.names == ["full", "twin", "a1", "a2"]
    assert pool.loaded == [] and pool.memory_bytes == 0
    expert = pool.get("full")
    assert isinstance(expert.model, LlamaForCausalLM) and pool.loaded == ["full"]
    assert pool.get("full").model is expert.model


def test_adapters_of_one_base_share_a_single_base(pool):
    first = pool.get("a1").model
    second = pool.get("a2").model
    assert isinstance(first, PeftModel) and first is second
    assert sorted(pool.loaded) == ["a1", "a2"]
    base_bytes = sum(p.numel() * p.element_size() for p in first.get_base_model().parameters())
    assert pool.memory_bytes < 1.2 * base_bytes


def test_adapter_switching_equals_loading_the_adapter_alone(pool, expert_dirs):
    ids = torch.tensor([[5, 9, 13, 27, 31]])
    pool.get("a1")
    switched = _logits(pool.get("a2").model, ids)
    alone = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(expert_dirs["base"]), expert_dirs["lora2"])
    torch.testing.assert_close(switched, _logits(alone, ids), rtol=0, atol=0)
    back = _logits(pool.get("a1").model, ids)
    assert not torch.allclose(back, switched), "the adapters must differ, or the test proves nothing"


def test_memory_budget_unloads_the_least_recently_used(pool):
    one_model = pool.get("full").model
    size = sum(p.numel() * p.element_size() for p in one_model.parameters())
    pool.max_memory = int(size * 1.5)
    pool.get("twin")
    assert pool.loaded == ["twin"]
    pool.get("full")
    assert pool.loaded == ["full"]
    pool.max_memory = int(size * 2.5)
    pool.get("twin")
    pool.get("full")  # most recent: "full"; least recent: "twin"
    pool.get("a1")  # the adapter's base is a third model: "twin" goes
    assert sorted(pool.loaded) == ["a1", "full"]


def test_budget_smaller_than_one_expert_is_a_clear_error(pool):
    pool.max_memory = "1KB"
    with pytest.raises(ValueError, match="more than the pool's max_memory of 0 MB"):
        pool.get("full")
    with pytest.raises(ValueError, match="size like '8GB'"):
        ExpertPool(max_memory="lots")


def test_placement_and_dtype_per_expert(expert_dirs):
    pool = ExpertPool(
        [ExpertSpec("full", source=str(expert_dirs["base"])), ExpertSpec("twin", source=str(expert_dirs["twin"]))],
        dtype=torch.bfloat16,
        device_map="cpu",
        placement={"twin": {"": "cpu"}},
    )
    for name in ("full", "twin"):
        parameters = list(pool.get(name).model.parameters())
        assert {p.device.type for p in parameters} == {"cpu"}
        assert {p.dtype for p in parameters} == {torch.bfloat16}


def test_hub_ids_resolve_from_the_offline_cache(expert_dirs):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = Path(huggingface_hub.constants.HF_HUB_CACHE) / "models--ir3de-test--tiny-expert"
    shutil.copytree(expert_dirs["base"], repo / "snapshots" / commit, dirs_exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    pool = ExpertPool(
        [
            ExpertSpec("hub", source="ir3de-test/tiny-expert"),
            ExpertSpec("pinned", source="ir3de-test/tiny-expert", revision=commit),
        ]
    )
    reference = AutoModelForCausalLM.from_pretrained(expert_dirs["base"])
    ids = torch.tensor([[3, 4, 5]])
    for name in ("hub", "pinned"):
        torch.testing.assert_close(_logits(pool.get(name).model, ids), _logits(reference, ids))


def test_a_foreign_tokenizer_is_refused_by_name(_tiny_llama, pool, tmp_path):
    backend = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "other": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    _tiny_llama.save_pretrained(tmp_path)
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"Expert 'foreign' .* uses a different tokenizer than the router"):
        pool.register(ExpertSpec("foreign", source=str(tmp_path)))
    assert "foreign" not in pool.names


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ExpertSpec("gone", source="/no/such/expert"), "Expert 'gone': source '/no/such/expert' is not a directory"),
        (
            ExpertSpec("gone", source="ir3de-test/does-not-exist"),
            "Expert 'gone': source 'ir3de-test/does-not-exist' \\(revision main\\) has no config.json in the HF cache",
        ),
        (ExpertSpec("gone"), "Expert 'gone' has no source"),
    ],
)
def test_missing_sources_are_clear_errors(pool, spec, message):
    with pytest.raises(ValueError, match=message):
        pool.register(spec)


def test_an_adapter_without_base_model_gets_it_from_its_adapter_config(pool, expert_dirs, tmp_path):
    pool.register(ExpertSpec("lora", source=expert_dirs["lora1"]))  # a Path is accepted too
    assert pool.spec("lora").base_model == str(expert_dirs["base"]) and pool.spec("lora").kind == "adapter"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(ValueError, match=r"names no base model \(base_model_name_or_path\); pass base_model="):
        pool.register(ExpertSpec("broken", source=broken))


def test_router_refuses_an_expert_whose_source_does_not_exist(text_router, domain_texts):
    text_router.add_expert("code", texts=domain_texts["code"])
    before = text_router.expert_counts.clone()
    with pytest.raises(ValueError, match="Expert 'legal': source '/no/such/dir'"):
        text_router.add_expert("legal", texts=domain_texts["legal"], source="/no/such/dir")
    assert text_router.expert_names == ["code"] and torch.equal(text_router.expert_counts, before)


def test_router_remove_expert_unloads_it(text_router, domain_texts, expert_dirs):
    text_router.add_expert("code", texts=domain_texts["code"], source=str(expert_dirs["base"]))
    text_router.add_expert("legal", texts=domain_texts["legal"], source=str(expert_dirs["twin"]))
    text_router.expert_pool.get("legal")
    text_router.remove_expert("legal")
    assert text_router.expert_pool.names == ["code"] and text_router.expert_pool.loaded == []


def test_router_from_pretrained_uses_the_saved_registry(onehot_router, domain_texts, expert_dirs, tmp_path):
    onehot_router.add_expert("code", texts=domain_texts["code"], source=str(expert_dirs["base"]))
    onehot_router.add_expert(
        "legal", texts=domain_texts["legal"], source=str(expert_dirs["lora1"]), base_model=str(expert_dirs["base"])
    )
    onehot_router.save_pretrained(tmp_path)
    loaded = IR3DERouterModel.from_pretrained(tmp_path)
    result = loaded.generate(["Licensee agrees to the terms of this License Agreement"], max_new_tokens=2)
    assert result[0].expert == "legal" and loaded.expert_pool.loaded == ["legal"]
