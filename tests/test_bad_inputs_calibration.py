"""Bad input to calibration (`router.calibrate`, `fit_calibration` and ``ir3de calibrate``): each case gets an error
of the right type (or exit code) whose one line names the problem and says what to do, and leaves the router as it
was: its config, its calibration report, its decisions, and the saved directory byte for byte.

The rules that decide whether a calibration can be fitted live in one place (`ir3de_hf.calibration`), so the API
and the command line refuse the same data with the same message: one expert, one class, missing experts."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from cli_errors import directory_digest, error_line, refused
from ir3de_hf import IR3DERouterModel
from ir3de_hf.calibration import CalibrationReport, fit_calibration
from ir3de_hf.cli import main

PROBES = ["def decode ( self , s ) : return", "the Licensee agrees to the terms", "The following keywords"]
WORDS = 4  # words per calibration prompt: short enough that the router is sometimes wrong


def _windows(chunks: list[str], words: int = WORDS) -> list[str]:
    tokens = " ".join(chunks).split()
    return [" ".join(tokens[start : start + words]) for start in range(0, len(tokens) - words, words)]


@pytest.fixture(scope="module")
def _fitted(_word_tokenizer, domain_texts) -> IR3DERouterModel:
    """One-hot router (experts code, legal, docs) fitted on every other chunk; tests get a `copy` of it."""
    one_hot = torch.nn.Embedding.from_pretrained(torch.eye(len(_word_tokenizer)))
    router = IR3DERouterModel.from_encoder(one_hot, _word_tokenizer)
    for name, chunks in domain_texts.items():
        router.add_expert(name, texts=chunks[::2])
    return router


@pytest.fixture
def router(_fitted) -> IR3DERouterModel:
    return _fitted.copy()


@pytest.fixture(scope="module")
def held_out(domain_texts) -> dict[str, list[str]]:
    """Short windows of the held-out chunks, per expert."""
    return {name: _windows(chunks[1::2]) for name, chunks in domain_texts.items()}


def _data(held_out: dict[str, list[str]], *names: str) -> tuple[list[str], list[str]]:
    texts = [text for name in names for text in held_out[name]]
    return texts, [name for name in names for _ in held_out[name]]


def _snapshot(router: IR3DERouterModel) -> tuple:
    routed = router.route(PROBES)
    calibration = router.card.calibration
    return (
        list(router.expert_names),
        json.dumps(router.config.to_dict(), sort_keys=True, default=str),
        None if calibration is None else calibration.to_dict(),
        routed.expert_ids.tolist(),
        routed.logits.tolist(),
        routed.probabilities.tolist(),
    )


# ---------------------------------------------------------------------------------------------- the API

ALL = ("code", "legal", "docs")
Call = Callable[[IR3DERouterModel, dict[str, list[str]]], object]


def _calibrate(*names: str, **kwargs: Any) -> Call:
    """Calibrates on the held-out prompts of ``names`` with ``kwargs``."""
    return lambda router, held_out: router.calibrate(*_data(held_out, *names), **kwargs)


def _remove(*names: str) -> Callable[[IR3DERouterModel], None]:
    def prepare(router: IR3DERouterModel) -> None:
        for name in names:
            router.remove_expert(name)

    return prepare


def _add_extra(router: IR3DERouterModel) -> None:
    router.add_expert("extra", texts=["import json , textwrap ; the Licensee shall keep the keywords"] * 3)


def _texts_and_labels(texts: object, labels: object, **kwargs: Any) -> Call:
    return lambda router, _: router.calibrate(texts, labels, **kwargs)  # type: ignore[arg-type]


def _real_and_empty(router: IR3DERouterModel, held_out: dict[str, list[str]]) -> object:
    """Code prompts, and legal/docs prompts that are empty: only one expert among the prompts the router can use."""
    return router.calibrate([*held_out["code"][:20], "", ""], ["code"] * 20 + ["legal", "docs"])


# (case, prepare the router before the snapshot or None, the call, the error, a fragment of its message)
API_CASES: list[tuple[str, Callable[[IR3DERouterModel], None] | None, Call, type[Exception], str]] = [
    # one class: T -> 0 and a threshold of 1.0 before
    ("one class", None, _calibrate("code"), ValueError, r"Only expert 'code' appears .*at least two experts"),
    (
        "one class, target accuracy",
        None,
        _calibrate("legal", target_accuracy=0.9),
        ValueError,
        r"Only expert 'legal' appears.*cannot be fitted from one class",
    ),
    (
        "one class, missing allowed",
        None,
        _calibrate("docs", allow_missing_experts=True),
        ValueError,
        r"Only expert 'docs' appears",
    ),
    (
        "one class among the usable prompts",
        None,
        _real_and_empty,
        ValueError,
        r"Only expert 'code' appears in the calibration prompts that have a token the router can use",
    ),
    # experts without calibration prompts
    (
        "an expert missing",
        None,
        _calibrate("code", "legal"),
        ValueError,
        r"no prompt of the router's expert\(s\) 'docs'.*allow_missing_experts=True",
    ),
    (
        "an added expert, the old data",
        _add_extra,
        _calibrate(*ALL, max_fallback_rate=0.1),
        ValueError,
        r"no prompt of the router's expert\(s\) 'extra'",
    ),
    (
        "two experts missing",
        _add_extra,
        _calibrate("code", "legal"),
        ValueError,
        r"expert\(s\) 'docs', 'extra': add held-out prompts labelled with them",
    ),
    # routers that cannot be calibrated
    (
        "a one-expert router",
        _remove("legal", "docs"),
        _calibrate("code"),
        ValueError,
        r"at least two experts.*one \('code'\)",
    ),
    (
        "a router without experts",
        _remove(*ALL),
        _calibrate("code"),
        ValueError,
        r"at least two experts, this one has none",
    ),
    # prompt_tokens
    (
        "prompt_tokens a float",
        None,
        _calibrate(*ALL, prompt_tokens=2.5),
        TypeError,
        r"prompt_tokens must be an integer >= 1 or a list of them .*2\.5",
    ),
    (
        "prompt_tokens a string",
        None,
        _calibrate(*ALL, prompt_tokens="16"),
        TypeError,
        r"prompt_tokens must be an integer >= 1.*'16'",
    ),
    (
        "prompt_tokens a bool",
        None,
        _calibrate(*ALL, prompt_tokens=True),
        TypeError,
        r"prompt_tokens must be an integer >= 1.*True",
    ),
    (
        "prompt_tokens with a float",
        None,
        _calibrate(*ALL, prompt_tokens=[3, 2.5]),
        TypeError,
        r"prompt_tokens must be.*\[3, 2\.5\]",
    ),
    (
        "prompt_tokens empty",
        None,
        _calibrate(*ALL, prompt_tokens=[]),
        ValueError,
        r"prompt_tokens must be an integer >= 1.*\[\]",
    ),
    (
        "prompt_tokens negative",
        None,
        _calibrate(*ALL, prompt_tokens=-3),
        ValueError,
        r"prompt_tokens must be an integer >= 1.*-3",
    ),
    (
        "prompt_tokens with a zero",
        None,
        _calibrate(*ALL, prompt_tokens=[3, 0]),
        ValueError,
        r"prompt_tokens must be an integer >= 1",
    ),
    (
        "prompt_tokens repeated",
        None,
        _calibrate(*ALL, prompt_tokens=[3, 3]),
        ValueError,
        r"lists \[3\] more than once; give each",
    ),
    # targets
    (
        "target_accuracy a string",
        None,
        _calibrate(*ALL, target_accuracy="0.9"),
        TypeError,
        r"target_accuracy must be a number in \(0, 1\], got '0\.9' \(a str\)",
    ),
    (
        "target_accuracy a bool",
        None,
        _calibrate(*ALL, target_accuracy=True),
        TypeError,
        r"target_accuracy must be a number.*\(a bool\)",
    ),
    (
        "target_accuracy zero",
        None,
        _calibrate(*ALL, target_accuracy=0),
        ValueError,
        r"target_accuracy must be a number in \(0, 1\], got 0",
    ),
    (
        "target_accuracy negative",
        None,
        _calibrate(*ALL, target_accuracy=-0.5),
        ValueError,
        r"target_accuracy must be a number in \(0, 1\]",
    ),
    (
        "target_accuracy infinite",
        None,
        _calibrate(*ALL, target_accuracy=float("inf")),
        ValueError,
        r"target_accuracy must be.*inf",
    ),
    (
        "max_fallback_rate zero",
        None,
        _calibrate(*ALL, max_fallback_rate=0.0),
        ValueError,
        r"max_fallback_rate must be a number in \(0, 1\)",
    ),
    (
        "max_fallback_rate negative",
        None,
        _calibrate(*ALL, max_fallback_rate=-0.1),
        ValueError,
        r"max_fallback_rate must be a number in \(0, 1\)",
    ),
    (
        "max_fallback_rate NaN",
        None,
        _calibrate(*ALL, max_fallback_rate=float("nan")),
        ValueError,
        r"max_fallback_rate must be.*nan",
    ),
    (
        "max_fallback_rate a list",
        None,
        _calibrate(*ALL, max_fallback_rate=[0.1]),
        TypeError,
        r"max_fallback_rate must be a number.*\(a list\)",
    ),
    # allow_missing_experts
    (
        "allow_missing_experts a string",
        None,
        _calibrate("code", "legal", allow_missing_experts="yes"),
        TypeError,
        r"allow_missing_experts must be True or False, got 'yes'",
    ),
    (
        "allow_missing_experts an int",
        None,
        _calibrate("code", "legal", allow_missing_experts=1),
        TypeError,
        r"allow_missing_experts must be True or False, got 1",
    ),
    # texts and labels
    ("texts None", None, _texts_and_labels(None, ["code"]), TypeError, r"texts must be a list .*got a NoneType"),
    ("labels None", None, _texts_and_labels(["def f"], None), TypeError, r"labels must be a list .*got a NoneType"),
    (
        "texts a set",
        None,
        _texts_and_labels({"def f", "the Licensee"}, ["code", "legal"]),
        TypeError,
        r"texts must be a list.*got a set",
    ),
    (
        "a label None",
        None,
        _texts_and_labels(["def f", "the Licensee"], ["code", None]),
        TypeError,
        r"labels must be expert names \(strings\); label 1 is None",
    ),
    ("a label an index", None, _texts_and_labels(["def f", "the Licensee"], [0, 1]), TypeError, r"label 0 is 0"),
    (
        "a text as bytes",
        None,
        _texts_and_labels([b"def f", "the Licensee"], ["code", "legal"]),
        TypeError,
        r"text 0 is a bytes",
    ),
    (
        "no usable token at all",
        None,
        _texts_and_labels(["", "", ""], list(ALL)),
        ValueError,
        r"No calibration prompt has a token the router can use .*give held-out prompts with real text",
    ),
]


@pytest.mark.parametrize(("case", "prepare", "call", "error", "message"), API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_calibration_input_is_refused_and_changes_nothing(router, held_out, case, prepare, call, error, message):
    if prepare is not None:
        prepare(router)
    before = _snapshot(router) if router.expert_names else None
    with pytest.raises(error, match=message) as raised:
        call(router, held_out)
    assert "\n" not in str(raised.value)
    if before is not None:
        assert _snapshot(router) == before
    assert router.config.min_confidence is None and router.config.calibration_temperatures == {}
    assert router.card.calibration is None


# fit_calibration: the pooled path applies the same rules to routing outputs
_LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.9, 0.0], [0.0, 0.0, 3.0]])
_EVIDENCE = torch.zeros(4, dtype=torch.bool)
POOLED_CASES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    (
        "one column",
        {"logits": _LOGITS[:, :1], "expert_names": ["a"]},
        ValueError,
        r"at least two experts.*one \('a'\)",
    ),
    ("one class", {"targets": torch.zeros(4, dtype=torch.long)}, ValueError, r"Only expert 'a' appears"),
    ("a missing expert", {"targets": torch.tensor([0, 1, 1, 0])}, ValueError, r"expert\(s\) 'c'"),
    (
        "names of the wrong length",
        {"expert_names": ["a", "b"]},
        ValueError,
        r"one column per expert name, got shape \(4, 3\) for 2 names",
    ),
    (
        "unnamed columns",
        {"expert_names": None, "targets": torch.tensor([0, 0, 1, 1])},
        ValueError,
        r"expert\(s\) 'expert 2'",
    ),
    (
        "allow_missing_experts None",
        {"allow_missing_experts": None},
        TypeError,
        r"allow_missing_experts must be True or False",
    ),
]


@pytest.mark.parametrize(("case", "change", "error", "message"), POOLED_CASES, ids=[c[0] for c in POOLED_CASES])
def test_pooled_calibration_applies_the_same_rules(case, change, error, message):
    arguments: dict[str, Any] = {
        "logits": _LOGITS,
        "expert_ids": _LOGITS.argmax(dim=1),
        "no_evidence": _EVIDENCE,
        "targets": torch.tensor([0, 1, 1, 2]),
        "expert_names": ["a", "b", "c"],
        **change,
    }
    logits, expert_ids, no_evidence, targets = (
        arguments.pop(k) for k in ("logits", "expert_ids", "no_evidence", "targets")
    )
    with pytest.raises(error, match=message):
        fit_calibration(logits, expert_ids, no_evidence, targets, aggregation="vote", **arguments)


def test_allowed_missing_experts_are_named_in_the_report_and_on_the_card(router, held_out, tmp_path):
    texts, labels = _data(held_out, "code", "legal")
    report = router.calibrate(texts, labels, max_fallback_rate=0.2, allow_missing_experts=True)
    assert report.missing_experts == ["docs"]
    assert "**Not calibrated for `docs`**" in report.markdown()
    assert CalibrationReport.from_dict(report.to_dict()) == report
    assert router.config.min_confidence == report.min_confidence is not None
    router.save_pretrained(tmp_path / "saved")
    assert "**Not calibrated for `docs`**" in (tmp_path / "saved" / "README.md").read_text()
    assert IR3DERouterModel.from_pretrained(tmp_path / "saved").card.calibration.missing_experts == ["docs"]


def test_full_data_records_no_missing_expert(router, held_out):
    report = router.calibrate(*_data(held_out, *ALL))
    assert report.missing_experts == [] and "Not calibrated for" not in report.markdown()


def test_a_report_saved_before_missing_experts_existed_still_loads(router, held_out):
    values = router.calibrate(*_data(held_out, *ALL)).to_dict()
    del values["missing_experts"]
    assert CalibrationReport.from_dict(values).missing_experts == []


# ---------------------------------------------------------------------------------------------- the command line


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def _saved(_fitted, held_out, tmp_path_factory) -> Path:
    """A saved router (code, legal, docs), a saved one-expert router, and calibration data files good and bad."""
    root = tmp_path_factory.mktemp("calibration-cli")
    _fitted.save_pretrained(root / "router")
    lonely = _fitted.copy()
    lonely.remove_expert("legal")
    lonely.remove_expert("docs")
    lonely.save_pretrained(root / "lonely")
    rows = [{"text": t, "domain": d} for t, d in zip(*_data(held_out, *ALL), strict=True)]
    (root / "good.jsonl").write_text(_jsonl(rows))
    (root / "code.jsonl").write_text(_jsonl([row for row in rows if row["domain"] == "code"]))
    (root / "no-docs.jsonl").write_text(_jsonl([row for row in rows if row["domain"] != "docs"]))
    (root / "broken.jsonl").write_text(_jsonl(rows[:1]) + '{"text": "def f", "domain": \n' + _jsonl(rows[1:3]))
    (root / "lists.jsonl").write_text('["def f", "code"]\n')
    (root / "latin1.jsonl").write_bytes('{"text": "café", "domain": "docs"}\n'.encode("latin-1"))
    (root / "numbers.jsonl").write_text(_jsonl([{"text": 5, "domain": "code"}, {"text": 6, "domain": "legal"}]))
    (root / "no-domain.jsonl").write_text(_jsonl([{"text": "def f", "domain": None}, {"text": "x", "domain": "code"}]))
    (root / "unlabelled.jsonl").write_text(_jsonl([{"text": "def f"}]))
    return root


@pytest.fixture
def workspace(_saved, tmp_path) -> dict[str, str]:
    """A fresh copy of the saved routers and data for each case: a failing case must not harm the others."""
    shutil.copytree(_saved, tmp_path / "w")
    return {"tmp": str(tmp_path / "w")}


# (arguments after "calibrate", exit code, a fragment of the error line); {tmp} is the workspace
R = "{tmp}/router"
CLI_CASES: list[tuple[list[str], int, str]] = [
    ([R, "--data", "{tmp}/code.jsonl"], 1, "Only expert 'code' appears in the calibration prompts"),
    (
        [R, "--data", "{tmp}/code.jsonl", "--allow-missing-experts"],
        1,
        "cannot be fitted from one class; give held-out prompts of at least two experts",
    ),
    ([R, "--data", "{tmp}/no-docs.jsonl"], 1, "no prompt of the router's expert(s) 'docs': add held-out prompts"),
    (
        [R, "--data", "{tmp}/no-docs.jsonl", "--target-accuracy", "0.9"],
        1,
        "or pass allow_missing_experts=True (--allow-missing-experts)",
    ),
    ([R], 1, "no prompt of the router's expert(s) 'docs'"),  # the benchmark's validation rows: no docs domain
    (
        ["{tmp}/lonely", "--data", "{tmp}/good.jsonl"],
        1,
        "Calibration needs a router with at least two experts, this one has one ('code')",
    ),
    ([R, "--data", "{tmp}/broken.jsonl"], 1, "broken.jsonl: line 2 is not valid JSON"),
    (
        [R, "--data", "{tmp}/lists.jsonl"],
        1,
        "lists.jsonl has no 'domain' column to calibrate against (its columns: 'text')",
    ),
    ([R, "--data", "{tmp}/latin1.jsonl"], 1, "latin1.jsonl is not UTF-8 text"),
    (
        [R, "--data", "{tmp}/numbers.jsonl"],
        1,
        "numbers.jsonl: row 1 has text 5; every row needs a string text and domain",
    ),
    ([R, "--data", "{tmp}/no-domain.jsonl"], 1, "no-domain.jsonl: row 1 has domain None"),
    ([R, "--data", "{tmp}/unlabelled.jsonl"], 1, "unlabelled.jsonl has no 'domain' column to calibrate against"),
    ([R, "--data", "{tmp}/missing.jsonl"], 1, "missing.jsonl"),
    ([R, "--data", "{tmp}/good.jsonl", "--tokens", "3", "3"], 1, "prompt_tokens (--tokens) lists [3] more than once"),
    (
        [R, "--data", "{tmp}/good.jsonl", "--tokens", "2.5"],
        2,
        "argument --tokens: expected an integer >= 1, got '2.5'",
    ),
    (
        [R, "--data", "{tmp}/good.jsonl", "--target-accuracy", "0"],
        2,
        "argument --target-accuracy: expected a number in (0, 1]",
    ),
    ([R, "--data", "{tmp}/good.jsonl", "--target-accuracy", "high"], 2, "argument --target-accuracy"),
    (
        [R, "--data", "{tmp}/good.jsonl", "--max-fallback-rate", "-0.1"],
        2,
        "argument --max-fallback-rate: expected a number in (0, 1)",
    ),
    (
        [R, "--data", "{tmp}/good.jsonl", "--allow-missing-experts=yes"],
        2,
        "--allow-missing-experts: ignored explicit argument 'yes'",
    ),
]


@pytest.mark.parametrize(("arguments", "code", "fragment"), CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_ir3de_calibrate_bad_input_is_a_one_line_error_and_changes_nothing(
    workspace, capsys, arguments, code, fragment
):
    filled = ["calibrate", *(argument.format(**workspace) for argument in arguments)]
    root = Path(workspace["tmp"])
    before = directory_digest(root)
    decision = IR3DERouterModel.from_pretrained(root / "router").route(PROBES).logits.tolist()
    line = refused(filled, code, capsys)
    assert line.startswith("ir3de calibrate: error: " if code == 1 else "ir3de")
    assert fragment.format(**workspace) in line
    assert directory_digest(root) == before
    assert IR3DERouterModel.from_pretrained(root / "router").route(PROBES).logits.tolist() == decision


def test_ir3de_calibrate_allow_missing_experts_records_them(workspace, capsys):
    root = Path(workspace["tmp"])
    arguments = ["calibrate", str(root / "router"), "--data", str(root / "no-docs.jsonl"), "--tokens", "4"]
    assert (
        main([*arguments, "--max-fallback-rate", "0.2", "--allow-missing-experts", "--output", str(root / "out")]) == 0
    )
    assert "**Not calibrated for `docs`**" in capsys.readouterr().out
    assert json.loads((root / "out" / "calibration.json").read_text())["missing_experts"] == ["docs"]
    assert "**Not calibrated for `docs`**" in (root / "out" / "README.md").read_text()


def test_the_api_and_the_command_line_refuse_one_class_with_the_same_message(router, held_out, workspace, capsys):
    with pytest.raises(ValueError) as raised:
        router.calibrate(*_data(held_out, "code"), prompt_tokens=[16, 64, 256])
    root = Path(workspace["tmp"])
    capsys.readouterr()
    assert main(["calibrate", str(root / "router"), "--data", str(root / "code.jsonl")]) == 1
    assert error_line(capsys.readouterr().err) == f"ir3de calibrate: error: {raised.value}"


def test_there_are_at_least_twenty_five_distinct_cases():
    assert len(API_CASES) + len(POOLED_CASES) + len(CLI_CASES) >= 25
    assert len({c[0] for c in API_CASES}) == len(API_CASES)
    assert len({tuple(c[0]) for c in CLI_CASES}) == len(CLI_CASES)
