"""Bad input to a fit, case by case: `fit_experts` / `count_experts` and the ``ir3de fit`` / ``ir3de add-expert``
commands refuse it with the right error type and a message that names the file, expert or option at fault, and
leave the router (in memory or saved) as it was."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.cli import main
from ir3de_hf.fitting import count_experts, fit_experts


@pytest.fixture
def paths(tmp_path, domain_texts) -> dict[str, Path]:
    """Good and bad data on disk, by the name the cases use between braces."""
    root = tmp_path / "data"
    root.mkdir()
    good = root / "good"
    good.mkdir()
    for index, text in enumerate(domain_texts["docs"][:6]):
        (good / f"{index:03d}.txt").write_text(text)
    (root / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "notes.csv").write_text("a,b\n")
    (root / "notes" / "readme.md").write_text("# notes\n")
    (root / "latin1").mkdir()
    (root / "latin1" / "000.txt").write_text("def return value")
    (root / "latin1" / "001.txt").write_bytes("café au lait".encode("latin-1"))
    (root / "latin1.jsonl").write_bytes(b'{"text": "def"}\n{"text": "caf\xe9"}\n')
    (root / "broken.jsonl").write_text('{"text": "def"}\n{"text": "unterminated\n{"text": "value"}\n')
    (root / "corrupt.parquet").write_bytes(b"PAR1 not really")
    pd.DataFrame({"body": domain_texts["docs"][:3]}).to_parquet(root / "body.parquet")
    pd.DataFrame({"text": [1, 2, 3]}).to_parquet(root / "ints.parquet")
    (root / "mixed").mkdir()
    pd.DataFrame({"text": ["def"]}).to_parquet(root / "mixed" / "a.parquet")
    (root / "mixed" / "b.jsonl").write_text('{"text": "def"}\n')
    return {
        "data": root,
        "good": good,
        "checkpoints": tmp_path / "checkpoints",
        **{name: root / name for name in ("missing", "empty", "notes", "latin1", "mixed")},
        **{name.replace(".", "_"): root / name for name in ("latin1.jsonl", "broken.jsonl", "corrupt.parquet")},
        **{name.replace(".", "_"): root / name for name in ("body.parquet", "ints.parquet")},
    }


@pytest.fixture
def router(text_router, domain_texts) -> IR3DERouterModel:
    text_router.add_expert("code", texts=domain_texts["code"])
    text_router.add_expert("legal", texts=domain_texts["legal"])
    return text_router


@pytest.fixture
def probe(domain_texts) -> list[str]:
    return [domain_texts["code"][20], domain_texts["legal"][3], domain_texts["docs"][8], "def value"]


def _edit_a_good_file(paths: dict[str, Path]) -> None:
    (paths["good"] / "001.txt").write_text("def return value")


def _fill(value: Any, paths: dict[str, Path]) -> Any:
    return value.format(**paths) if isinstance(value, str) else value


# ------------------------------------------------------------------------------------------------ Python API


@dataclass(frozen=True)
class Case:
    """One bad call of `fit_experts` (or of `count_experts` with ``count=True``).

    Strings in ``sources`` and ``options`` name entries of the ``paths`` fixture in braces. With ``interrupt``, the
    same sources are first fitted with these options and stop at the non-UTF-8 expert ``stop``, which leaves an
    unfinished checkpoint; ``edit`` then changes the data.
    """

    sources: dict[str, Any]
    error: type[Exception]
    match: str
    options: dict[str, Any] = field(default_factory=dict)
    replace: bool = False
    expert_fields: dict[str, dict[str, Any]] | None = None
    count: bool = False
    interrupt: dict[str, Any] | None = None
    edit: Callable[[dict[str, Path]], None] | None = None


DEF = ["def return value", "return def"]
CHECKPOINTED = {"new": "{good}", "stop": "{latin1}"}
CASES = {
    "missing path": Case(
        {"new": "{missing}"}, FileNotFoundError, r"Expert 'new': No such file or directory: '.*/missing'"
    ),
    "empty directory": Case(
        {"new": "{empty}"}, FileNotFoundError, r"Expert 'new': '.*/empty' holds no \.txt.*is empty"
    ),
    "directory without .txt": Case(
        {"new": "{notes}"}, FileNotFoundError, r"'.*/notes' holds no \.txt, .*\(it holds notes\.csv, readme\.md\)"
    ),
    "glob matching nothing": Case(
        {"new": "{data}/*.xyz"}, FileNotFoundError, r"Expert 'new': No file matches '.*\*\.xyz'"
    ),
    "files of two kinds": Case(
        {"new": "{mixed}/*"}, ValueError, r"mixed/\*.*one kind.*got \['\.jsonl', '\.parquet'\]"
    ),
    "non-UTF-8 .txt": Case(
        {"new": "{latin1}"}, ValueError, r"Expert 'new': .*latin1/001\.txt is not UTF-8 text: byte 0xe9 at offset 3 "
    ),
    "non-UTF-8 .jsonl": Case(
        {"new": "{latin1_jsonl}"}, ValueError, r"latin1\.jsonl is not UTF-8 text: byte 0xe9 at offset 29 "
    ),
    "lone surrogate": Case(
        {"new": [*DEF, "caf\ud800"]},
        ValueError,
        r"Expert 'new': text 2 is not valid Unicode: '\\ud800' at character 3",
    ),
    "list of non-strings": Case(
        {"new": ["def", 7]}, TypeError, r"Expert 'new': the list of texts holds a value of type int at index 1"
    ),
    "parquet without the text column": Case(
        {"new": "{body_parquet}"}, ValueError, r"Expert 'new': .*body\.parquet has no column 'text' \(columns: body\)"
    ),
    "column of ints": Case(
        {"new": "{ints_parquet}"}, ValueError, r"Expert 'new': column 'text' holds values that are not strings"
    ),
    "jsonl with a broken line": Case(
        {"new": "{broken_jsonl}"}, ValueError, r"Expert 'new': .*broken\.jsonl: line 2 is not valid JSON"
    ),
    "corrupt parquet": Case(
        {"new": "{corrupt_parquet}"}, ValueError, r"corrupt\.parquet is not a readable parquet file"
    ),
    "expert name with a space": Case({"bad name": DEF}, ValueError, r"Invalid expert name 'bad name'"),
    "expert name with a slash": Case({"a/b": DEF}, ValueError, r"Invalid expert name 'a/b'"),
    "existing expert, replace=False": Case(
        {"code": DEF}, ValueError, r"already has expert\(s\) \['code'\].*replace=True"
    ),
    "an expert without a token": Case({"new": DEF, "blank": ["  ", ""]}, ValueError, r"Expert 'blank' has no usable"),
    "a model source that is not there": Case(
        {"new": DEF, "more": DEF},
        ValueError,
        r"Expert 'more': source '.*/missing' is not a directory",
        expert_fields={"more": {"source": "{missing}"}},
    ),
    "no expert": Case({}, ValueError, r"No expert to fit"),
    "max_tokens=0": Case({"new": DEF}, ValueError, r"max_tokens must be an integer >= 1, got 0", {"max_tokens": 0}),
    "batch_size=-1": Case({"new": DEF}, ValueError, r"batch_size must be an integer >= 1, got -1", {"batch_size": -1}),
    "checkpoint_every=0 (count_experts)": Case(
        {"new": DEF},
        ValueError,
        r"checkpoint_every must be an integer >= 1, got 0",
        {"checkpoint_every": 0},
        count=True,
    ),
    "checkpoint of another data": Case(
        CHECKPOINTED,
        ValueError,
        r"different fit \(the data of expert 'new' changed: file '001\.txt' changed \(size \d+ -> 16 bytes\)\)\. "
        r"Delete .*checkpoints",
        {"checkpoint_dir": "{checkpoints}"},
        interrupt={"checkpoint_dir": "{checkpoints}"},
        edit=_edit_a_good_file,
    ),
    "checkpoint of other arguments": Case(
        CHECKPOINTED,
        ValueError,
        r"different fit \(batch_size: 1024 -> 8; max_tokens: None -> 50\)",
        {"checkpoint_dir": "{checkpoints}", "batch_size": 8, "max_tokens": 50},
        interrupt={"checkpoint_dir": "{checkpoints}"},
    ),
    "checkpoint of other arguments (count_experts)": Case(
        CHECKPOINTED,
        ValueError,
        r"different fit \(text_column: 'text' -> 'body'\)",
        {"checkpoint_dir": "{checkpoints}", "text_column": "body"},
        count=True,
        interrupt={"checkpoint_dir": "{checkpoints}"},
    ),
}


def _decisions(router: IR3DERouterModel, probe: list[str]) -> tuple[list[str], list[str | None], torch.Tensor]:
    output = router.route(probe)
    return list(router.expert_names), list(output.expert_names), output.logits.clone()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_to_the_python_api_is_refused_and_changes_nothing(router, paths, probe, case):
    sources = {name: _fill(source, paths) for name, source in case.sources.items()}
    options = {key: _fill(value, paths) for key, value in case.options.items()}
    fields = {
        name: {k: _fill(v, paths) for k, v in given.items()} for name, given in (case.expert_fields or {}).items()
    }
    if case.interrupt is not None:
        first = {key: _fill(value, paths) for key, value in case.interrupt.items()}
        with pytest.raises(ValueError, match=r"Expert 'stop': .*latin1/001\.txt is not UTF-8"):
            fit_experts(router.copy(), sources, progress=False, **first)
    if case.edit is not None:
        case.edit(paths)
    before = _decisions(router, probe)

    with pytest.raises(case.error, match=case.match):
        if case.count:
            count_experts(
                sources,
                tokenizer=router.tokenizer,
                vocab_size=router.config.vocab_size,
                ignored_token_ids=router.config.never_counted_ids,
                **options,
            )
        else:
            fit_experts(router, sources, replace=case.replace, expert_fields=fields, progress=False, **options)

    names, decisions, logits = _decisions(router, probe)
    assert (names, decisions) == before[:2]
    assert torch.equal(logits, before[2])


# ------------------------------------------------------------------------------------------------ the command


@dataclass(frozen=True)
class Command:
    """One bad ``ir3de`` command line: placeholders in braces are ``paths`` entries, ``{router}`` (a saved router with
    experts code and legal), ``{encoder}`` (the tiny Llama) and ``{output}`` (where ``fit`` would save). With
    ``interrupt``, that command runs first and fails on the non-UTF-8 expert, leaving an unfinished checkpoint;
    ``edit`` then changes the data. Exit code 2 is argparse's usage error."""

    argv: list[str]
    match: str
    exit_code: int = 1
    interrupt: list[str] | None = None
    edit: Callable[[dict[str, Path]], None] | None = None


