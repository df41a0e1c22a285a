"""Model cards: metadata, huggingface_hub's own parsing, a snapshot of the whole text, and the saved files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from ir3de_hf import CardInfo, IR3DERouterModel
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
