"""Model cards: metadata, huggingface_hub's own parsing, a snapshot of the whole text, and the saved files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from ir3de_hf import CardInfo, IR3DERouterModel
from ir3de_hf.calibration import CalibrationReport
from ir3de_hf.evaluation import routing_report
from ir3de_hf.model_card import router_card

SNAPSHOT = Path(__file__).parent / "snapshots" / "router_card.md"


@pytest.fixture
def router() -> IR3DERouterModel:
    """A deterministic router with a Hub-id encoder, an adapter expert, a full-model expert and a local one."""
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding(12, 4), aggregation="entropy_top_k")
    router.config.encoder = "HuggingFaceTB/SmolLM2-135M-Instruct"
    for index, name in enumerate(["code", "legal", "bio"]):
        router.add_expert(name, histogram=torch.arange(12) % (index + 2))
    router.config.experts = [
        {
            "name": "code",
            "source": "me/smollm2-code-lora",
            "revision": "v1.0",
            "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "description": "Python | stdlib",
        },
        {"name": "legal", "source": "me/legal-model", "description": "SPDX licenses"},
        {"name": "bio", "source": "/models/bio"},
    ]
    return router


@pytest.fixture
def report():
    truth = ["code"] * 4 + ["legal"] * 4 + ["bio"] * 2
    routed = ["code"] * 4 + ["legal"] * 3 + ["code"] + ["bio", None]
    return routing_report(truth, routed, labels=["code", "legal", "bio"])


def card_info(report) -> CardInfo:
    return CardInfo(
        repo_id="me/ir3de-demo",
        evaluation=report,
        evaluation_dataset="me/ir3de-multidomain",
        evaluation_split="test",
        datasets=["me/ir3de-multidomain"],
        tags=["smollm2"],
    )


def test_card_metadata_parses_with_huggingface_hub(router, report):
    card = ModelCard(
        str(
            router_card(
                router.config, router.store.token_counts(), card_info(report), confusion_image="confusion_matrix.png"
            )
        )
    )
    data = card.data.to_dict()
    assert data["library_name"] == "ir3de_hf"
    assert data["pipeline_tag"] == "text-classification"
    assert data["tags"] == ["ir3de", "router", "mixture-of-experts", "domain-routing", "smollm2"]
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data["datasets"] == ["me/ir3de-multidomain"]
    assert data["license"] == "apache-2.0"
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "ir3de-demo"
    assert [(r.metric_type, r.metric_value, r.dataset_type, r.dataset_split) for r in results] == [
        ("accuracy", 0.8, "me/ir3de-multidomain", "test"),
        ("recall", 0.75, "me/ir3de-multidomain", "test"),
    ]
    assert card.data.eval_results[0].task_type == "text-classification"


def test_card_text_matches_the_snapshot(router, report):
    text = str(
        router_card(
            router.config, router.store.token_counts(), card_info(report), confusion_image="confusion_matrix.png"
        )
    )
    if os.environ.get("IR3DE_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    assert text == SNAPSHOT.read_text()


def test_card_without_evaluation_or_hub_encoder_has_no_model_index_or_base_model(router):
    router.config.encoder = "/local/encoder"
    card = router_card(router.config, router.store.token_counts())
    assert "model-index" not in card.data.to_dict() and card.data.base_model is None
    assert "## Routing quality" not in card.text
    assert 'IR3DERouterModel.from_pretrained("path/to/this/router")' in card.text


def test_save_pretrained_writes_the_card_and_the_confusion_image(router, report, tmp_path):
    router.save_pretrained(tmp_path, card=card_info(report))
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "ir3de_hf"
    assert "![Confusion matrix](confusion_matrix.png)" in card.text
    assert IR3DERouterModel.from_pretrained(tmp_path).expert_names == ["code", "legal", "bio"]


# ---------------------------------------------------------------------------------------------- card as saved state


@pytest.fixture
def calibration() -> CalibrationReport:
    curve = [
        {"coverage": 1.0, "threshold": 0.0, "accuracy": 0.9},
        {"coverage": 0.8, "threshold": 0.7, "accuracy": 0.95},
    ]
    bins = [{"lower": 0.6, "confidence": 0.65, "accuracy": 0.7, "count": 4}]
    return CalibrationReport("entropy_top_k", 0.5, 0.7, 10, [16], 0.9, 0.8, 0.95, 0.01, 0.1, 0.3, 0.6, curve, bins)


def full_card(report, calibration) -> CardInfo:
    return CardInfo(
        evaluation=report,
        evaluation_dataset="me/ir3de-multidomain",
        evaluation_split="test",
        datasets=["me/ir3de-multidomain"],
        license="mit",
        tags=["smollm2"],
        sections="## Recipe\n\nCounted on our own shelf.",
        calibration=calibration,
    )


CARD_FILES = ("README.md", "card.json", "calibration.json", "confusion_matrix.png", "calibration.png")


def test_card_content_survives_load_then_save(router, report, calibration, tmp_path):
    calibration.apply(router.config)
    info = full_card(report, calibration)
    router.save_pretrained(tmp_path / "first", card=info)
    assert router.card == info  # the router keeps what its card says

    loaded = IR3DERouterModel.from_pretrained(tmp_path / "first")
    assert loaded.card == info
    loaded.save_pretrained(tmp_path / "second")  # no card= at all
    for name in CARD_FILES:
        assert (tmp_path / "second" / name).read_bytes() == (tmp_path / "first" / name).read_bytes(), name
    text = (tmp_path / "second" / "README.md").read_text()
    assert "## Recipe\n\nCounted on our own shelf." in text and calibration.markdown() in text
    assert "![Reliability diagram and coverage/accuracy curve](calibration.png)" in text
    assert "![Confusion matrix](confusion_matrix.png)" in text
    assert ModelCard.load(tmp_path / "second" / "README.md").data.license == "mit"
    assert json.loads((tmp_path / "second" / "calibration.json").read_text()) == calibration.to_dict()


def test_a_card_update_replaces_the_fields_it_sets_and_keeps_the_others(router, report, calibration, tmp_path):
    router.save_pretrained(tmp_path / "first", card=full_card(report, calibration))
    loaded = IR3DERouterModel.from_pretrained(tmp_path / "first")
    loaded.save_pretrained(tmp_path / "second", card=CardInfo(sections="## Newer", tags=["other"]))
    again = IR3DERouterModel.from_pretrained(tmp_path / "second")
    assert again.card == replace(full_card(report, calibration), sections="## Newer", tags=["other"])
    assert json.loads((tmp_path / "second" / "card.json").read_text()) == {
        "evaluation": report.to_dict(),
        "evaluation_dataset": "me/ir3de-multidomain",
        "evaluation_split": "test",
        "datasets": ["me/ir3de-multidomain"],
        "license": "mit",
        "tags": ["other"],
        "sections": "## Newer",
    }


def test_a_router_without_card_content_saves_no_card_files(router, tmp_path):
    router.save_pretrained(tmp_path)
    assert not (tmp_path / "card.json").exists() and not (tmp_path / "calibration.json").exists()
    assert IR3DERouterModel.from_pretrained(tmp_path).card == CardInfo()


def test_a_malformed_card_file_is_refused_with_its_name(router, tmp_path):
    router.save_pretrained(tmp_path, card=CardInfo(sections="## S"))
    (tmp_path / "card.json").write_text('{"sections": "## S", "colour": "blue"}')
    with pytest.raises(ValueError, match=r"card.json or calibration.json is malformed .*'colour'"):
        IR3DERouterModel.from_pretrained(tmp_path)


def test_calibrate_puts_its_report_on_the_card(half_fitted_router, domain_texts, tmp_path):
    texts = [chunk for chunks in domain_texts.values() for chunk in chunks[1::2]]
    labels = [name for name, chunks in domain_texts.items() for _ in chunks[1::2]]
    report = half_fitted_router.calibrate(texts, labels)
    assert half_fitted_router.card.calibration is report
    half_fitted_router.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "calibration.json").read_text()) == report.to_dict()
    assert "![Reliability diagram" in (tmp_path / "README.md").read_text()


# ---------------------------------------------------------------------------------------------- card fixes


def test_the_card_links_the_package_and_names_experts_without_a_model(router):
    router.config.experts = [*router.config.experts[:2], {"name": "bio"}]
    text = router_card(router.config, router.store.token_counts()).text
    assert "built with [ir3de_hf](https://pypi.org/project/ir3de-hf/)" in text
    assert "| 1 | `legal` | [me/legal-model](https://huggingface.co/me/legal-model) | main | model |" in text
    assert "| 2 | `bio` | — | — | statistics only (routing, no model) | 18 |  |" in text


def test_cards_render_without_jinja2(router, report):
    code = (
        "import sys\n"
        "sys.modules['jinja2'] = None  # any import of jinja2 fails\n"
        "import torch\n"
        "from ir3de_hf import IR3DERouterModel\n"
        "from ir3de_hf.model_card import router_card, statistics_card\n"
        "router = IR3DERouterModel.from_encoder(torch.nn.Embedding(12, 4))\n"
        "router.add_expert('a', histogram=torch.arange(12))\n"
        "print(router_card(router.config, router.store.token_counts()).data.library_name)\n"
        "from ir3de_hf import ExpertStatistics\n"
        "shared = ExpertStatistics('a', tokenizer_fingerprint='fp', vocab_size=12, histogram=torch.arange(12))\n"
        "print(statistics_card(shared).data.tags[-1])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["ir3de_hf", "ir3de-statistics"]
