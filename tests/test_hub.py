"""Hub round trips through the loopback Hub (tests/hub_server.py) with the real huggingface_hub and transformers."""

from __future__ import annotations

import json

import huggingface_hub.constants as hub_constants
import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file

from ir3de_hf import IR3DERouterModel
from ir3de_hf.hub import pull_router, push_router


@pytest.fixture
def fitted(text_router, domain_texts) -> IR3DERouterModel:
    for name, texts in domain_texts.items():
        text_router.add_expert(name, texts=texts, description=f"{name} texts")
    return text_router


def assert_same_router(loaded: IR3DERouterModel, original: IR3DERouterModel, prompts: list[str]) -> None:
    assert isinstance(loaded, IR3DERouterModel)
    assert loaded.config.experts == original.config.experts
    assert torch.equal(loaded.expert_counts, original.expert_counts)
    assert torch.equal(loaded.embed_tokens.weight, original.embed_tokens.weight)
    assert loaded.tokenizer.get_vocab() == original.tokenizer.get_vocab()
    before, after = original.route(prompts), loaded.route(prompts)
    assert torch.equal(before.expert_ids, after.expert_ids)
    assert torch.equal(before.logits, after.logits)


def prompts_of(domain_texts: dict[str, list[str]]) -> list[str]:
    return [text for texts in domain_texts.values() for text in texts[:4]]


def test_push_then_from_pretrained_by_repo_id_returns_an_identical_router(hub, fitted, domain_texts):
    commit = fitted.push_to_hub("org/router")

    files = hub.files("org/router")
    assert sorted(files) == [
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert files["README.md"].decode().startswith("---\nlibrary_name: ir3de_hf\n")
    assert hub.commits("org/router")[-1] == commit.oid
    assert_same_router(IR3DERouterModel.from_pretrained("org/router"), fitted, prompts_of(domain_texts))


def test_pushing_twice_makes_two_revisions_and_revision_loads_the_older(hub, fitted, domain_texts):
    first = fitted.push_to_hub("org/router")
    fitted.remove_expert("docs")
    second = push_router(fitted, "org/router", commit_message="drop docs")

    assert hub.commits("org/router") == [hub.commits("org/router")[0], first.oid, second.oid]
    assert IR3DERouterModel.from_pretrained("org/router").expert_names == ["code", "legal"]
    older = IR3DERouterModel.from_pretrained("org/router", revision=first.oid)
    assert older.expert_names == ["code", "legal", "docs"]
    assert int(older.expert_counts[2].sum()) > 0


def test_offline_mode_with_a_filled_cache_loads_by_repo_id_without_a_server(hub, fitted, domain_texts, monkeypatch):
    fitted.push_to_hub("org/router")
    IR3DERouterModel.from_pretrained("org/router")  # fills the cache
    hub.stop()
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    assert_same_router(IR3DERouterModel.from_pretrained("org/router"), fitted, prompts_of(domain_texts))


def test_pull_router_downloads_a_loadable_directory(hub, fitted, domain_texts, tmp_path):
    commit = fitted.push_to_hub("org/router")
    directory = pull_router("org/router", tmp_path / "pulled", revision=commit.oid)
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in directory.iterdir()}
    assert_same_router(IR3DERouterModel.from_pretrained(directory), fitted, prompts_of(domain_texts))


def test_a_router_directory_can_be_pushed_as_it_is(hub, fitted, domain_texts, tmp_path):
    fitted.save_pretrained(tmp_path)
    push_router(tmp_path, "org/from-dir")
    assert_same_router(IR3DERouterModel.from_pretrained("org/from-dir"), fitted, prompts_of(domain_texts))


