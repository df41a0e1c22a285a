"""Integration: the router on SmolLM2-135M-Instruct's real embeddings and tokenizer, with real text."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from ir3de_hf import IR3DERouterModel
from ir3de_hf.assets import smollm2_path
from ir3de_hf.tokenization import vocabulary_fingerprint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_router(domain_texts) -> IR3DERouterModel:
    router = IR3DERouterModel.from_encoder(str(smollm2_path()))
    for name, texts in domain_texts.items():
        router.add_expert(name, texts=texts[::2], description=f"{name} from the Python distribution")
    return router


def test_encoder_and_tokenizer_come_from_the_model_directory(smollm2_router):
    config = smollm2_router.config
    assert (config.vocab_size, config.hidden_size) == (49152, 576)
    assert config.encoder == str(smollm2_path())
    tokenizer = smollm2_router.tokenizer
    assert config.pad_token_id == tokenizer.pad_token_id
    assert set(tokenizer.all_special_ids) <= set(config.ignored_token_ids)
    assert config.tokenizer_fingerprint == vocabulary_fingerprint(tokenizer)
    # The histograms never hold special tokens, whatever the text contains.
    assert smollm2_router.expert_counts[:, config.never_counted_ids].sum() == 0


@pytest.mark.parametrize("aggregation", ["majority_vote", "entropy_top_k", "mean", "weighted_mean"])
def test_held_out_text_routes_to_its_domain(smollm2_router, domain_texts, aggregation):
    smollm2_router.config.aggregation = aggregation
    held_out = [(name, text) for name, texts in domain_texts.items() for text in texts[1::2]]
    chosen = smollm2_router.route([text for _, text in held_out]).expert_names
    accuracy = sum(name == pick for (name, _), pick in zip(held_out, chosen, strict=True)) / len(held_out)
    assert accuracy >= 0.9, f"{aggregation}: {accuracy:.3f}"


def test_save_and_auto_load_give_identical_decisions(smollm2_router, domain_texts, tmp_path):
    smollm2_router.config.aggregation = "entropy_top_k"
    smollm2_router.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    prompts = [text for texts in domain_texts.values() for text in texts[1::4]]
    assert torch.equal(loaded.route(prompts).expert_ids, smollm2_router.route(prompts).expert_ids)
    assert vocabulary_fingerprint(loaded.tokenizer) == loaded.config.tokenizer_fingerprint
