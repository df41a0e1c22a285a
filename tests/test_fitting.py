"""Fitting from files, datasets and streams: exact histograms, token budgets, worker tokenisation, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset, IterableDataset

from ir3de_hf.fitting import count_experts, fit_experts
from ir3de_hf.text_sources import open_text_source


def _reference(router, texts: list[str]) -> torch.Tensor:
    """The router's own counting path (add_expert(texts=...)), to compare the fit with."""
    router.add_expert("reference", texts=texts)
    counts = router.expert_counts[-1].clone()
    router.remove_expert("reference")
    return counts


def test_fit_from_files_equals_counting_the_texts(onehot_router, domain_texts, fit_data):
    expected = {
        "code": _reference(onehot_router, domain_texts["code"][:7]),
        "legal": _reference(onehot_router, domain_texts["legal"]),
        "docs": _reference(onehot_router, domain_texts["docs"]),
    }
    result = fit_experts(onehot_router, {name: str(path) for name, path in fit_data.items()}, batch_size=5)

    assert onehot_router.expert_names == ["code", "legal", "docs"]
    for index, name in enumerate(onehot_router.expert_names):
        assert torch.equal(onehot_router.expert_counts[index], expected[name])
        assert torch.equal(result.histograms[name], expected[name])
        assert result.tokens[name] == int(expected[name].sum())
    assert result.texts == {"code": 7, "legal": len(domain_texts["legal"]), "docs": len(domain_texts["docs"])}
    assert result.tokens_per_process == [sum(result.tokens.values())]
    assert set(result.seconds) == {"read", "tokenize", "count", "checkpoint", "reduce", "solve"}
    assert onehot_router.route(domain_texts["legal"][:5]).expert_names == ["legal"] * 5


def test_every_source_kind_gives_the_same_histogram(text_router, domain_texts, fit_data, tmp_path):
    texts = domain_texts["legal"]
    glob_dir = tmp_path / "parts"
    glob_dir.mkdir()
    for index, text in enumerate(texts):
        (glob_dir / f"part-{index:03d}.txt").write_text(text)
    sources = {
        "list": texts,
        "dataset": Dataset.from_dict({"text": texts}),
        "iterable": Dataset.from_dict({"text": texts}).to_iterable_dataset(num_shards=3),
        "parquet": str(fit_data["legal"]),
        "glob": str(glob_dir / "part-*.txt"),
    }
    result = count_experts(sources, tokenizer=text_router.tokenizer, vocab_size=text_router.config.vocab_size)
    expected = _reference(text_router, texts)
    for name in sources:
        assert torch.equal(result.histograms[name], expected), name


def test_special_tokens_are_not_counted(text_router):
    tokenizer = text_router.tokenizer
    result = count_experts(
        {"x": ["<s> def return <s> [PAD] value"]},
        tokenizer=tokenizer,
        vocab_size=text_router.config.vocab_size,
        ignored_token_ids=text_router.config.never_counted_ids,
    )
    counted = torch.nonzero(result.histograms["x"]).flatten().tolist()
    assert counted == sorted(tokenizer.convert_tokens_to_ids(["def", "return", "value"]))
    assert result.tokens == {"x": 3}


def test_token_budget_counts_exactly_the_first_tokens(text_router, domain_texts):
    texts = domain_texts["docs"]
    tokenizer = text_router.tokenizer
    ids = [token for text in texts for token in tokenizer(text, add_special_tokens=False)["input_ids"]]
    never = set(text_router.config.never_counted_ids)
    first = torch.tensor([token for token in ids if token not in never][:1000])
    result = fit_experts(text_router, {"docs": texts}, max_tokens=1000, batch_size=3)

    assert result.tokens == {"docs": 1000}
    assert torch.equal(result.histograms["docs"], torch.bincount(first, minlength=text_router.config.vocab_size))
    assert result.texts["docs"] < len(texts)


def test_worker_tokenisation_gives_the_same_counts(text_router, domain_texts):
    texts = domain_texts["code"]
    common = {"tokenizer": text_router.tokenizer, "vocab_size": text_router.config.vocab_size, "batch_size": 4}
    in_process = count_experts({"code": texts}, **common)
    with_workers = count_experts({"code": texts}, num_proc=2, **common)
    assert torch.equal(with_workers.histograms["code"], in_process.histograms["code"])
    assert with_workers.texts == in_process.texts == {"code": len(texts)}


