"""Bad input to the `ir3de` command: each case exits 1 (an expected error) or 2 (a usage error) with one line on
stderr that names the problem, and leaves every file on disk as it was; the saved router still routes as before."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from cli_errors import directory_digest, error_line, refused
from ir3de_hf import IR3DERouterModel
from ir3de_hf.cli import main

PROMPT = "def encode ( self , obj ) : return self . iterencode ( obj )"

# (arguments, exit code, a fragment of the error line). Placeholders: {router} a saved router with experts code,
# legal and docs; {llama} a saved LlamaForCausalLM; {tmp} the test's directory (see `workspace` for its files).
CASES = [
    # route
    (["route", "{tmp}/missing-router", "hi"], 1, "missing-router' is not a saved router (no such directory)"),
    (["route", "{tmp}/notes", "hi"], 1, "notes' is not a saved router (no config.json there)"),
    (["route", "{llama}", "hi"], 1, "is not an IR3DE router: its config.json has model_type 'llama'"),
    (["route", "{router}", "--file", "{tmp}/missing.txt"], 1, "No such file or directory: '{tmp}/missing.txt'"),
    (["route", "{router}", "--file", "{tmp}/latin1.txt"], 1, "{tmp}/latin1.txt is not UTF-8 text"),
    (["route", "{router}", "--file", "{tmp}/notes"], 1, "Is a directory: '{tmp}/notes'"),
    (["route", "{router}", "hi", "--bogus"], 2, "unrecognized arguments: --bogus"),
    # remove-expert
    (["remove-expert", "{router}", "nope"], 1, "No expert named 'nope'; the router's experts are: code, legal, docs"),
    (["remove-expert", "{router}", "code", "code"], 1, "'code' given more than once; nothing was removed"),
    (["remove-expert", "{router}", "code", "nope"], 1, "No expert named 'nope'"),  # code removed in memory only
    (["remove-expert", "{router}", "code", "--output", "{llama}"], 1, "{llama} holds a 'llama' model"),
    # add-expert
    (
        ["add-expert", "{router}", "--expert", "more={texts}", "--source", "more={tmp}/no-model"],
        1,
        "is not a directory",
    ),
    (
        ["add-expert", "{router}", "--expert", "more={texts}", "--source", "other={llama}"],
        1,
        "['other'] that no --expert",
    ),
    (["add-expert", "{router}", "--expert", "code={texts}"], 1, "already has expert(s) ['code']"),
    (["add-expert", "{router}", "--expert", "more={tmp}/no-texts"], 1, "No such file or directory"),
    (["add-expert", "{router}", "--expert", "more={texts}", "--expert", "more={texts}"], 1, "'more' is given twice"),
    (["add-expert", "{router}", "--expert", "bad name={texts}"], 1, "Invalid expert name"),
    (
        ["add-expert", "{router}", "--expert", "more={texts}", "--output", "{llama}"],
        1,
        "{llama} holds a 'llama' model",
    ),
    (["add-expert", "{router}", "--expert", "more"], 2, "expected NAME=PATH, got 'more'"),
    # push / pull (HF_HUB_OFFLINE=1, see conftest)
    (["push", "{router}", "not a repo id!"], 1, "'not a repo id!'"),
    (["push", "{router}", "me/router"], 1, "offline mode is enabled"),
    (["push", "{tmp}/missing-router", "me/router"], 1, "missing-router' is not a saved router"),
    (["pull", "me/no-such-router"], 1, "Router 'me/no-such-router' (revision main) has no config.json"),
    (["pull", "me/no-such-router", "--local-dir", "{llama}"], 1, "{llama} holds a 'llama' model"),
    # eval
    (["eval", "{router}", "--data", "{tmp}/unlabelled.jsonl"], 1, "unlabelled.jsonl has no 'domain' column"),
    (["eval", "{router}", "--data", "{tmp}/labelled.csv"], 1, "labelled.csv: expected a .parquet or .jsonl file"),
    (["eval", "{router}", "--data", "{tmp}/missing.jsonl"], 1, "missing.jsonl"),
    (["eval", "{router}", "--tokens", "0"], 2, "argument --tokens: expected an integer >= 1, got '0'"),
    (["eval", "{router}", "--tokens", "16", "-5"], 2, "argument --tokens: expected an integer >= 1, got '-5'"),
    # fit
    (["fit", "--encoder", "{llama}", "--expert", "a={texts}", "--output", "{llama}"], 1, "{llama} holds a 'llama'"),
    (["fit", "--encoder", "{llama}", "--expert", "a={texts}", "--output", "{tmp}/latin1.txt"], 1, "not a directory"),
    (["fit", "--encoder", "{tmp}/no-encoder", "--expert", "a={texts}", "--output", "{tmp}/new"], 1, "--encoder '"),
    (["fit", "--encoder", "{llama}", "--expert", "a={texts}"], 2, "the following arguments are required: --output"),
    (
        ["fit", "--encoder", "{llama}", "--expert", "a={texts}", "--output", "{tmp}/new", "--aggregation", "max"],
        2,
        "max",
    ),
    (["fit", "--encoder", "{llama}", "--expert", "a={texts}", "--output", "{tmp}/new", "--max-tokens", "-5"], 2, "-5"),
    # the command line itself
    (["nosuchcommand"], 2, "argument COMMAND: invalid choice: 'nosuchcommand'"),
    ([], 2, "the following arguments are required: COMMAND"),
    (["route"], 2, "the following arguments are required: router"),
    (["remove-expert", "{router}"], 2, "the following arguments are required: NAME"),
    (["push", "{router}"], 2, "the following arguments are required: repo_id"),
]


@pytest.fixture
def workspace(text_router, domain_texts, expert_dir, tmp_path) -> dict[str, str]:
    """A test directory with a saved router, a saved Llama (a copy: a failing case must not harm the shared one),
    a folder of notes, a Latin-1 file, labelled and unlabelled data, and a folder of texts to count."""
    for name, texts in domain_texts.items():
        text_router.add_expert(name, texts=texts)
    text_router.save_pretrained(tmp_path / "router")
    shutil.copytree(expert_dir, tmp_path / "llama")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("not a router")
    (tmp_path / "latin1.txt").write_bytes("café, naïve".encode("latin-1"))
    (tmp_path / "unlabelled.jsonl").write_text(json.dumps({"text": PROMPT}) + "\n")
    (tmp_path / "labelled.csv").write_text(f"text,domain\n{PROMPT},code\n")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "0.txt").write_text(domain_texts["docs"][0])
    return {
        "router": str(tmp_path / "router"),
        "llama": str(tmp_path / "llama"),
        "texts": str(tmp_path / "texts"),
        "tmp": str(tmp_path),
    }


def _decision(router_dir: str) -> tuple[list[str | None], list[list[float]]]:
    output = IR3DERouterModel.from_pretrained(router_dir).route([PROMPT])
    return output.expert_names, output.logits.tolist()


@pytest.mark.parametrize(("arguments", "code", "fragment"), CASES, ids=[" ".join(case[0]) or "-" for case in CASES])
def test_bad_input_is_a_one_line_error_and_changes_nothing(workspace, tmp_path, capsys, arguments, code, fragment):
    filled = [argument.format(**workspace) for argument in arguments]
    before, decision = directory_digest(tmp_path), _decision(workspace["router"])
    line = refused(filled, code, capsys)

    assert line.startswith(f"ir3de {filled[0]}: error: " if filled and code == 1 else "ir3de")
    assert fragment.format(**workspace) in line
    assert directory_digest(tmp_path) == before
    assert _decision(workspace["router"]) == decision


def test_there_are_at_least_twenty_distinct_cases():
    assert len({tuple(arguments) for arguments, _, _ in CASES}) == len(CASES) >= 20


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["nosuchcommand"], 2, "argument COMMAND: invalid choice: 'nosuchcommand'"),
        (["remove-expert", "{router}", "code", "code"], 1, "'code' given more than once; nothing was removed"),
    ],
)
def test_the_exit_code_and_message_of_the_real_process(workspace, tmp_path, arguments, code, message):
    """Two cases through ``python -m ir3de_hf``: the exit code the shell sees, and nothing else on stderr."""
    filled = [argument.format(**workspace) for argument in arguments]
    before = directory_digest(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "ir3de_hf", *filled], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == code
    assert message in error_line(result.stderr)
    assert result.stdout == ""
    assert directory_digest(tmp_path) == before


def test_removing_every_expert_is_allowed_and_add_expert_refills_the_router(workspace, fit_data, capsys):
    """A router without experts keeps its encoder and tokenizer: it refuses to route until an expert is added."""
    router = workspace["router"]
    assert main(["remove-expert", router, "code", "legal", "docs"]) == 0
    assert "experts left: none" in capsys.readouterr().out
    assert IR3DERouterModel.from_pretrained(router).expert_names == []

    assert main(["route", router, PROMPT]) == 1
    assert "The router has no experts yet" in error_line(capsys.readouterr().err)

    assert main(["add-expert", router, "--expert", f"code={fit_data['code']}", "--quiet"]) == 0
    refilled = IR3DERouterModel.from_pretrained(router)
    assert refilled.expert_names == ["code"]
    assert torch.equal(refilled.route([PROMPT]).expert_ids, torch.tensor([0]))
