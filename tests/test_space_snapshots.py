"""The Space's router snapshots and endpoint functions, on a small real router (no server): edits publish a new
router and never touch the one in use, an edit equals a fit from scratch, and visitors' bad input is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gradio as gr
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "space_app"))

import endpoints
from router_snapshots import RouterHolder, clone_router

from ir3de_hf import IR3DERouterModel


@pytest.fixture(scope="module")
def _holder(_word_tokenizer, domain_texts: dict[str, list[str]]) -> RouterHolder:
    """A router with one-hot features (a per-word frequency table: small and accurate) and experts code and legal,
    fitted on every other chunk."""
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(torch.eye(len(_word_tokenizer))))
    router.tokenizer = _word_tokenizer
    router.config.pad_token_id = _word_tokenizer.pad_token_id
    router.config.ignored_token_ids = list(_word_tokenizer.all_special_ids)
    for name in ("code", "legal"):
        router.add_expert(name, texts=domain_texts[name][::2])
    return RouterHolder(lambda: router)


@pytest.fixture
def holder(_holder: RouterHolder) -> RouterHolder:
    """The module's holder, back at its starting router for every test (that router is never modified)."""
    _holder.reset()
    return _holder


def test_clone_shares_the_encoder_and_owns_its_statistics(holder: RouterHolder) -> None:
    router = holder.current
    clone = clone_router(router)
    assert clone.embed_tokens.weight.data_ptr() == router.embed_tokens.weight.data_ptr()
    assert clone.tokenizer is router.tokenizer
    assert clone.expert_counts.data_ptr() != router.expert_counts.data_ptr()
    assert clone.config is not router.config and clone.config.experts == router.config.experts
    assert not any(tensor.is_meta for tensor in clone.state_dict().values())
    torch.testing.assert_close(clone.ridge_solution(), router.ridge_solution(), rtol=0, atol=0)


def test_an_edit_publishes_a_new_router_and_leaves_the_old_one_intact(holder, domain_texts) -> None:
    before = holder.current
    probe = domain_texts["docs"][1::2][:8]
    logits_before = before.route(probe).logits.clone()
    after = holder.edit(lambda router: router.add_expert("docs", texts=domain_texts["docs"][::2]))
    assert holder.current is after and after is not before
    assert before.expert_names == ["code", "legal"] and after.expert_names == ["code", "legal", "docs"]
    torch.testing.assert_close(before.route(probe).logits, logits_before, rtol=0, atol=0)
    assert after.route(probe).expert_names.count("docs") >= 6
    assert holder.reset() is before and holder.current is before