def test_a_finished_checkpoint_is_counted_afresh_and_a_foreign_one_refused(text_router, domain_texts, tmp_path):
    common = {"tokenizer": text_router.tokenizer, "vocab_size": text_router.config.vocab_size}
    first = count_experts({"code": domain_texts["code"]}, checkpoint_dir=tmp_path, checkpoint_every=1, **common)
    assert [path.name for path in tmp_path.iterdir()] == ["fit-state-00000-of-00001.safetensors"]

    again = count_experts({"code": domain_texts["code"]}, checkpoint_dir=tmp_path, **common)
    assert torch.equal(again.histograms["code"], first.histograms["code"])
    assert again.seconds["tokenize"] > 0.0  # a finished checkpoint is not resumed: its data may have changed since

    def stopping():
        yield {"text": "def"}
        raise RuntimeError("stopped")

    sources = {"code": domain_texts["code"], "stop": IterableDataset.from_generator(stopping)}
    with pytest.raises(RuntimeError, match="stopped"):  # leaves an unfinished checkpoint
        count_experts(sources, checkpoint_dir=tmp_path, **common)
    with pytest.raises(ValueError, match=r"different fit.*expert 'code'"):
        count_experts({**sources, "code": domain_texts["legal"]}, checkpoint_dir=tmp_path, **common)
    with pytest.raises(ValueError, match=r"different fit.*max_tokens"):
        count_experts(sources, checkpoint_dir=tmp_path, max_tokens=10, **common)


def test_clear_errors_for_bad_sources(text_router, fit_data, tmp_path):
    common = {"tokenizer": text_router.tokenizer, "vocab_size": text_router.config.vocab_size}
    with pytest.raises(ValueError, match="no column 'body'"):
        count_experts({"legal": str(fit_data["legal"])}, text_column="body", **common)
    with pytest.raises(ValueError, match="no column 'body'"):
        count_experts({"docs": str(fit_data["docs"])}, text_column="body", **common)  # json: features unknown
    with pytest.raises(FileNotFoundError, match="No such file or directory"):
        open_text_source(str(tmp_path / "missing.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no \.txt"):
        open_text_source(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="not strings"):
        count_experts({"x": Dataset.from_dict({"text": ["a", None]})}, **common)
    with pytest.raises(ValueError, match="already has expert"):
        text_router.add_expert("code", texts=["def x"])
        fit_experts(text_router, {"code": ["def y"]})
    with pytest.raises(ValueError, match="Invalid expert name"):
        fit_experts(text_router, {"bad name": ["def y"]})


def test_streaming_sources_are_not_materialised(fit_data):
    dataset = open_text_source(str(fit_data["docs"]))
    assert isinstance(dataset, IterableDataset)
    assert json.loads(json.dumps(dataset.state_dict()))  # the position a checkpoint stores is plain JSON


def test_add_expert_from_a_dataset_is_the_fits_count_with_its_checks_and_bar(text_router, domain_texts, capfd):
    """``add_expert(dataset=...)`` counts through `count_experts`: the same histogram, bar and errors as a fit."""
    texts = domain_texts["legal"] * (2048 // len(domain_texts["legal"]) + 1)  # >= 2,048 texts: a bar by default
    data = Dataset.from_dict({"body": texts})
    options = {"tokenizer": text_router.tokenizer, "vocab_size": text_router.config.vocab_size}
    fitted = count_experts(
        {"legal": data}, ignored_token_ids=text_router.config.never_counted_ids, text_column="body", **options
    )
    capfd.readouterr()
    text_router.add_expert("legal", dataset=data, text_column="body")
    assert "Counting tokens of 'legal'" in capfd.readouterr().err
    assert torch.equal(text_router.store.histogram("legal"), fitted.histograms["legal"])
    assert torch.equal(text_router.store.histogram("legal"), _reference(text_router, texts))

    def broken():
        yield {"text": "def f ( ) : return"}
        yield {"text": "a \udcff b"}

    stream = IterableDataset.from_generator(broken)
    message = r"Expert 'broken': text 1 .*not valid Unicode"
    with pytest.raises(ValueError, match=message):
        count_experts({"broken": stream}, **options)
    with pytest.raises(ValueError, match=message):
        text_router.add_expert("broken", dataset=stream)
    assert text_router.expert_names == ["legal"]
