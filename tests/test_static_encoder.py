"""A model2vec static model as the router's encoder (issue 21): the directory is written by model2vec itself, and
the router must read its table and tokenizer exactly, route like a router over the same table, and save / load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ir3de_hf import IR3DERouterModel

model2vec = pytest.importorskip("model2vec")  # the ``bench`` extra


@pytest.fixture
def static_dir(_word_tokenizer, tmp_path):
    """A StaticModel over the word tokenizer with a seeded random table, saved by model2vec."""
    vectors = np.random.default_rng(0).standard_normal((len(_word_tokenizer), 24)).astype(np.float32)
    model = model2vec.StaticModel(vectors, _word_tokenizer.backend_tokenizer, base_model_name="word-level test")
    model.save_pretrained(tmp_path / "static")
    return tmp_path / "static", torch.from_numpy(vectors)


def test_from_encoder_reads_a_model2vec_directory(static_dir, domain_texts, word_tokenizer, tmp_path):
    path, vectors = static_dir
    router = IR3DERouterModel.from_encoder(path)
    assert (router.config.vocab_size, router.config.hidden_size) == tuple(vectors.shape)
    assert torch.equal(router.embed_tokens.weight, vectors)
    text = domain_texts["legal"][0]
    assert router.tokenizer(text)["input_ids"] == word_tokenizer(text)["input_ids"]

    same_table = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(vectors), word_tokenizer)
    for name, texts in domain_texts.items():
        router.add_expert(name, texts=texts[::2])
        same_table.add_expert(name, texts=texts[::2])
    prompts = [text for texts in domain_texts.values() for text in texts[1::2]]
    routed = router.route(prompts)
    assert torch.equal(routed.logits, same_table.route(prompts).logits)

    router.save_pretrained(tmp_path / "router")
    loaded = IR3DERouterModel.from_pretrained(tmp_path / "router")
    assert torch.equal(loaded.route(prompts).logits, routed.logits)
