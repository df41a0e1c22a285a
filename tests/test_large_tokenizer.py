"""Tokenizers that declare more ids than the encoder's embedding table has rows (Llama-3: 128,256 ids; the M2D2
experts' table: 128,002 rows): special ids beyond the table are never counted and never vote; a non-special id beyond
the table is a clear error."""

from __future__ import annotations

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ir3de_hf import IR3DERouterModel

WORDS = ["[PAD]", "[UNK]", "the", "cat", "sat", "def", "main", "return"]  # ids 0-7: the table's 8 rows


def tokenizer_with(extra: list[str], special: bool) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel(vocab={word: i for i, word in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_tokens([AddedToken(token, special=special) for token in extra])  # ids 8, 9, ...
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture
def router() -> IR3DERouterModel:
    tokenizer = tokenizer_with(["<|eot_id|>", "<|reserved_0|>"], special=True)
    assert len(tokenizer) == 10 and tokenizer.convert_tokens_to_ids("<|reserved_0|>") == 9
    return IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(torch.eye(8)), tokenizer)


def test_special_ids_beyond_the_table_are_never_counted(router):
    assert router.config.vocab_size == 8 and router.config.never_counted_ids == [0, 1]
    router.add_expert("animals", texts=["the cat sat <|eot_id|>", "<|reserved_0|> the cat"])
    router.add_expert("code", texts=["def main return <|eot_id|> <|eot_id|>"])
    assert router.expert_statistics("animals").histogram.tolist() == [0, 0, 2, 2, 1, 0, 0, 0]
    assert router.expert_statistics("code").token_count == 3


def test_special_ids_beyond_the_table_never_vote(router):
    router.add_expert("animals", texts=["the cat sat"])
    router.add_expert("code", texts=["def main return"])
    plain = router.route(["the cat", "main return"])
    marked = router.route(["<|eot_id|> the <|reserved_0|> cat <|eot_id|>", "main <|reserved_0|> return"])
    assert marked.expert_names == plain.expert_names == ["animals", "code"]
    assert torch.equal(marked.logits, plain.logits)


def test_a_non_special_id_beyond_the_table_is_an_error():
    tokenizer = tokenizer_with(["dog"], special=False)  # id 8, a plain word the table has no row for
    with pytest.raises(ValueError, match=r"1 non-special token id\(s\) at or beyond the encoder's 8 embedding rows"):
        IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(torch.eye(8)), tokenizer)