def test_edited_snapshots_equal_a_fit_from_scratch(holder, domain_texts) -> None:
    """The clone reuses the published router's per-expert moments: the result must still be the exact fit."""
    start = holder.current
    holder.edit(lambda router: router.add_expert("docs", texts=domain_texts["docs"][::2]))
    edited = holder.edit(lambda router: router.remove_expert("legal"))
    scratch = IR3DERouterModel(start.config.__class__(**{**start.config.to_dict(), "experts": []}))
    scratch.load_state_dict({"embed_tokens.weight": start.embed_tokens.weight}, strict=False)
    scratch.tokenizer = start.tokenizer
    for name in ("code", "docs"):
        scratch.add_expert(name, texts=domain_texts[name][::2])
    for mine, theirs in zip(edited.ridge_solution(), scratch.ridge_solution(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-9)


def test_a_failed_edit_publishes_nothing(holder, domain_texts) -> None:
    before = holder.current
    with pytest.raises(gr.Error, match="already exists"):
        endpoints.add_expert(holder, "code", "def f(x): return x")
    with pytest.raises(gr.Error, match="no usable token"):
        endpoints.add_expert(holder, "blank", "[PAD] <s>")
    assert holder.current is before


def test_route_json_explains_the_decision(holder, domain_texts) -> None:
    prompt = domain_texts["code"][1][:300]
    result = endpoints.route(holder, prompt)
    assert result["expert"] == "code" and result["can_generate"] is False
    assert set(result["scores"]) == {"code", "legal"} and result["margin"] > 0
    assert result["scores"]["code"] - result["scores"]["legal"] == pytest.approx(result["margin"], abs=1e-5)
    assert "".join(piece["text"] for piece in result["tokens"]) == prompt
    votes = [piece["vote"] for piece in result["tokens"]]
    assert set(votes) <= {"code", "legal", None} and votes.count("code") > votes.count("legal")
    json.dumps(result, allow_nan=False)  # what the API sends must be plain JSON


def test_special_tokens_do_not_vote_and_give_no_decision(holder) -> None:
    result = endpoints.route(holder, "[PAD] <s>")
    assert result["expert"] is None and result["no_evidence"] is True and result["can_generate"] is False
    assert all(piece["vote"] is None for piece in result["tokens"])


def test_add_and_remove_change_the_expert_table(holder, domain_texts, tmp_path) -> None:
    upload = tmp_path / "docs.jsonl"
    upload.write_text("\n".join(json.dumps({"text": text}) for text in domain_texts["docs"][::2]) + "\n")
    table = endpoints.add_expert(holder, "docs", "", str(upload))
    row = table["experts"][-1]
    assert row == {"name": "docs", "source": "text (added here)", "tokens": row["tokens"], "can_generate": False}
    assert row["tokens"] > 1000
    assert endpoints.route(holder, domain_texts["docs"][3])["expert"] == "docs"
    table = endpoints.remove_expert(holder, "docs")
    assert [row["name"] for row in table["experts"]] == ["code", "legal"]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("", "Type a prompt"), ("   ", "Type a prompt"), ("x" * (endpoints.MAX_PROMPT_CHARS + 1), "at most 4,000")],
)
def test_prompts_are_checked(holder, prompt, message) -> None:
    with pytest.raises(gr.Error, match=message):
        endpoints.route(holder, prompt)


@pytest.mark.parametrize("name", ["-dash", "has space", "../up", "x" * 65])
def test_expert_names_follow_the_registry_rule(holder, name) -> None:
    with pytest.raises(gr.Error, match="Invalid expert name"):
        endpoints.add_expert(holder, name, "some text")


@pytest.mark.parametrize("name", [None, "", "   "])
def test_an_expert_needs_a_name(holder, name) -> None:
    with pytest.raises(gr.Error, match="Give the new expert a name"):
        endpoints.add_expert(holder, name, "some text")


def test_uploads_and_sizes_are_checked(holder, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(gr.Error, match=r"bad.jsonl, line 2: expected an object with a string 'text'"):
        endpoints.add_expert(holder, "bad", "", str(bad))
    csv = tmp_path / "data.csv"
    csv.write_text("text\nhello\n")
    with pytest.raises(gr.Error, match=r"upload a \.txt file or a \.jsonl"):
        endpoints.add_expert(holder, "csv", "", str(csv))
    with pytest.raises(gr.Error, match="at most 2,000,000 bytes"):
        endpoints.add_expert(holder, "huge", "word " * 500_000)
    with pytest.raises(gr.Error, match="some text"):
        endpoints.add_expert(holder, "empty", "  ", None)


def test_removing_is_checked(holder) -> None:
    with pytest.raises(gr.Error, match="No expert named 'nope'"):
        endpoints.remove_expert(holder, "nope")
    endpoints.remove_expert(holder, "legal")
    with pytest.raises(gr.Error, match="at least one expert"):
        endpoints.remove_expert(holder, "code")


def test_an_expert_without_a_model_cannot_answer(holder, domain_texts) -> None:
    with pytest.raises(gr.Error, match="'code' was added from text"):
        next(endpoints.generate(holder, domain_texts["code"][1], None, 8))
    with pytest.raises(gr.Error, match="max_new_tokens must be between 1 and 256"):
        next(endpoints.generate(holder, "hello", "code", 0))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "number of tokens, got NoneType None"),
        ("12", "number of tokens, got str '12'"),
        (True, "number of tokens, got bool True"),
        ([8], "number of tokens, got list"),
        (float("nan"), "whole number of tokens, got nan"),
        (float("inf"), "whole number of tokens, got inf"),
        (2.5, r"whole number of tokens, got 2\.5"),
        (0, r"between 1 and 256, got 0\."),
        (-1, r"between 1 and 256, got -1\."),
        (257, r"between 1 and 256, got 257\."),
    ],
)
def test_max_new_tokens_is_a_whole_number_in_range(holder, value, message) -> None:
    with pytest.raises(gr.Error, match=message):
        next(endpoints.generate(holder, "hello", "code", value))