FIT = ["fit", "--encoder", "{encoder}", "--output", "{output}", "--quiet", "--expert", "code={good}"]
ADD = ["add-expert", "{router}", "--quiet"]
CHECKPOINTED_ARGV = ["--expert", "stop={latin1}", "--checkpoint-dir", "{checkpoints}"]
COMMANDS = {
    "fit: missing path": Command([*FIT, "--expert", "more={missing}"], r"Expert 'more': No such file or directory"),
    "fit: non-UTF-8 file": Command(
        [*FIT, "--expert", "more={latin1}"],
        r"Expert 'more': .*latin1/001\.txt is not UTF-8 text: byte 0xe9 at offset 3",
    ),
    "fit: duplicate --expert": Command([*FIT, "--expert", "code={notes}"], r"expert 'code' is given twice"),
    "fit: --max-tokens 0": Command(
        [*FIT, "--max-tokens", "0"], r"argument --max-tokens: expected an integer >= 1, got '0'", exit_code=2
    ),
    "fit: --batch-size -1": Command(
        [*FIT, "--batch-size", "-1"], r"argument --batch-size: expected an integer >= 1, got '-1'", exit_code=2
    ),
    "fit: checkpoint of another data": Command(
        [*FIT, *CHECKPOINTED_ARGV],
        r"different fit \(the data of expert 'code' changed: file '001\.txt' changed \(size \d+ -> 16 bytes\)\)",
        interrupt=[*FIT, *CHECKPOINTED_ARGV],
        edit=_edit_a_good_file,
    ),
    "fit: checkpoint of other arguments": Command(
        [*FIT, *CHECKPOINTED_ARGV, "--max-tokens", "50"],
        r"different fit \(max_tokens: None -> 50\)\. Delete .*checkpoints",
        interrupt=[*FIT, *CHECKPOINTED_ARGV],
    ),
    "add-expert: existing expert without --replace": Command(
        [*ADD, "--expert", "legal={good}"], r"already has expert\(s\) \['legal'\]; pass replace=True"
    ),
    "add-expert: name with a space": Command([*ADD, "--expert", "my docs={good}"], r"Invalid expert name 'my docs'"),
    "add-expert: empty directory": Command([*ADD, "--expert", "docs={empty}"], r"'.*/empty' holds no \.txt.*is empty"),
    "add-expert: jsonl with a broken line": Command(
        [*ADD, "--expert", "docs={broken_jsonl}"], r"Expert 'docs': .*broken\.jsonl: line 2 is not valid JSON"
    ),
    "add-expert: parquet without the column": Command(
        [*ADD, "--expert", "docs={body_parquet}"], r"body\.parquet has no column 'text' \(columns: body\)"
    ),
    "add-expert: column of ints": Command(
        [*ADD, "--expert", "docs={ints_parquet}"], r"Expert 'docs': column 'text' holds values that are not strings"
    ),
    "add-expert: --source of no expert": Command(
        [*ADD, "--expert", "docs={good}", "--source", "other={encoder}"], r"--source names expert\(s\) \['other'\]"
    ),
    "add-expert: checkpoint of another data": Command(
        [*ADD, "--expert", "docs={good}", *CHECKPOINTED_ARGV],
        r"different fit \(the data of expert 'docs' changed: file '001\.txt' changed",
        interrupt=[*ADD, "--expert", "docs={good}", *CHECKPOINTED_ARGV],
        edit=_edit_a_good_file,
    ),
}


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes() for path in directory.rglob("*") if path.is_file()
    }


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_bad_input_to_the_command_exits_with_one_line_and_changes_nothing(
    router, paths, probe, expert_dir, tmp_path, capsys, command
):
    router.save_pretrained(tmp_path / "router")
    places = {**paths, "router": tmp_path / "router", "encoder": expert_dir, "output": tmp_path / "output"}
    saved = _snapshot(tmp_path / "router")
    before = _decisions(IR3DERouterModel.from_pretrained(tmp_path / "router"), probe)
    if command.interrupt is not None:
        assert main([_fill(argument, places) for argument in command.interrupt]) == 1
        assert "is not UTF-8" in capsys.readouterr().err
    if command.edit is not None:
        command.edit(paths)

    argv = [_fill(argument, places) for argument in command.argv]
    if command.exit_code == 2:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    else:
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "error:" in line]  # besides argparse's usage lines
    assert line.startswith(f"ir3de {argv[0]}: error: ")
    assert re.search(command.match, line), line

    assert _snapshot(tmp_path / "router") == saved
    reloaded = IR3DERouterModel.from_pretrained(tmp_path / "router")
    names, decisions, logits = _decisions(reloaded, probe)
    assert (names, decisions) == before[:2] and torch.equal(logits, before[2])
    assert not (tmp_path / "output").exists()
