"""The Space's router snapshots and endpoint functions, on a small real router (no server): edits publish a new
router for the editing session only and never touch the one in use, an edit equals a fit from scratch, sessions are
bounded, and visitors' bad input is refused. Also the Space's pure display helpers (palette, whitespace tokens)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "space_app"))

import app
import display
import endpoints
from router_snapshots import (
    MAX_SESSION_BYTES,
    MAX_SESSIONS,
    RouterHolder,
    SessionEvicted,
    SessionRouters,
    clone_router,
    router_bytes,
    storages,
)

from ir3de_hf import IR3DERouterModel


@pytest.fixture(scope="module")
def _routers(_word_tokenizer, domain_texts: dict[str, list[str]]) -> SessionRouters:
    """A router with one-hot features (a per-word frequency table: small and accurate) and experts code and legal,
    fitted on every other chunk."""
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding.from_pretrained(torch.eye(len(_word_tokenizer))))
    router.tokenizer = _word_tokenizer
    router.config.pad_token_id = _word_tokenizer.pad_token_id
    router.config.ignored_token_ids = list(_word_tokenizer.all_special_ids)
    for name in ("code", "legal"):
        router.add_expert(name, texts=domain_texts[name][::2])
    return SessionRouters(lambda: router)


@pytest.fixture
def routers(_routers: SessionRouters) -> Iterator[SessionRouters]:
    """The module's routers with no session of its own: every session starts at the starting router (which is
    never modified)."""
    for key in _routers.sessions:
        _routers.end(key)
    yield _routers
    _routers.max_sessions = MAX_SESSIONS
    _routers.max_bytes = MAX_SESSION_BYTES


@pytest.fixture
def holder(routers: SessionRouters) -> RouterHolder:
    """One visitor's session."""
    return routers.session("visitor")


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
    added = {
        "name": "docs",
        "source": "text (added here)",
        "link": None,
        "tokens": row["tokens"],
        "can_generate": False,
    }
    assert row == added
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


# ------------------------------------------------------------------------------------------------------ sessions


def test_each_session_edits_its_own_router(routers, domain_texts) -> None:
    alice, bob = routers.session("alice"), routers.session("bob")
    start = routers.start
    endpoints.add_expert(alice, "docs", " ".join(domain_texts["docs"][::2]))
    endpoints.remove_expert(bob, "legal")
    assert alice.current.expert_names == ["code", "legal", "docs"]
    assert bob.current.expert_names == ["code"]
    assert routers.start is start and start.expert_names == ["code", "legal"]
    assert routers.session("carol").current is start  # a session that never edited uses the starting router
    assert endpoints.experts(routers.session("carol"))["experts"][1]["name"] == "legal"
    # the copies share the frozen encoder and the tokenizer: a session costs its statistics only
    assert alice.current.embed_tokens.weight.data_ptr() == start.embed_tokens.weight.data_ptr()
    assert alice.current.tokenizer is start.tokenizer
    endpoints.reset(bob)
    assert bob.current is start and routers.sessions == ["alice"]
    routers.end("alice")  # the visitor closed the tab (demo.unload)
    assert alice.current is start and routers.sessions == []


def test_sessions_are_capped_and_the_least_recently_used_is_evicted(routers) -> None:
    routers.max_sessions = 2
    for key in ("a", "b", "c"):
        routers.edit(key, lambda router: router.remove_expert("legal"))
        if key == "b":
            assert routers.current("a").expert_names == ["code"]  # "a" is now used more recently than "b"
    assert routers.sessions == ["a", "c"]
    assert routers.current("b") is routers.start  # evicted: back on the starting router
    assert routers.current("a").expert_names == ["code"]


def test_a_failed_edit_creates_no_session(routers) -> None:
    with pytest.raises(gr.Error, match="No expert named"):
        endpoints.remove_expert(routers.session("x"), "nope")
    with pytest.raises(gr.Error, match="already exists"):
        endpoints.add_expert(routers.session("x"), "code", "def f(x): return x")
    assert routers.sessions == []