def test_max_new_tokens_may_be_a_whole_float(holder) -> None:
    """The slider's 48.0 is 48: it passes the checks and reaches the expert (which, added from text, has no model)."""
    with pytest.raises(gr.Error, match="'code' was added from text"):
        next(endpoints.generate(holder, "hello", "code", 48.0))


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (b"", ".txt", "has no text"),
        (b" \n\t\r\n ", ".txt", "has no text"),
        (b'{"text": " "}\n\n', ".jsonl", "has no text"),
        (b"\xff\xfe not utf-8", ".txt", "is not UTF-8 text"),
        (b'{"text": "\\ud800"}\n', ".jsonl", r"line 1 is not valid Unicode text"),
    ],
)
def test_uploads_without_usable_text_are_refused(holder, tmp_path, content, suffix, message) -> None:
    upload = tmp_path / f"upload{suffix}"
    upload.write_bytes(content)
    before = holder.current
    for file in (str(upload), {"path": str(upload), "orig_name": upload.name, "meta": {"_type": "gradio.FileData"}}):
        with pytest.raises(gr.Error, match=message):
            endpoints.add_expert(holder, "new", "  ", file)
    assert holder.current is before


def test_unprocessed_upload_payloads_are_read(holder, domain_texts, tmp_path) -> None:
    """What the public event passes without preprocessing: Gradio's file payload, named after the visitor's file
    (a byte order mark is not text)."""
    cached = tmp_path / "cached-name"
    cached.write_bytes(b"\xef\xbb\xbf" + " ".join(domain_texts["docs"][::2]).encode())
    table = endpoints.add_expert(holder, "docs", None, {"path": str(cached), "orig_name": "docs.txt"})
    assert table["experts"][-1]["name"] == "docs"
    with pytest.raises(gr.Error, match=r"notes\.md: upload a \.txt file"):
        endpoints.add_expert(holder, "more", None, {"path": str(cached), "orig_name": "notes.md"})
    with pytest.raises(gr.Error, match=r"must be an uploaded \.txt or \.jsonl file"):
        endpoints.add_expert(holder, "more", None, 42)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda h: endpoints.route(h), "Type a prompt first"),
        (lambda h: endpoints.route(h, ["a list"]), r"prompt must be text \(a string\), got list"),
        (lambda h: endpoints.route(h, "abc \ud800"), "prompt is not valid Unicode text"),
        (lambda h: endpoints.add_expert(h, "new", 3.5), "text must be a string, got float 3.5"),
        (lambda h: endpoints.add_expert(h, "new", "ok \udfff"), "pasted text is not valid Unicode"),
        (lambda h: endpoints.remove_expert(h), "Name the expert to remove; the experts are: code, legal"),
        (lambda h: endpoints.remove_expert(h, {"name": "code"}), "expert to remove must be a string, got dict"),
        (lambda h: next(endpoints.generate(h, "hello", 3, 8)), "expert to answer must be a string, got int 3"),
    ],
)
def test_values_of_the_wrong_kind_are_refused(holder, call, message) -> None:
    before = holder.current
    with pytest.raises(gr.Error, match=message):
        call(holder)
    assert holder.current is before
