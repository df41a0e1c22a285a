"""Bad input through the Python API: each case gets an error of the right type whose message names the problem, and
leaves the router (or the saved directory) exactly as it was."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from ir3de_hf import IR3DERouterModel

PROBE_TEXTS = ["def decode ( self , s ) : return", "the Licensee agrees to the terms"]


@pytest.fixture
def router(onehot_router, domain_texts) -> IR3DERouterModel:
    for name in ("code", "legal"):
        onehot_router.add_expert(name, texts=domain_texts[name][:20])
    return onehot_router


def _snapshot(router: IR3DERouterModel) -> tuple:
    routed = router.route(PROBE_TEXTS)
    return (
        list(router.expert_names),
        json.dumps(router.config.to_dict(), sort_keys=True, default=str),
        routed.expert_ids.tolist(),
        routed.logits.tolist(),
        router.expert_counts.clone(),
    )


def _assert_unchanged(router: IR3DERouterModel, before: tuple) -> None:
    after = _snapshot(router)
    assert after[:4] == before[:4]
    assert torch.equal(after[4], before[4])


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


V = "vocab"  # placeholder replaced by the router's vocabulary size in messages

ROUTE_CASES: list[tuple[str, Callable[[IR3DERouterModel], object], type[Exception], str]] = [
    ("nested lists of strings", lambda r: r.route([["def", "return"]]), TypeError, r"integers, got 'def'.*one string"),
    ("float ids in lists", lambda r: r.route([[3, 4.5]]), TypeError, r"position 1: .*integers, got 4\.5"),
    ("bool ids in lists", lambda r: r.route([[True, 3]]), TypeError, r"integers, got True"),
    ("an id beyond int64", lambda r: r.route([[2**70]]), ValueError, r"does not fit in int64"),
    ("an id outside the vocabulary", lambda r: r.route([[10**6]]), ValueError, r"must lie in \[0, \d+\)"),
    ("a negative id", lambda r: r.route([[-1, 3]]), ValueError, r"must lie in \[0, \d+\)"),
    ("a float id tensor", lambda r: r.route(torch.tensor([[1.0, 2.0]])), TypeError, r"integer tensor"),
    ("a 3-D id tensor", lambda r: r.route(torch.ones(2, 2, 2, dtype=torch.long)), ValueError, r"\(batch, length\)"),
    (
        "a mask of another shape",
        lambda r: r.route(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4)),
        ValueError,
        r"attention_mask has shape \(2, 4\) but input_ids has shape \(2, 3\)",
    ),
    ("a mask with text", lambda r: r.route(["text"], [[1]]), ValueError, r"attention_mask= only goes with token ids"),
    ("no prompts", lambda r: r.route([]), ValueError, r"No prompts to route"),
    ("strings mixed with ids", lambda r: r.route(["text", [1, 2]]), TypeError, r"Prompt 1 is a list among strings"),
    (
        "a lone surrogate",
        lambda r: r.route(["def \ud800 return"]),
        ValueError,
        r"Text 0 is not valid Unicode.*position 4",
    ),
    # A dict is a wrong type like any other non-sequence (issue 23: it was a ValueError, "No prompts to route").
    ("a dict", lambda r: r.route({"text": "def"}), TypeError, r"Prompts must be text .* got dict"),
    (
        "an int",
        lambda r: r.route(123),
        TypeError,
        r"Prompts must be text \(a string or a list of strings\) .* got int",
    ),
    ("a float", lambda r: r.route(1.5), TypeError, r"token ids \(lists of ids or a tensor\), got float"),
    ("None", lambda r: r.route(None), TypeError, r"got NoneType"),
    ("bytes", lambda r: r.route(b"def main"), TypeError, r"got bytes \(decode bytes to str first\)"),
    ("a set of strings", lambda r: r.route({"def", "return"}), TypeError, r"got set"),
    (
        "a 0-d tensor",
        lambda r: r.route(torch.tensor(5)),
        ValueError,
        r"0-d tensor \(5\) is one number.*\(batch, length\)",
    ),
    ("ragged ids with a mask", lambda r: r.route([[1, 2], [3]], [[1, 1], [1]]), ValueError, r"same \(padded\) length"),
]

EDIT_CASES: list[tuple[str, Callable[[IR3DERouterModel], object], type[Exception], str]] = [
    ("a duplicate expert", lambda r: r.add_expert("code", texts=["def"]), ValueError, r"'code' already exists"),
    ("a bad expert name", lambda r: r.add_expert("no spaces", texts=["def"]), ValueError, r"Invalid expert name"),
    ("no data", lambda r: r.add_expert("x"), ValueError, r"give exactly one of .* \(got none\)"),
    (
        "two kinds of data",
        lambda r: r.add_expert("x", texts=["def"], input_ids=[[1]]),
        ValueError,
        r"got texts=, input_ids=",
    ),
    ("only special tokens", lambda r: r.add_expert("x", texts=["[PAD] <s>"]), ValueError, r"no usable token"),
    ("an empty text list", lambda r: r.add_expert("x", texts=[]), ValueError, r"no usable token"),
    (
        "a histogram of another vocabulary",
        lambda r: r.add_expert("x", histogram=torch.ones(7, dtype=torch.long)),
        ValueError,
        r"vector of \d+ counts.*different tokenizer",
    ),
    (
        "a negative histogram",
        lambda r: r.add_expert("x", histogram=-torch.ones(r.config.vocab_size, dtype=torch.long)),
        ValueError,
        r"non-negative integer",
    ),
    (
        "a float histogram",
        lambda r: r.add_expert("x", histogram=torch.ones(r.config.vocab_size)),
        ValueError,
        r"non-negative integer",
    ),
    (
        "moments of another encoder",
        lambda r: r.add_expert("x", moments=(torch.eye(3), torch.ones(3))),
        ValueError,
        r"moments must have shapes .*different encoder",
    ),
    (
        "NaN moments",
        lambda r: r.add_expert("x", moments=_moments(r, nan=True)),
        ValueError,
        r"NaN or infinite",
    ),
    (
        "asymmetric moments",
        lambda r: r.add_expert("x", moments=_moments(r, asymmetric=True)),
        ValueError,
        r"symmetric",
    ),
    (
        "a moments tuple of one",
        lambda r: r.add_expert("x", moments=(torch.eye(2),)),
        TypeError,
        r"a pair \(A_n, b_n\)",
    ),
    ("an unknown argument", lambda r: r.add_expert("x", text=["def"]), TypeError, r"Unknown argument\(s\) \['text'\]"),
    (
        "a text with a lone surrogate",
        lambda r: r.add_expert("x", texts=["a \udcff"]),
        ValueError,
        r"not valid Unicode",
    ),
    (
        "a source that does not exist",
        lambda r: r.add_expert("x", texts=["def"], source="/no/such/expert"),
        ValueError,
        r"'/no/such/expert'",
    ),
    (
        "a mask without ids",
        lambda r: r.add_expert("x", texts=["def"], attention_mask=[[1]]),
        ValueError,
        r"attention_mask= only goes with input_ids=",
    ),
    (
        "updating an unknown expert",
        lambda r: r.update_expert("nope", texts=["def"]),
        ValueError,
        r"No expert 'nope'|No expert named 'nope'",
    ),
    ("removing an unknown expert", lambda r: r.remove_expert("nope"), ValueError, r"No expert named 'nope'"),
    (
        "a dataset without the column",
        lambda r: r.add_expert("x", dataset=_dataset(), text_column="body"),
        ValueError,
        r"no column 'body'",
    ),
    ("statistics of an unknown expert", lambda r: r.expert_statistics("nope"), ValueError, r"No expert named 'nope'"),
]


def _moments(router: IR3DERouterModel, nan: bool = False, asymmetric: bool = False) -> tuple:
    a, b = (tensor.clone() for tensor in router.store.moments("code"))
    if nan:
        a[0, 0] = math.nan
    if asymmetric:
        a[0, 1] += 1.0
    return a, b


def _dataset():
    from datasets import Dataset

    return Dataset.from_dict({"text": ["def f ( ) : return"]})


@pytest.mark.parametrize(("case", "call", "error", "message"), ROUTE_CASES + EDIT_CASES, ids=lambda v: v)
def test_bad_input_is_refused_and_changes_nothing(router, case, call, error, message):
    before = _snapshot(router)
    with pytest.raises(error, match=message):
        call(router)
    _assert_unchanged(router, before)


# ------------------------------------------------------------------------------------------------ blank prompts


@pytest.fixture(scope="module")
def byte_router(domain_texts) -> IR3DERouterModel:
    """A router with a byte-level tokenizer (GPT-2 style, as SmolLM2's): unlike the word tokenizer, it turns spaces,
    tabs and zero-width characters into real tokens, which vote."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE(vocab={byte: i for i, byte in enumerate(sorted(alphabet))}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(torch.eye(len(alphabet))), tokenizer)
    for name in ("code", "legal"):
        router.add_expert(name, texts=domain_texts[name][:20])
    return router


BLANK = ["   ", "\n\t", "\u200b", "\u00a0\u3000\u200d", "\ufeff \r\n"]


@pytest.mark.parametrize("prompt", BLANK, ids=lambda v: ascii(v))
def test_a_blank_prompt_has_no_evidence_like_an_empty_one(byte_router, prompt):
    """Whitespace and zero-width characters show nothing: the tokenizer gives them tokens, but the prompt routes like
    ``""`` (no evidence, expert -1, uniform probabilities, not confident), and `decide` refuses it without a
    fallback as it refuses the empty prompt."""
    from ir3de_hf.outputs import NoEvidenceError, decide

    assert byte_router.tokenizer(prompt, add_special_tokens=False)["input_ids"]  # tokens that would vote
    before = _snapshot(byte_router)
    routed, empty = byte_router.route([prompt, "def main ( ) : return 0"]), byte_router.route([""])
    assert byte_router.route(prompt).no_evidence.tolist() == [True]  # one string, as route("   ")
    assert routed.no_evidence.tolist() == [True, False] and empty.no_evidence.tolist() == [True]
    assert routed.expert_ids[0].item() == empty.expert_ids.item() == -1 and routed.expert_names[0] is None
    assert routed.probabilities[0].tolist() == empty.probabilities[0].tolist() == [0.5, 0.5]
    assert not routed.confident[0] and routed.expert_names[1] == "code"
    with pytest.raises(NoEvidenceError, match=r"Prompt 0 has no token the router can use \(empty, blank"):
        decide(routed, byte_router.expert_names)
    assert decide(routed, byte_router.expert_names, fallback_expert="legal")[0].reason == "fallback"
    _assert_unchanged(byte_router, before)


# ------------------------------------------------------------------------------------------------ saving


def _llama_checkpoint(directory: Path) -> Path:
    config = LlamaConfig(
        vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def test_saving_over_a_model_checkpoint_is_refused_and_keeps_it(router, tmp_path):
    llama = _llama_checkpoint(tmp_path / "llama")
    before = _digest(llama)
    with pytest.raises(FileExistsError, match=r"llama holds a 'llama' model \(config\.json, .*overwrite=True"):
        router.save_pretrained(llama)
    assert _digest(llama) == before


def test_saving_over_a_folder_of_other_files_is_refused(router, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"files that are not an IR3DE router \(notes\.txt\)"):
        router.save_pretrained(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_overwrite_replaces_a_foreign_directory_whole(router, tmp_path):
    llama = _llama_checkpoint(tmp_path / "llama")
    router.save_pretrained(llama, overwrite=True)
    assert not (llama / "generation_config.json").exists()
    assert (
        IR3DERouterModel.from_pretrained(llama).route(PROBE_TEXTS).expert_names
        == router.route(PROBE_TEXTS).expert_names
    )


@pytest.mark.parametrize(
    ("case", "call", "error", "message"),
    [
        (
            "into a file",
            lambda r, d: r.save_pretrained(d / "file.txt"),
            NotADirectoryError,
            r"file\.txt exists and is not a directory",
        ),
        ("with push_to_hub", lambda r, d: r.save_pretrained(d, push_to_hub=True), ValueError, r"router\.push_to_hub"),
        (
            "by reference without an encoder",
            lambda r, d: r.save_pretrained(d, encoder_by_reference=True),
            ValueError,
            r"needs config\.encoder",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_saves_are_refused(router, tmp_path, case, call, error, message):
    (tmp_path / "file.txt").write_text("x")
    before = _snapshot(router)
    with pytest.raises(error, match=message):
        call(router, tmp_path)
    _assert_unchanged(router, before)
    assert [path.name for path in tmp_path.iterdir()] == ["file.txt"]


# ------------------------------------------------------------------------------------------------ loading


def _drop(key: str):
    def damage(tensors: dict, config: dict) -> None:
        del tensors[key]

    return damage


def _set(key: str, change: Callable[[torch.Tensor], torch.Tensor]):
    def damage(tensors: dict, config: dict) -> None:
        tensors[key] = change(tensors[key])

    return damage


def _config(**values):
    def damage(tensors: dict, config: dict) -> None:
        config.update(values)

    return damage


def _only_first_expert_counted(tensors: dict, config: dict) -> None:
    first = int(tensors["expert_offsets"][1])
    tensors["expert_offsets"] = torch.tensor([0, first, first])
    tensors["expert_token_ids"] = tensors["expert_token_ids"][:first].clone()
    tensors["expert_token_counts"] = tensors["expert_token_counts"][:first].clone()


DAMAGE = [
    ("no token counts", _drop("expert_token_counts"), r"lacks the tensor 'expert_token_counts'"),
    ("no moments", _drop("moments_a"), r"lacks the tensor 'moments_a'"),
    ("no embedding table", _drop("embed_tokens.weight"), r"lacks the tensor 'embed_tokens\.weight'"),
    ("an expert without tokens", _only_first_expert_counted, r"no token at all for expert\(s\) \['legal'\]"),
    ("negative counts", _set("expert_token_counts", lambda t: t - 1000), r"negative token counts"),
    (
        "counts that disagree with the moments",
        _set("expert_token_counts", lambda t: torch.cat([t[: len(t) // 2] * 2, t[len(t) // 2 :]])),  # not a rescale:
        r"moments_a does not match",  # with balanced experts A does not change when every count doubles
    ),
    (
        "NaN in the embedding table",
        _set("embed_tokens.weight", lambda t: t.index_fill(0, torch.tensor([3]), math.nan)),
        r"NaN or infinite",
    ),
    (
        "inf in the embedding table",
        _set("embed_tokens.weight", lambda t: t.index_fill(0, torch.tensor([0]), math.inf)),
        r"NaN or infinite",
    ),
    (
        "ids of another vocabulary",
        _set("expert_token_ids", lambda t: t + 100_000),
        r"expert_token_ids holds ids outside the vocabulary",
    ),
    ("float counts", _set("expert_token_counts", lambda t: t.float()), r"'expert_token_counts' is F32 .* needs I64"),
    (
        "a third expert in the config",
        _config(experts=[{"name": "code"}, {"name": "legal"}, {"name": "docs"}]),
        r"'expert_offsets' is I64 \[3\] but config\.json needs I64 \[4\]",
    ),
    (
        "an embedding of another width",
        _config(hidden_size=7),
        r"'embed_tokens\.weight' is F32 \[\d+, \d+\] but config\.json needs F32 \[\d+, 7\]",
    ),
    ("an invalid ridge_lambda", _config(ridge_lambda=-1), r"config\.json: .*ridge_lambda"),
    (
        "a foreign model_type",
        _config(model_type="llama"),
        r"not an IR3DE router: its config\.json has model_type 'llama'",
    ),
]


@pytest.mark.parametrize(("case", "damage", "message"), DAMAGE, ids=lambda v: v if isinstance(v, str) else "")
def test_damaged_routers_fail_to_load_naming_the_file(router, tmp_path, case, damage, message):
    router.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    config = json.loads((tmp_path / "config.json").read_text())
    damage(tensors, config)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    before = _digest(tmp_path)
    with pytest.raises(ValueError, match=message) as raised:
        IR3DERouterModel.from_pretrained(tmp_path)
    assert str(tmp_path) in str(raised.value) or "model_type" in message
    assert _digest(tmp_path) == before


def test_a_truncated_weights_file_fails_to_load_naming_it(router, tmp_path):
    router.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"model\.safetensors: unreadable or truncated"):
        IR3DERouterModel.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("prepare", "error", "message"),
    [
        (lambda d: d / "missing", FileNotFoundError, r"missing: no such directory"),
        (lambda d: (d / "config.json").write_text("{not json") and d, ValueError, r"config\.json: not a JSON object"),
        (
            lambda d: (d / "config.json").write_text('{"model_type": "ir3de"}') and d,
            ValueError,
            r"has no model\.safetensors",
        ),
    ],
    ids=["a missing directory", "config.json that is not JSON", "no weights file"],
)
def test_missing_or_broken_files_are_clear_errors(tmp_path, prepare, error, message):
    with pytest.raises(error, match=message):
        IR3DERouterModel.from_pretrained(prepare(tmp_path))


def test_a_long_prompt_among_many_short_ones_routes_in_chunks_like_alone(router, zipf_ids):
    """2,000 short prompts and one of 300,000 tokens: padding them together would take about 40 GB; routed in
    length-bucketed chunks, every decision equals the decision for the prompt alone, and per-token details (which
    would be padded to the long prompt) are left out by default."""
    generator = torch.Generator().manual_seed(5)
    vocab = router.config.vocab_size
    short = [
        zipf_ids(generator, (int(n),), vocab).tolist() for n in torch.randint(1, 40, (2000,), generator=generator)
    ]
    long = zipf_ids(generator, (300_000,), vocab).tolist()
    prompts = [*short[:1000], long, *short[1000:]]
    routed = router.route(prompts)
    assert routed.token_scores is None and routed.voting_mask is None
    alone = [router.route([prompt]) for prompt in prompts]
    assert routed.expert_ids.tolist() == [single.expert_ids.item() for single in alone]
    torch.testing.assert_close(routed.logits, torch.cat([single.logits for single in alone]), rtol=0, atol=1e-6)
    detailed = router.route(prompts[:50], token_details=True)
    assert detailed.token_scores.shape == (50, max(len(p) for p in prompts[:50]), 2)
