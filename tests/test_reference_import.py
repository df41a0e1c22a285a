"""Import of the reference implementation's .pth statistics into a router of moment-based experts."""

from __future__ import annotations

import fractions

import pytest
import torch
from safetensors.torch import load_file

from ir3de_hf import IR3DERouterModel
from ir3de_hf.reference_import import import_reference_router, load_reference_statistics
from ir3de_hf.statistics import ridge_solve


@pytest.fixture
def fitted(text_router, domain_texts) -> IR3DERouterModel:
    for name, texts in domain_texts.items():
        text_router.add_expert(name, texts=texts)
    return text_router


def reference_file(router: IR3DERouterModel, path, expert_dir, per_domain: bool = False):
    """What the reference's generate_router accumulates (float32 A and b = [b_1 .. b_N]), saved as it would be."""
    per_expert = [router.store.moments(name) for name in router.expert_names]
    a = torch.stack([a_n for a_n, _ in per_expert])
    content = {
        "A": (a if per_domain else a.sum(dim=0)).float(),
        "b": torch.stack([b_n for _, b_n in per_expert], dim=1).float(),
        "domain_tags": router.expert_names,
        "tokenizer": str(expert_dir),
        "embedder": str(expert_dir),
    }
    torch.save(content, path)
    return content


@pytest.mark.parametrize("per_domain", [False, True])
def test_imported_router_routes_like_the_reference_head(fitted, domain_texts, expert_dir, tmp_path, per_domain):
    content = reference_file(fitted, tmp_path / "router.pth", expert_dir, per_domain)
    imported = import_reference_router(tmp_path / "router.pth")

    assert imported.expert_names == ["code", "legal", "docs"]
    assert [spec.statistics for spec in imported.config.expert_specs] == ["moments"] * 3
    assert int(imported.expert_counts.abs().sum()) == 0
    a = content["A"].double().sum(dim=0) if per_domain else content["A"].double()
    weight, bias = ridge_solve(a, content["b"].double(), imported.config.ridge_lambda)
    got_weight, got_bias = imported.ridge_solution(normalize=False)
    torch.testing.assert_close(got_weight, weight, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got_bias, bias, rtol=1e-9, atol=1e-12)
    prompts = [text for texts in domain_texts.values() for text in texts[:6]]
    assert imported.route(prompts).expert_names == fitted.route(prompts).expert_names
    token_scores = imported.route(prompts[:1]).token_scores
    assert token_scores.shape[-1] == 3 and torch.isfinite(token_scores).all()


def test_moment_experts_save_load_update_and_remove(fitted, domain_texts, expert_dir, tmp_path):
    reference_file(fitted, tmp_path / "router.pth", expert_dir, per_domain=True)
    imported = import_reference_router(tmp_path / "router.pth", aggregation="majority_vote")
    imported.add_expert("extra", texts=domain_texts["code"][:5])
    imported.save_pretrained(tmp_path / "saved")

    tensors = load_file(tmp_path / "saved" / "model.safetensors")
    assert tensors["imported_moments_a"].shape == (3, 33, 33) and tensors["imported_moments_a"].dtype == torch.float64
    assert "moments" in (tmp_path / "saved" / "README.md").read_text()
    loaded = IR3DERouterModel.from_pretrained(tmp_path / "saved", dtype=torch.bfloat16)
    assert loaded.imported_moments_a.dtype == torch.float64
    prompts = [text for texts in domain_texts.values() for text in texts[:6]]
    assert torch.equal(loaded.route(prompts).logits, imported.route(prompts).logits)

    loaded.update_expert("legal", texts=domain_texts["legal"])  # moments -> histogram
    loaded.remove_expert("code")
    imported_note = "imported from reference IR3DE statistics"
    assert loaded.config.experts == [
        {"name": "legal", "description": imported_note},
        {"name": "docs", "description": imported_note, "statistics": "moments"},
        {"name": "extra"},
    ]
    assert loaded.imported_moments_a.shape == (1, 33, 33)
    assert torch.equal(loaded.expert_counts[0], fitted.expert_counts[1])
    loaded.remove_expert("docs")
    assert "imported_moments_a" not in dict(loaded.named_buffers())
    loaded.save_pretrained(tmp_path / "plain")
    assert set(load_file(tmp_path / "plain" / "model.safetensors")) == {"embed_tokens.weight", "expert_counts"}


def test_pickled_objects_are_never_loaded(tmp_path, expert_dir):
    torch.save(
        {"A": torch.eye(3), "b": torch.ones(3, 1), "domain_tags": ["x"], "path": fractions.Fraction(1, 3)},
        tmp_path / "evil.pth",
    )
    with pytest.raises(ValueError, match="contain objects other than tensors, lists and strings"):
        load_reference_statistics(tmp_path / "evil.pth")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"A": torch.eye(3), "b": torch.ones(3, 1), "domain_tags": ["x"], "steps": 5}, "entry 'steps' is a int"),
        ({"A": torch.eye(3), "b": torch.ones(3, 1)}, r"lack \['domain_tags'\]"),
        ({"A": torch.eye(4), "b": torch.ones(3, 1), "domain_tags": ["x"]}, r"A must have shape \(3, 3\)"),
        ({"A": torch.eye(3), "b": torch.ones(3, 2), "domain_tags": ["x"]}, r"b must have shape \(d\+1, 1\)"),
        ({"A": torch.eye(3), "b": torch.ones(3, 1), "domain_tags": "x"}, "domain_tags must be a non-empty list"),
    ],
)
def test_malformed_reference_files_are_clear_errors(tmp_path, content, message):
    torch.save(content, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=message):
        load_reference_statistics(tmp_path / "bad.pth")


def test_moments_of_another_encoder_width_leave_nothing_half_built(fitted, expert_dir, tmp_path):
    content = reference_file(fitted, tmp_path / "router.pth", expert_dir)
    content["A"], content["b"] = content["A"][1:, 1:], content["b"][1:]  # d = 31 instead of 32
    torch.save(content, tmp_path / "narrow.pth")
    with pytest.raises(ValueError, match=r"moments must have shapes \(33, 33\) and \(33,\)"):
        import_reference_router(tmp_path / "narrow.pth")
