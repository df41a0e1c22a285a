"""Shared fixtures: a tiny real tokenizer and encoder built in-process, and real text from the running interpreter.

The Hub environment variables must be set before huggingface_hub or transformers is imported (they are read once).
"""

from __future__ import annotations

import copy
import os
import sysconfig
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
if "HF_HOME" not in os.environ:  # a throwaway HF cache, removed when the test session ends
    _HF_HOME = tempfile.TemporaryDirectory(prefix="ir3de-test-hf-home-")
    os.environ["HF_HOME"] = _HF_HOME.name

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ir3de_hf import IR3DERouterModel

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _chunks(text: str, words_per_chunk: int = 60) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + words_per_chunk]) for i in range(0, len(words) - words_per_chunk, words_per_chunk)]


@pytest.fixture(scope="session")
def domain_texts() -> dict[str, list[str]]:
    """Three real domains read from the interpreter: Python source, the Python license, Python reference prose."""
    import pydoc_data.topics

    code = "\n".join((STDLIB / name).read_text() for name in ("textwrap.py", "json/decoder.py", "json/encoder.py"))
    legal = (STDLIB / "LICENSE.txt").read_text()
    prose = "\n".join(pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)[:20])
    return {"code": _chunks(code), "legal": _chunks(legal), "docs": _chunks(prose)}