def test_the_session_cap_is_checked() -> None:
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="max_sessions must be an integer >= 1"):
            SessionRouters(lambda: None, max_sessions=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_the_session_byte_bound_is_checked(bad) -> None:
    with pytest.raises(ValueError, match="max_bytes must be an integer >= 1"):
        SessionRouters(lambda: None, max_bytes=bad)  # type: ignore[arg-type]


def test_a_session_costs_the_tensors_it_does_not_share(routers, domain_texts) -> None:
    """An unedited copy shares every tensor with the starting router (0 bytes); an added expert costs its
    statistics, far less than the router with its embedding table."""
    start = routers.start
    assert router_bytes(clone_router(start), storages(start)) == 0
    routers.edit("a", lambda router: router.add_expert("docs", texts=domain_texts["docs"][::2]))
    added = router_bytes(routers.current("a"), storages(start))
    assert 0 < added < router_bytes(start) and routers.held_bytes == added


def _add_docs(routers: SessionRouters, key: str, domain_texts) -> None:
    routers.edit(key, lambda router: router.add_expert("docs", texts=domain_texts["docs"][::2]))


def test_sessions_are_bounded_by_bytes_and_the_evicted_visitor_is_told_once(routers, domain_texts) -> None:
    _add_docs(routers, "probe", domain_texts)
    one = routers.held_bytes
    routers.end("probe")
    routers.max_bytes = 2 * one + one // 2  # two sessions with an added expert fit, three do not
    for key in ("a", "b", "c"):
        _add_docs(routers, key, domain_texts)
    assert routers.sessions == ["b", "c"] and routers.held_bytes == 2 * one <= routers.max_bytes
    with pytest.raises(
        SessionEvicted, match=r"^Your session's edits were cleared: .* at most 32 sessions and [\d.,]+ MB"
    ):
        routers.session("a")
    assert routers.session("a").current is routers.start  # told once: from then on, the starting router
    assert endpoints.experts(routers.session("a"))["experts"][-1]["name"] == "legal"
    assert routers.current("b").expert_names[-1] == "docs"  # the others keep their edits, untold
    routers.session("b")


def test_a_visitor_who_left_or_reset_is_not_told(routers, domain_texts) -> None:
    routers.max_sessions = 1
    _add_docs(routers, "a", domain_texts)
    _add_docs(routers, "b", domain_texts)  # evicts "a"
    routers.end("a")  # the tab was closed meanwhile
    routers.session("a")
    _add_docs(routers, "a", domain_texts)  # evicts "b", whose visitor then edits again: the edit clears the notice
    _add_docs(routers, "b", domain_texts)
    assert routers.sessions == ["b"]
    routers.session("b")


def test_an_edit_over_the_byte_bound_alone_is_refused_and_changes_nothing(routers, domain_texts) -> None:
    _add_docs(routers, "a", domain_texts)
    routers.max_bytes = 100_000
    before = routers.current("a")
    with pytest.raises(gr.Error, match=r"would make your session's router hold [\d.,]+ MB, more than the 0\.1 MB"):
        endpoints.add_expert(routers.session("a"), "more", " ".join(domain_texts["legal"][::2]))
    assert routers.current("a") is before and routers.sessions == ["a"]
    routers.session("a")  # no notice: nothing was evicted


# ------------------------------------------------------------------------------------------------ sampling, chat


@pytest.mark.parametrize(
    ("temperature", "top_p", "message"),
    [
        (None, 1.0, "temperature must be a number, got NoneType None"),
        ("0.7", 1.0, "temperature must be a number, got str '0.7'"),
        (True, 1.0, "temperature must be a number, got bool True"),
        (float("nan"), 1.0, "temperature must be a finite number, got nan"),
        (float("inf"), 1.0, "temperature must be a finite number, got inf"),
        (-0.1, 1.0, r"temperature must be between 0 \(greedy\) and 2, got -0\.1\."),
        (2.5, 1.0, r"temperature must be between 0 \(greedy\) and 2, got 2\.5\."),
        (10**400, 1.0, r"temperature must be between 0 \(greedy\) and 2, got 10+\.\.\."),
        (0.7, None, "top_p must be a number, got NoneType None"),
        (0.7, float("nan"), "top_p must be a finite number, got nan"),
        (0.7, 0, r"top_p must be greater than 0 and at most 1, got 0\."),
        (0.7, -0.5, r"top_p must be greater than 0 and at most 1, got -0\.5\."),
        (0.7, 1.01, r"top_p must be greater than 0 and at most 1, got 1\.01\."),
        (0, 0, r"top_p must be greater than 0"),  # checked even when greedy
    ],
)
def test_sampling_arguments_are_checked(holder, temperature, top_p, message) -> None:
    with pytest.raises(gr.Error, match=message):
        next(endpoints.generate(holder, "hello", "code", 8, temperature, top_p))
    with pytest.raises(gr.Error, match=message):
        next(endpoints.chat(holder, "hello", [], 8, temperature, top_p))


@pytest.mark.parametrize(
    ("temperature", "top_p", "expected"),
    [
        (0, 0.5, {"do_sample": False}),
        (0.0, 1, {"do_sample": False}),
        (0.7, 0.9, {"do_sample": True, "temperature": 0.7, "top_p": 0.9}),
        (2, 1, {"do_sample": True, "temperature": 2.0, "top_p": 1.0}),
    ],
)
def test_temperature_zero_is_greedy(temperature, top_p, expected) -> None:
    assert endpoints._checked_sampling(temperature, top_p) == expected


def test_a_chat_turn_is_routed_on_the_last_message(holder, domain_texts) -> None:
    """Experts added from text have no model: the turn names the expert and says so instead of answering."""
    history = [
        {"role": "user", "content": domain_texts["code"][1]},
        {"role": "assistant", "content": "Routed to **code** · margin 0.300 · confident (≥ 0.03)\n\nsure"},
    ]
    answer = list(endpoints.chat(holder, domain_texts["legal"][1], history, 8))
    assert len(answer) == 1
    line, _, rest = answer[0].partition("\n\n")
    assert line.startswith("Routed to **legal** · margin ")
    assert line.endswith("confident (no threshold)")  # the router has neither min_confidence nor min_margin
    assert "'legal' was added from text" in rest
    with pytest.raises(gr.Error, match="Type a prompt first"):
        next(endpoints.chat(holder, "  ", history, 8))
    with pytest.raises(gr.Error, match="chat history must be a list of messages, got str"):
        next(endpoints.chat(holder, "hello", "not a list", 8))


def test_chat_history_keeps_the_text_and_drops_the_routing_lines() -> None:
    history = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Routed to **code** · margin 0.300 · confident (≥ 0.03)\n\nan answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},  # Gradio's normalised messages
        {"role": "assistant", "content": [{"type": "text", "text": "Routed to **legal** · the only expert\n\nmore"}]},
        {"role": "assistant", "content": "thinking", "metadata": {"title": "a thought"}},
        {"role": "system", "content": "ignored"},
        {"role": "user", "content": [{"path": "/tmp/picture.png"}]},  # a file: no text
    ]
    assert endpoints._chat_turns(history) == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "more"},
    ]
    with pytest.raises(
        gr.Error, match=r"history's message 7 must be an object with a 'role' .*got str 'not a message'"
    ):
        endpoints._chat_turns([*history, "not a message"])  # refused since issue 23 (it was skipped)


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ("notalist", r"must be a list of messages, got str 'notalist': send a list of \{'role'"),
        ({"role": "user", "content": "hi"}, r"must be a list of messages, got dict"),
        (42, r"must be a list of messages, got int 42"),
        ([["hello", "hi there"]], r"message 0 must be an object with a 'role'.*got list \['hello', 'hi there'\]"),
        ([{"content": "no role"}], r"message 0 must be an object with a 'role'.*got dict"),
        ([{"role": "user", "content": "ok"}, {"role": "robot", "content": "x"}], r"message 1 must be an object"),
    ],
    ids=["string", "one-message", "number", "pairs", "no-role", "unknown-role"],
)
def test_a_chat_history_that_is_not_a_list_of_messages_is_refused(holder, history, message) -> None:
    with pytest.raises(gr.Error, match=message):
        next(endpoints.chat(holder, "hello", history, 8))
    assert holder.current is holder.routers.start


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        ("def add(x):\n    # one more\n    return x + 1", "```\ndef add(x):\n    # one more\n    return x + 1\n```"),
        ("# a shell comment\nls -la", "```\n# a shell comment\nls -la\n```"),
        ("int main() {\n  return 0;\n}", "```\nint main() {\n  return 0;\n}\n```"),
        ("Here it is:\n```python\nprint(1)\n```", "Here it is:\n```python\nprint(1)\n```"),  # fenced already
        ("The licensee may not sublicense.\nIt needs consent.", "The licensee may not sublicense.\nIt needs consent."),
        ("", ""),
    ],
    ids=["python", "comment-heading", "braces", "fenced", "prose", "empty"],
)
def test_code_answers_are_shown_verbatim_in_a_code_block(answer, shown) -> None:
    assert display.answer_markdown(answer) == shown
    assert display.answer_text(shown) == answer  # what the expert sees of its answer on the next turn