def test_missing_repo_revision_and_foreign_model_type_are_clear_errors(hub, fitted, expert_dir, tmp_path):
    fitted.push_to_hub("org/router")
    HfApi().create_repo("org/llama")
    HfApi().upload_folder(repo_id="org/llama", folder_path=expert_dir)

    with pytest.raises(OSError, match="org/nope is not a local folder and is not a valid model identifier"):
        IR3DERouterModel.from_pretrained("org/nope")
    with pytest.raises(OSError, match="v9 is not a valid git identifier"):
        IR3DERouterModel.from_pretrained("org/router", revision="v9")
    with pytest.raises(ValueError, match=r"org/llama is not an IR3DE router: its config\.json has model_type 'llama'"):
        IR3DERouterModel.from_pretrained("org/llama")
    with pytest.raises(ValueError, match="org/llama is not an IR3DE router"):
        pull_router("org/llama", tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()
    model_files = [path for method, path in hub.requests if path.startswith("/org/llama/") and "safetensors" in path]
    assert model_files == []  # refused on config.json, before any weight was read


@pytest.fixture
def encoder_repo(hub, expert_dir) -> str:
    """The tiny Llama (and its tokenizer) as a Hub repository: the encoder of a by-reference router."""
    HfApi().create_repo("org/tiny-encoder")
    HfApi().upload_folder(repo_id="org/tiny-encoder", folder_path=expert_dir)
    return "org/tiny-encoder"


def test_encoder_by_reference_leaves_the_table_out_and_pins_the_encoder(hub, encoder_repo, domain_texts, tmp_path):
    router = IR3DERouterModel.from_encoder(encoder_repo)
    for name, texts in domain_texts.items():
        router.add_expert(name, texts=texts)
    self_contained = router.push_to_hub("org/full")
    by_reference = router.push_to_hub("org/by-ref", encoder_by_reference=True)

    encoder_commit = hub.commits(encoder_repo)[-1]
    config = json.loads(hub.files("org/by-ref")["config.json"])
    assert config["encoder"] == encoder_repo and config["encoder_revision"] == encoder_commit
    assert config["encoder_by_reference"] is True and config["encoder_sha256"].startswith("sha256:")
    assert router.config.encoder_revision is None and router.config.encoder_by_reference is False
    full_size = len(hub.files("org/full", self_contained.oid)["model.safetensors"])
    ref_size = len(hub.files("org/by-ref", by_reference.oid)["model.safetensors"])
    table_bytes = router.config.vocab_size * router.config.hidden_size * 4
    assert full_size - ref_size >= table_bytes
    (tmp_path / "ref.safetensors").write_bytes(hub.files("org/by-ref")["model.safetensors"])
    assert "embed_tokens.weight" not in load_file(tmp_path / "ref.safetensors")
    assert set(load_file(tmp_path / "ref.safetensors")) == set(router.statistics_tensors())
    assert (
        "Encoder:** [org/tiny-encoder](https://huggingface.co/org/tiny-encoder)"
        in hub.files("org/by-ref")["README.md"].decode()
    )

    loaded = IR3DERouterModel.from_pretrained("org/by-ref")
    assert_same_router(loaded, router, prompts_of(domain_texts))
    assert loaded.config.encoder_by_reference is False  # materialised: a plain save is self-contained again


def test_a_changed_encoder_is_refused_at_load(fitted, expert_dir, tiny_llama, tmp_path):
    encoder_copy = tmp_path / "encoder"
    tiny_llama.save_pretrained(encoder_copy)
    fitted.config.encoder = str(encoder_copy)
    fitted.save_pretrained(tmp_path / "router", encoder_by_reference=True)
    assert_same_router(IR3DERouterModel.from_pretrained(tmp_path / "router"), fitted, ["def f(x): return x"])

    weights = load_file(encoder_copy / "model.safetensors")
    weights["model.embed_tokens.weight"][0, 0] += 1.0
    save_file(weights, encoder_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="does not have the embedding table this router was saved with"):
        IR3DERouterModel.from_pretrained(tmp_path / "router")


def test_by_reference_needs_a_named_encoder(hub, fitted, expert_dir, tmp_path):
    with pytest.raises(ValueError, match=r"encoder_by_reference=True needs config\.encoder"):
        fitted.save_pretrained(tmp_path, encoder_by_reference=True)
    assert not (tmp_path / "config.json").exists()
    fitted.config.encoder = str(expert_dir)
    with pytest.raises(ValueError, match="needs the encoder to be a Hub id"):
        fitted.push_to_hub("org/router", encoder_by_reference=True)


# ---------------------------------------------------------------------------------------------- the card travels


def test_push_carries_the_card_content_and_a_pulled_router_keeps_it(hub, fitted, domain_texts, tmp_path):
    from ir3de_hf import CardInfo
    from ir3de_hf.evaluation import routing_report

    labels = list(domain_texts)
    prompts = [texts[0] for texts in domain_texts.values()]
    report = routing_report(labels, fitted.route(prompts).expert_names, labels=labels)
    fitted.save_pretrained(tmp_path / "router", card=CardInfo(evaluation=report, sections="## Recipe\n\nOurs."))
    push_router(tmp_path / "router", "org/carded")  # a directory: loaded, then saved into a scratch folder

    files = hub.files("org/carded")
    for name in ("card.json", "confusion_matrix.png"):
        assert files[name] == (tmp_path / "router" / name).read_bytes(), name
    readme = files["README.md"].decode()
    assert "## Recipe\n\nOurs." in readme and "![Confusion matrix](confusion_matrix.png)" in readme
    assert 'IR3DERouterModel.from_pretrained("org/carded")' in readme
    loaded = IR3DERouterModel.from_pretrained("org/carded")
    assert loaded.card == CardInfo(evaluation=report, sections="## Recipe\n\nOurs.")


def test_ir3de_calibrate_then_ir3de_push_publishes_the_diagram_and_the_report(
    hub, half_fitted_router, domain_texts, tmp_path, capsys
):
    from ir3de_hf.cli import main

    half_fitted_router.save_pretrained(tmp_path / "router")
    rows = [
        {"text": " ".join(chunk.split()[start : start + 3]), "domain": name}
        for name, chunks in domain_texts.items()
        for chunk in chunks[1::2]
        for start in range(0, len(chunk.split()) - 3, 3)
    ]
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    router = str(tmp_path / "router")
    assert main(["calibrate", router, "--data", str(data), "--tokens", "2", "3", "--target-accuracy", "0.97"]) == 0
    assert main(["push", router, "me/calibrated"]) == 0
    capsys.readouterr()

    files = hub.files("me/calibrated")
    saved = tmp_path / "router"
    assert files["calibration.png"] == (saved / "calibration.png").read_bytes()
    assert files["calibration.png"][:4] == b"\x89PNG"
    report = json.loads(files["calibration.json"])
    assert report == json.loads((saved / "calibration.json").read_text()) and report["prompt_tokens"] == [2, 3]
    readme = files["README.md"].decode()
    assert "![Reliability diagram and coverage/accuracy curve](calibration.png)" in readme
    assert f"Calibrated on {report['prompts']} labelled prompts (2/3 tokens)" in readme
    assert IR3DERouterModel.from_pretrained("me/calibrated").card.calibration.to_dict() == report
