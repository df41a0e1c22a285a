"""Export of a router's experts (and of shared statistics) as IR3DE-AXL files that AXL peers load unchanged.

Each file is read back with plain ``torch.load(weights_only=True)`` and merged the way an AXL peer does (written here,
independently of our importer); the round trip export -> import must give the same head.
"""

from __future__ import annotations

import pytest
import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.cli import main
from ir3de_hf.reference_import import export_reference, import_reference_router
from ir3de_hf.shared_statistics import StatisticsError


@pytest.fixture
def fitted(expert_dir, domain_texts) -> IR3DERouterModel:
    router = IR3DERouterModel.from_encoder(expert_dir, ridge_lambda=1e-2, balance_experts=False)  # as AXL peers fit
    for name, texts in domain_texts.items():
        router.add_expert(name, texts=texts)
    return router


def peer_head(content: dict, ridge_lambda: float) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """An AXL peer's ``get_token_router``: A summed over all entries, b stacked per tag, solve, column norms."""
    a = sum(entry.double() for entry in content["A"])
    b_per_tag: dict[str, torch.Tensor] = {}
    for tag, b in zip(content["domain_tags"], content["b"], strict=True):
        b_per_tag[tag] = b_per_tag[tag] + b.double() if tag in b_per_tag else b.double()
    solution = torch.linalg.solve(
        a + ridge_lambda * torch.eye(a.shape[0], dtype=torch.float64), torch.stack(list(b_per_tag.values()), dim=1)
    )
    norm = solution[:-1].norm(dim=0)
    return list(b_per_tag), solution[:-1] / norm, solution[-1] / norm


def test_an_exported_file_has_the_axl_layout_and_gives_a_peer_our_head(fitted, expert_dir, tmp_path):
    path = export_reference(fitted, tmp_path / "router.pth")
    content = torch.load(path, weights_only=True)

    assert set(content) >= {"A", "b", "domain_tags", "datasets_names", "tokenizer", "embedder"}
    assert content["domain_tags"] == content["datasets_names"] == ["code", "legal", "docs"]
    assert content["tokenizer"] == content["embedder"] == str(expert_dir)
    assert isinstance(content["A"], list) and isinstance(content["b"], list)
    assert all(a.dtype == torch.float32 and a.shape == (33, 33) for a in content["A"])
    assert all(b.dtype == torch.float32 and b.shape == (33,) for b in content["b"])
    assert [round(float(b[-1])) for b in content["b"]] == fitted.store.token_counts()
    assert content["includes_padding"] is False

    tags, weight, bias = peer_head(content, fitted.config.ridge_lambda)
    assert tags == fitted.expert_names
    ours_weight, ours_bias = fitted.ridge_solution(normalize=True)
    torch.testing.assert_close(weight, ours_weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(bias, ours_bias, rtol=0, atol=1e-6)


def test_export_then_import_gives_the_same_head(fitted, expert_dir, domain_texts, tmp_path):
    export_reference(fitted, tmp_path / "router.pth")
    imported = import_reference_router(tmp_path / "router.pth", encoder=expert_dir)

    assert imported.expert_names == fitted.expert_names
    assert [spec.includes_padding for spec in imported.config.expert_specs] == [None] * 3
    for ours, theirs in zip(imported.ridge_solution(), fitted.ridge_solution(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    prompts = [text for texts in domain_texts.values() for text in texts[:10]]
    fitted.config.naive_bayes_weight = 0  # AXL files carry moments, not the histograms the naive-Bayes term needs
    assert imported.route(prompts).expert_names == fitted.route(prompts).expert_names


def test_shared_statistics_save_as_one_axl_entry(fitted, expert_dir, tmp_path):
    histogram = fitted.expert_statistics("legal")
    with pytest.raises(StatisticsError, match="pass embeddings="):
        histogram.save_reference(tmp_path / "legal.pth")
    histogram.save_reference(tmp_path / "legal.pth", embeddings=fitted.embed_tokens.weight)
    content = torch.load(tmp_path / "legal.pth", weights_only=True)
    a_n, b_n = fitted.store.moments("legal")
    assert content["domain_tags"] == ["legal"]
    torch.testing.assert_close(content["A"][0], a_n.float(), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(content["b"][0], b_n.float(), rtol=1e-6, atol=1e-5)

    moments_router = import_reference_router(tmp_path / "legal.pth", encoder=expert_dir)
    moments_router.expert_statistics("legal").save_reference(tmp_path / "again.pth")  # moments need no table
    again = torch.load(tmp_path / "again.pth", weights_only=True)
    assert torch.equal(again["A"][0], content["A"][0]) and torch.equal(again["b"][0], content["b"][0])


def test_the_cli_imports_and_exports(fitted, expert_dir, tmp_path, capsys):
    fitted.save_pretrained(tmp_path / "router")
    assert main(["export-reference", str(tmp_path / "router"), "--output", str(tmp_path / "two.pth"),
                 "--expert", "code", "--expert", "docs"]) == 0  # fmt: skip
    assert "wrote 2 expert(s)" in capsys.readouterr().out
    assert torch.load(tmp_path / "two.pth", weights_only=True)["domain_tags"] == ["code", "docs"]

    assert main(["import-reference", str(tmp_path / "two.pth"), "--encoder", str(expert_dir),
                 "--output", str(tmp_path / "imported")]) == 0  # fmt: skip
    assert "imported 2 expert(s) (code, docs)" in capsys.readouterr().out
    # The file names its embedder by a local path: without --encoder that folder is not read on the file's word.
    assert main(["import-reference", str(tmp_path / "two.pth"), "--output", str(tmp_path / "unread")]) == 1
    error = capsys.readouterr().err
    assert "names its embedder by the local path" in error and "--encoder" in error and error.count("\n") == 1
    assert not (tmp_path / "unread").exists()
    imported = IR3DERouterModel.from_pretrained(tmp_path / "imported")
    assert imported.expert_names == ["code", "docs"]

    assert main(["export-reference", str(tmp_path / "router"), "--output", "x.pth", "--expert", "poetry"]) == 1
    assert "must be distinct experts of the router" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    assert main(["import-reference", str(tmp_path / "junk.pth"), "--output", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("ir3de import-reference: error:") and "could not be read as a torch file" in error
    assert error.count("\n") == 1