def test_a_chat_history_of_code_answers_gives_the_expert_its_own_text() -> None:
    code = "def add(x):\n    # one more\n    return x + 1"
    shown = f"Routed to **code** · margin 0.300 · confident (≥ 0.03)\n\n{display.answer_markdown(code)}"
    assert endpoints._chat_turns([{"role": "assistant", "content": shown}]) == [{"role": "assistant", "content": code}]


def test_route_says_whether_the_router_is_confident(holder, domain_texts) -> None:
    """The rule of `generate` and the server: without a threshold every decision with evidence is confident; with
    the config's ``min_margin`` a margin under it is unsure, one at it confident."""
    prompt = domain_texts["code"][1][:300]
    result = endpoints.route(holder, prompt)
    assert result["min_margin"] is None and result["min_confidence"] is None and result["confidence"] == "confident"
    assert endpoints.routing_line(result).endswith(" · confident (no threshold)")
    router = clone_router(holder.current)  # the starting router is never modified
    margin = float(router.route([prompt]).margins[0])
    session = SessionRouters(lambda: router).session("visitor")
    router.config.min_margin = margin
    assert endpoints.route(session, prompt)["confidence"] == "confident"  # at the threshold
    router.config.min_margin = margin + 1e-3
    unsure = endpoints.route(session, prompt)
    assert unsure["confidence"] == "unsure" and unsure["min_margin"] == margin + 1e-3
    assert endpoints.routing_line(unsure).endswith(f" · unsure (< {margin + 1e-3:g})")
    assert "**confident** (≥ 0.03)" in app.margin_text({"margin": 0.2, "confidence": "confident", "min_margin": 0.03})
    assert "**unsure** (< 0.03" in app.margin_text({"margin": 0.01, "confidence": "unsure", "min_margin": 0.03})
    assert "**confident** (no threshold)" in app.margin_text({"margin": 0.2, "confidence": "confident"})