@pytest.fixture(scope="session")
def _word_tokenizer(domain_texts: dict[str, list[str]]) -> PreTrainedTokenizerFast:
    splitter = pre_tokenizers.Whitespace()
    words = sorted(
        {word for texts in domain_texts.values() for text in texts for word, _ in splitter.pre_tokenize_str(text)}
    )
    vocab = {"[PAD]": 0, "[UNK]": 1, "<s>": 2, **{word: i + 3 for i, word in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = splitter
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>")


@pytest.fixture
def word_tokenizer(_word_tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    return copy.deepcopy(_word_tokenizer)


@pytest.fixture(scope="session")
def _tiny_llama(_word_tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(_word_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


@pytest.fixture
def tiny_llama(_tiny_llama: LlamaForCausalLM) -> LlamaForCausalLM:
    return copy.deepcopy(_tiny_llama)


@pytest.fixture(scope="session")
def expert_dir(_tiny_llama: LlamaForCausalLM, _word_tokenizer: PreTrainedTokenizerFast, tmp_path_factory) -> Path:
    """A full-model expert on disk: the tiny Llama with the word tokenizer."""
    directory = tmp_path_factory.mktemp("tiny-expert")
    _tiny_llama.save_pretrained(directory)
    _word_tokenizer.save_pretrained(directory)
    return directory


def _adapter(base: LlamaForCausalLM, seed: int, directory: Path, base_dir: Path) -> Path:
    torch.manual_seed(seed)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(base), config)
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    peft_model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def expert_dirs(_tiny_llama, _word_tokenizer, expert_dir, tmp_path_factory) -> dict[str, Path]:
    """Two full models (the tiny Llama and a re-seeded twin) and two LoRA adapters of the first."""
    root = tmp_path_factory.mktemp("experts")
    torch.manual_seed(1)
    twin = LlamaForCausalLM(_tiny_llama.config)
    twin.save_pretrained(root / "twin")
    _word_tokenizer.save_pretrained(root / "twin")
    return {
        "base": expert_dir,
        "twin": root / "twin",
        "lora1": _adapter(_tiny_llama, 11, root / "lora1", expert_dir),
        "lora2": _adapter(_tiny_llama, 12, root / "lora2", expert_dir),
    }


@pytest.fixture(scope="session")
def expert_sources(expert_dirs) -> dict[str, dict[str, str]]:
    """``add_expert`` keywords for the three test experts: 'code' a full model (the re-seeded twin), 'legal' and
    'docs' LoRA adapters of one base."""
    base = str(expert_dirs["base"])
    return {
        "code": {"source": str(expert_dirs["twin"])},
        "legal": {"source": str(expert_dirs["lora1"]), "base_model": base},
        "docs": {"source": str(expert_dirs["lora2"]), "base_model": base},
    }


@pytest.fixture(scope="session")
def router_dir(_word_tokenizer, domain_texts, expert_sources, tmp_path_factory) -> Path:
    """A saved router over one-hot features, what the `ir3de serve` tests serve: 'code' (a full model), 'legal' and
    'docs' (LoRA adapters of one base)."""
    one_hot = torch.nn.Embedding.from_pretrained(torch.eye(len(_word_tokenizer)))
    router = IR3DERouterModel.from_encoder(one_hot, _word_tokenizer)
    for name, texts in domain_texts.items():
        router.add_expert(name, texts=texts, **expert_sources[name])
    directory = tmp_path_factory.mktemp("serve") / "tiny-router"
    router.save_pretrained(directory)
    return directory


@pytest.fixture
def text_router(tiny_llama: LlamaForCausalLM, word_tokenizer: PreTrainedTokenizerFast) -> IR3DERouterModel:
    """A router over the tiny Llama's embeddings with the word tokenizer, and no experts yet."""
    return IR3DERouterModel.from_encoder(tiny_llama, word_tokenizer)


@pytest.fixture
def onehot_router(word_tokenizer: PreTrainedTokenizerFast) -> IR3DERouterModel:
    """A router whose features are one-hot (E = I): its head is a per-word domain-frequency table, so it routes real
    text well even at this tiny scale. No experts yet."""
    one_hot = torch.nn.Embedding.from_pretrained(torch.eye(len(word_tokenizer)))
    return IR3DERouterModel.from_encoder(one_hot, word_tokenizer)


@pytest.fixture
def half_fitted_router(onehot_router: IR3DERouterModel, domain_texts: dict[str, list[str]]) -> IR3DERouterModel:
    """`onehot_router` fitted on every other chunk of each domain: the other chunks (``chunks[1::2]``) are held out,
    for prompts and calibration data."""
    for name, chunks in domain_texts.items():
        onehot_router.add_expert(name, texts=chunks[::2])
    return onehot_router


@pytest.fixture
def zipf_ids():
    """Draws Zipf-like token ids (rank r with weight 1/r), shifted by ``offset`` so domains prefer different ids."""

    def draw(generator: torch.Generator, shape: tuple[int, ...], vocab_size: int, offset: int = 0) -> torch.Tensor:
        weights = 1.0 / torch.arange(1, vocab_size + 1, dtype=torch.float64)
        ranks = torch.multinomial(weights, int(torch.tensor(shape).prod()), replacement=True, generator=generator)
        return ((ranks + offset) % vocab_size).reshape(shape)

    return draw


# ---------------------------------------------------------------- loopback Hub (tests/hub_server.py)


@pytest.fixture
def hub(monkeypatch, tmp_path_factory):
    """A loopback Hub that the real huggingface_hub / transformers clients talk to, with offline mode off and an
    empty HF cache of this test's own (HF_ENDPOINT and HF_HUB_OFFLINE are read at import, so patch the constants)."""
    import huggingface_hub.constants as hub_constants
    import huggingface_hub.hf_api
    import transformers.utils.hub as transformers_hub

    from hub_server import LoopbackHub

    server = LoopbackHub().start()
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-hub-cache")))
    monkeypatch.setattr(transformers_hub, "_hf_api", None)  # transformers caches one HfApi with its first endpoint
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", server.url)  # the module-level HfApi (peft uses it)
    yield server
    server.stop()


# ---------------------------------------------------------------------------------------------- fitting (issue 8)


@pytest.fixture(scope="session")
def fit_data(domain_texts: dict[str, list[str]], tmp_path_factory) -> dict[str, Path]:
    """The three domains on disk in the three file kinds a fit reads: ``code`` as a directory with one ``.txt`` per
    text (7 files, an odd count, so two processes get unequal shares), ``legal`` as a parquet file and ``docs`` as
    a jsonl file, both with a ``text`` column."""
    import json

    import pandas as pd

    root = tmp_path_factory.mktemp("fit-data")
    (root / "code").mkdir()
    for index, text in enumerate(domain_texts["code"][:7]):
        (root / "code" / f"{index:03d}.txt").write_text(text)
    pd.DataFrame({"text": domain_texts["legal"], "n": range(len(domain_texts["legal"]))}).to_parquet(
        root / "legal.parquet"
    )
    with open(root / "docs.jsonl", "w") as handle:
        for text in domain_texts["docs"]:
            handle.write(json.dumps({"text": text}) + "\n")
    return {"code": root / "code", "legal": root / "legal.parquet", "docs": root / "docs.jsonl"}


@pytest.fixture(scope="session")
def long_expert_router_dir(_word_tokenizer, domain_texts, expert_sources, tmp_path_factory) -> Path:
    """A saved router with 'code' (the serve tests' full model) and 'long': a Llama with an 8192-token context and no
    end-of-sequence token, whose answers of thousands of tokens take seconds (a request still in flight: a cut stream,
    an expert removed meanwhile)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(_word_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=8192,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = None
    root = tmp_path_factory.mktemp("stream")
    model.save_pretrained(root / "long")
    _word_tokenizer.save_pretrained(root / "long")
    one_hot = torch.nn.Embedding.from_pretrained(torch.eye(len(_word_tokenizer)))
    router = IR3DERouterModel.from_encoder(one_hot, _word_tokenizer)
    router.add_expert("code", texts=domain_texts["code"], **expert_sources["code"])
    router.add_expert("long", texts=domain_texts["docs"], source=str(root / "long"))
    router.save_pretrained(root / "router")
    return root / "router"
