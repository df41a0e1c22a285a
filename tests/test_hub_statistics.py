"""Shareable statistics: publish one expert's histogram (or moments), add it elsewhere without the text."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ir3de_hf import ExpertStatistics, IR3DERouterModel, StatisticsError
from ir3de_hf.hub import push_statistics_to_hub


@pytest.fixture
def fitted(text_router, domain_texts) -> IR3DERouterModel:
    for name, texts in domain_texts.items():
        text_router.add_expert(name, texts=texts, description=f"{name} texts")
    return text_router


def empty_twin(router: IR3DERouterModel) -> IR3DERouterModel:
    return IR3DERouterModel.from_encoder(
        torch.nn.Embedding.from_pretrained(router.embed_tokens.weight), router.tokenizer
    )


def test_statistics_pushed_by_one_owner_add_the_expert_elsewhere_without_text(hub, fitted, domain_texts, expert_dir):
    for name in fitted.expert_names:
        push_statistics_to_hub(fitted.expert_statistics(name), f"owner/{name}-stats", expert="owner/expert")
    files = hub.files("owner/code-stats")
    assert sorted(files) == [".gitattributes", "README.md", "statistics.json", "statistics.safetensors"]
    metadata = json.loads(files["statistics.json"])
    assert metadata["kind"] == "histogram" and metadata["token_count"] == int(fitted.expert_counts[0].sum())
    assert metadata["tokenizer_fingerprint"] == fitted.config.tokenizer_fingerprint
    assert 'router.add_expert_from_hub("owner/code-stats", expert="owner/expert")' in files["README.md"].decode()

    other = empty_twin(fitted)
    for name in fitted.expert_names:
        other.add_expert_from_hub(f"owner/{name}-stats", expert=str(expert_dir))

    assert other.expert_names == fitted.expert_names
    assert torch.equal(other.expert_counts, fitted.expert_counts)
    assert other.config.experts[0] == {"name": "code", "source": str(expert_dir), "description": "code texts"}
    prompts = [text for texts in domain_texts.values() for text in texts[:5]]
    assert torch.equal(other.route(prompts).logits, fitted.route(prompts).logits)


def test_statistics_round_trip_locally_and_pin_a_revision(hub, fitted, tmp_path):
    statistics = fitted.expert_statistics("legal")
    statistics.save(tmp_path)
    loaded = ExpertStatistics.load(tmp_path)
    assert loaded.name == "legal" and loaded.description == "legal texts" and loaded.kind == "histogram"
    assert torch.equal(loaded.histogram, fitted.expert_counts[1])

    first = push_statistics_to_hub(statistics, "owner/legal")
    push_statistics_to_hub(fitted.expert_statistics("code"), "owner/legal")
    other = empty_twin(fitted)
    other.add_expert_from_hub("owner/legal", revision=first.oid, name="law")
    assert other.expert_names == ["law"]
    assert torch.equal(other.expert_counts[0], fitted.expert_counts[1])


def test_foreign_fingerprint_is_refused_and_the_router_is_unchanged(fitted, tmp_path, word_tokenizer):
    fitted.expert_statistics("code").save(tmp_path)
    word_tokenizer.add_tokens(["a-token-the-other-tokenizer-lacks"])
    other = IR3DERouterModel.from_encoder(torch.nn.Embedding(len(word_tokenizer), 4), word_tokenizer)
    with pytest.raises(StatisticsError, match="were counted with another tokenizer"):
        other.add_expert_from_hub(tmp_path)
    assert other.expert_names == [] and other.expert_counts.shape == (0, len(word_tokenizer))


def test_wrong_shapes_and_inconsistent_files_are_refused(fitted, tmp_path):
    fitted.expert_statistics("code").save(tmp_path)
    metadata = json.loads((tmp_path / "statistics.json").read_text())

    save_file({"histogram": torch.zeros(7, dtype=torch.int64)}, tmp_path / "statistics.safetensors")
    with pytest.raises(StatisticsError, match=r"the histogram must be \d+ non-negative int64 counts"):
        ExpertStatistics.load(tmp_path)

    save_file({"histogram": fitted.expert_counts[0].clone()}, tmp_path / "statistics.safetensors")
    (tmp_path / "statistics.json").write_text(json.dumps({**metadata, "token_count": 5}))
    with pytest.raises(StatisticsError, match="the files do not belong together"):
        ExpertStatistics.load(tmp_path)

    (tmp_path / "statistics.json").write_text(json.dumps({**metadata, "kind": "moments"}))
    with pytest.raises(StatisticsError, match="is inconsistent"):
        ExpertStatistics.load(tmp_path)

    (tmp_path / "statistics.json").write_text(json.dumps({**metadata, "tokenizer_fingerprint": None}))
    with pytest.raises(StatisticsError, match="no tokenizer fingerprint"):
        ExpertStatistics.load(tmp_path)
    assert fitted.expert_names == ["code", "legal", "docs"]


def test_missing_statistics_repo_and_revision_are_clear_errors(hub, fitted):
    with pytest.raises(StatisticsError, match="neither a local directory nor a Hub repository"):
        fitted.add_expert_from_hub("owner/nothing-here")
    push_statistics_to_hub(fitted.expert_statistics("code"), "owner/code")
    with pytest.raises(StatisticsError, match="no such revision"):
        fitted.add_expert_from_hub("owner/code", revision="v2", name="code2")
    assert fitted.expert_names == ["code", "legal", "docs"]


def test_moment_statistics_need_the_exact_encoder(fitted, tmp_path):
    fitted.add_expert("imported", moments=fitted.store.moments("code"))
    statistics = fitted.expert_statistics("imported")
    assert statistics.kind == "moments" and statistics.token_count == int(fitted.expert_counts[0].sum())
    statistics.save(tmp_path)

    twin = empty_twin(fitted)
    twin.add_expert_from_hub(tmp_path)
    assert twin.config.experts == [{"name": "imported", "statistics": "moments"}]
    assert torch.equal(twin.store.imported_moments("imported")[0], fitted.store.imported_moments("imported")[0])
    perturbed = torch.nn.Embedding.from_pretrained(fitted.embed_tokens.weight + 1e-3)
    other = IR3DERouterModel.from_encoder(perturbed, fitted.tokenizer)
    with pytest.raises(StatisticsError, match="were computed with another embedding table"):
        other.add_expert_from_hub(tmp_path)