def test_a_calibrated_router_is_judged_by_its_calibrated_probability(holder, domain_texts) -> None:
    router = clone_router(holder.current)  # the starting router is never modified
    prompts = [text[:120] for name in ("code", "legal") for text in domain_texts[name][1::2]]
    labels = [name for name in ("code", "legal") for _ in domain_texts[name][1::2]]
    router.calibrate(prompts, labels, max_fallback_rate=0.2)
    result = endpoints.route(SessionRouters(lambda: router).session("visitor"), domain_texts["code"][1][:300])
    assert result["min_confidence"] == router.config.min_confidence
    output = router.route([domain_texts["code"][1][:300]])
    assert result["probability"] == pytest.approx(float(output.probabilities.max()))
    assert result["confidence"] == ("confident" if bool(output.confident[0]) else "unsure")
    line = endpoints.routing_line({**result, "expert": "code"})
    assert line.startswith("Routed to **code** · probability ") and f"{router.config.min_confidence:.3g})" in line
    shown = {"margin": 0.2, "confidence": "confident", "probability": 0.99, "min_confidence": 0.9, "min_margin": 0.03}
    assert "probability 0.990: **confident** (≥ 0.9" in app.margin_text(shown)


# --------------------------------------------------------------------------------------------- sources and links


def test_local_sources_are_never_shown(tmp_path) -> None:
    assert endpoints.public_source(str(tmp_path)) == "local"
    assert endpoints.public_source("./experts/code") == "local"
    assert endpoints.public_source("~/models/code") == "local"
    assert endpoints.public_source("/no/such/dir") == "local"
    assert endpoints.public_source(None) == "text (added here)"
    assert endpoints.public_source("org/expert") == "org/expert"
    assert endpoints.hub_link(str(tmp_path)) is None and endpoints.hub_link(None) is None
    assert endpoints.hub_link("org/expert") == "https://huggingface.co/org/expert"
    assert endpoints.hub_link("org/expert", "v1") == "https://huggingface.co/org/expert/tree/v1"
    assert endpoints.hub_link("datasets/org/bench") == "https://huggingface.co/datasets/org/bench"


def test_the_links_name_hub_sources_and_hide_local_paths(holder, tmp_path, monkeypatch) -> None:
    router = holder.current.copy()
    router.config.encoder = str(tmp_path / "encoder")
    router.config.experts[0]["source"] = str(tmp_path / "experts" / "code")  # a model on the Space's disk
    router.config.experts[0]["base_model"] = "org/base"
    router.config.experts[1]["source"] = "org/legal-expert"
    monkeypatch.setenv(app.ROUTER_ENV, str(tmp_path / "router"))
    monkeypatch.delenv(app.BENCHMARK_ENV, raising=False)
    text = app.links_markdown(router)
    assert str(tmp_path) not in text and "/" + tmp_path.parts[1] not in text.replace("https://", "")
    assert "(https://arxiv.org/abs/2606.06098)" in text and "**Router**: stored with this Space (local)" in text
    assert "**Encoder**: local" in text and "ir3de_hf.data.load_benchmark()" in text
    assert "**Expert models**: code (local), [legal](https://huggingface.co/org/legal-expert)" in text
    assert "**Base model**: [org/base](https://huggingface.co/org/base)" in text
    monkeypatch.setenv(app.ROUTER_ENV, "org/router")
    monkeypatch.setenv(app.BENCHMARK_ENV, "org/ir3de-multidomain")
    router.config.encoder = "HuggingFaceTB/SmolLM2-135M-Instruct"
    text = app.links_markdown(router)
    assert "[org/router](https://huggingface.co/org/router)" in text
    assert "[org/ir3de-multidomain](https://huggingface.co/datasets/org/ir3de-multidomain)" in text
    assert "[HuggingFaceTB/SmolLM2-135M-Instruct](https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct)" in text


# ------------------------------------------------------------------------------------------------------- display


def test_the_first_twelve_colours_are_distinct_as_bars_and_as_token_chips() -> None:
    """CIEDE2000 >= 10 between any two of the first 12 colours, drawn full (bars) and at Gradio's 50% tint (token
    chips). The former palette fails it: its 7th colour (teal) was 6.2 from politics green as chips."""
    first = display.PALETTE[:12]
    assert len(set(display.PALETTE)) == len(display.PALETTE) >= endpoints.MAX_EXPERTS
    assert display.min_distance(first) >= 10 and display.min_distance(first, display.CHIP_ALPHA) >= 10
    assert display.min_distance(display.PALETTE[:7], display.CHIP_ALPHA) >= 15
    former = ["#3b82f6", "#ef4444", "#10b981", "#f59e0b", "#8b5cf6", "#ec4899", "#14b8a6"]
    assert display.min_distance(former, display.CHIP_ALPHA) < 10
    names = [f"e{i}" for i in range(30)]
    colors = display.expert_colors(names)
    assert [colors[name] for name in names[:24]] == display.PALETTE  # by expert index


def test_delta_e_matches_the_published_ciede2000_pairs() -> None:
    """Pairs 1, 7, 9, 17 and 25 of Sharma, Wu & Dalal (2005)."""
    pairs = [
        ((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425),
        ((50, 0, 0), (50, -1, 2), 2.3669),
        ((50, 2.49, -0.001), (50, -2.49, 0.0009), 7.1792),
        ((50, 2.5, 0), (73, 25, -18), 27.1492),
        ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ]
    for first, second, expected in pairs:
        assert display.delta_e_lab(first, second) == pytest.approx(expected, abs=1e-4)
    assert display.delta_e("#ffffff", "#ffffff") == 0 and display.tint("#000000") == "#808080"


@pytest.mark.parametrize(
    ("token", "shown"),
    [(" ", "·"), ("\n", "⏎"), ("\n\n", "⏎⏎"), ("    ", "····"), ("\t", "→"), ("\r\n", "⏎"), (" the", " the")],
)
def test_whitespace_tokens_are_drawn_visible(token, shown) -> None:
    assert display.visible_token(token) == shown


def test_the_token_view_shows_whitespace_and_a_new_decision_clears_the_answers() -> None:
    """What SmolLM2's byte-level tokens give: a line end and an indentation are tokens of their own, with votes."""
    result = {
        "expert": "code",
        "margin": 0.2,
        "confidence": "confident",
        "min_margin": 0.03,
        "can_generate": True,
        "aggregation": "weighted_mean",
        "scores": {"code": 0.3, "legal": 0.1},
        "tokens": [
            {"text": "def", "vote": "code"},
            {"text": "\n", "vote": "legal"},
            {"text": "    ", "vote": "code"},
            {"text": " ", "vote": None},  # a gap between tokens: no chip, left as it is
            {"text": "x", "vote": "code"},
        ],
    }
    decision, _, votes, answer, compare = app.render_route(result)
    assert "Routed to **code**, margin 0.200: **confident** (≥ 0.03)" in decision
    pieces = [(piece["token"], piece["class_or_confidence"]) for piece in votes.value]
    assert pieces == [("def", "code"), ("⏎", "legal"), ("····", "code"), (" ", None), ("x", "code")]
    assert answer == "" and compare == ""  # the previous prompt's answers go with the new decision
