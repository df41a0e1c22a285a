"""The `ir3de` command: fit, add and remove experts, route, with the exit codes and messages a shell user expects."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from ir3de_hf import IR3DEConfig, IR3DERouterModel
from ir3de_hf.aggregation import AGGREGATIONS
from ir3de_hf.cli import COMMANDS, build_parser, main


@pytest.fixture
def fitted(expert_dir, fit_data, tmp_path, capsys):
    router = tmp_path / "router"
    arguments = ["fit", "--encoder", str(expert_dir), "--output", str(router), "--quiet", "--aggregation", "mean"]
    arguments += ["--expert", f"code={fit_data['code']}", "--expert", f"legal={fit_data['legal']}"]
    assert main(arguments) == 0
    assert "fitted 2 expert(s); saved the router to" in capsys.readouterr().out
    return router


def test_fit_saves_a_router_equal_to_counting_the_texts(fitted, domain_texts):
    router = IR3DERouterModel.from_pretrained(fitted)
    assert router.expert_names == ["code", "legal"]
    reference = IR3DERouterModel.from_encoder(router.embed_tokens, router.tokenizer)
    reference.add_expert("code", texts=domain_texts["code"][:7])
    reference.add_expert("legal", texts=domain_texts["legal"])
    assert torch.equal(router.expert_counts, reference.expert_counts)


def test_route_prints_the_expert_and_scores(fitted, domain_texts, capsys):
    prompts = [domain_texts["code"][20], domain_texts["legal"][3]]
    expected = IR3DERouterModel.from_pretrained(fitted).route(prompts)
    capsys.readouterr()

    assert main(["route", str(fitted), *prompts]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == expected.expert_names
    for line, margin in zip(lines, expected.margins.tolist(), strict=True):
        assert f"margin={margin:.3f}" in line and "code=" in line and "legal=" in line

    assert main(["route", str(fitted), "--json", prompts[1]]) == 0  # options before or after the prompts
    [result] = json.loads(capsys.readouterr().out)
    assert result["expert"] == expected.expert_names[1] and result["text"] == prompts[1]
    assert result["no_evidence"] is False
    assert result["scores"] == dict(zip(["code", "legal"], expected.logits[1].tolist(), strict=True))
    assert result["margin"] == pytest.approx(float(expected.margins[1]))


def test_add_and_remove_experts(fitted, fit_data, expert_dir, tmp_path, capsys):
    arguments = ["add-expert", str(fitted), "--expert", f"docs={fit_data['docs']}", "--quiet"]
    arguments += ["--source", f"docs={expert_dir}", "--output", str(tmp_path / "bigger")]
    assert main(arguments) == 0
    bigger = IR3DERouterModel.from_pretrained(tmp_path / "bigger")
    assert bigger.expert_names == ["code", "legal", "docs"]
    copied = tmp_path / "bigger" / "experts" / "docs"  # the local expert travels with the saved router
    assert bigger.config.expert_specs[2].source == str(copied.resolve())
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in expert_dir.iterdir())
    assert IR3DERouterModel.from_pretrained(fitted).expert_names == ["code", "legal"]  # --output: original kept

    assert main(["remove-expert", str(tmp_path / "bigger"), "legal"]) == 0
    smaller = IR3DERouterModel.from_pretrained(tmp_path / "bigger")
    assert smaller.expert_names == ["code", "docs"]
    assert torch.equal(smaller.expert_counts, bigger.expert_counts[[0, 2]])
    assert "experts left: code, docs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["remove-expert", "{router}", "nope"], "No expert named 'nope'"),
        (["route", "{tmp}/missing-router", "hello"], "missing-router"),
        (["add-expert", "{router}", "--expert", "more={tmp}/missing"], "No such file or directory"),
        (["add-expert", "{router}", "--expert", "code={tmp}"], "already has expert"),
        (["add-expert", "{router}", "--expert", "bad name={tmp}"], "Invalid expert name"),
    ],
)
def test_expected_errors_exit_1_with_one_line(fitted, tmp_path, capsys, arguments, message):
    filled = [argument.format(router=fitted, tmp=tmp_path) for argument in arguments]
    assert main(filled) == 1
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    [error_line] = [line for line in captured.err.splitlines() if "error" in line]  # besides transformers' bars
    assert error_line.startswith(f"ir3de {filled[0]}: error: ")


@pytest.mark.parametrize(
    "arguments",
    [[], ["fit", "--encoder", "x", "--output", "y", "--expert", "no-equals-sign"], ["route"], ["nosuchcommand"]],
)
def test_usage_errors_exit_2(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    assert "usage: ir3de" in capsys.readouterr().err


def test_every_command_has_help_with_examples():
    parser = build_parser()
    names = ["fit", "add-expert", "remove-expert", "route", "eval", "calibrate", "push", "pull"]
    names += ["import-reference", "export-reference", "demo", "space", "serve", "vllm-command", "recipe"]
    assert [command.name for command in COMMANDS] == names
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([command.name, "--help"])
        assert exit_info.value.code == 0
        assert f"ir3de {command.name}" in command.epilog


def test_fit_help_lists_every_aggregation_and_the_real_default(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["fit", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    assert "{" + ",".join(AGGREGATIONS) + "}" in text and "weighted_mean" in AGGREGATIONS
    assert IR3DEConfig().aggregation == "weighted_mean"
    assert "(default: weighted_mean)" in text and "default: mean" not in text
    required = ["fit", "--encoder", "x", "--output", "y", "--expert", "a=b"]
    assert parser.parse_args([*required, "--aggregation", "weighted_mean"]).aggregation == "weighted_mean"
    assert parser.parse_args(required).aggregation is None  # unset: the config default applies


def _strict_json(text: str):
    """`json.loads` that fails on Infinity / NaN, which Python accepts and strict parsers (browsers, jq) reject."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_route_json_is_strict_json_with_a_null_margin_for_a_single_expert(fitted, domain_texts, capsys):
    assert main(["route", str(fitted), "--json", domain_texts["code"][20], "[PAD]"]) == 0
    routed, no_evidence = _strict_json(capsys.readouterr().out)
    assert routed["margin"] > 0 and no_evidence["no_evidence"] is True

    assert main(["remove-expert", str(fitted), "legal"]) == 0
    capsys.readouterr()
    assert main(["route", str(fitted), "--json", domain_texts["code"][20]]) == 0
    [result] = _strict_json(capsys.readouterr().out)
    assert result["expert"] == "code" and result["margin"] is None  # best minus second-best: there is no second
    assert list(result["scores"]) == ["code"]


def test_route_help_documents_the_null_margin(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["route", "--help"])
    assert "null when it is not a finite number" in " ".join(capsys.readouterr().out.split())


def test_remove_expert_refuses_a_name_given_twice_and_changes_nothing(fitted, capsys):
    before = _digest(fitted)
    assert main(["remove-expert", str(fitted), "code", "code"]) == 1
    assert capsys.readouterr().err.strip() == (
        "ir3de remove-expert: error: expert name(s) 'code' given more than once; nothing was removed"
    )
    assert _digest(fitted) == before


def _digest(directory) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.rglob("*")}


@pytest.fixture
def llama_dir(expert_dir, tmp_path):
    """A copy of a saved LlamaForCausalLM (with its tokenizer) that a wrong --output would destroy."""
    return Path(shutil.copytree(expert_dir, tmp_path / "llama"))


def test_fit_refuses_an_output_holding_another_model_unless_overwrite(expert_dir, fit_data, llama_dir, capsys):
    arguments = ["fit", "--encoder", str(expert_dir), "--expert", f"code={fit_data['code']}", "--quiet"]
    before = _digest(llama_dir)
    assert main([*arguments, "--output", str(llama_dir)]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"ir3de fit: error: {llama_dir} holds a 'llama' model (config.json, ")
    assert "--overwrite" in line
    assert _digest(llama_dir) == before

    assert main([*arguments, "--output", str(llama_dir), "--overwrite"]) == 0
    assert IR3DERouterModel.from_pretrained(llama_dir).expert_names == ["code"]
    assert not (llama_dir / "generation_config.json").exists()  # replaced whole, not mixed with the Llama's files


@pytest.mark.parametrize(
    ("arguments", "experts"),
    [
        (["add-expert", "{router}", "--expert", "docs={docs}", "--quiet"], ["code", "legal", "docs"]),
        (["remove-expert", "{router}", "legal"], ["code"]),
    ],
)
def test_editing_commands_take_overwrite_for_their_output(fitted, fit_data, llama_dir, capsys, arguments, experts):
    filled = [argument.format(router=fitted, docs=fit_data["docs"]) for argument in arguments]
    before = _digest(llama_dir)
    assert main([*filled, "--output", str(llama_dir)]) == 1
    assert f"error: {llama_dir} holds a 'llama' model" in capsys.readouterr().err
    assert _digest(llama_dir) == before

    assert main([*filled, "--output", str(llama_dir), "--overwrite"]) == 0
    assert IR3DERouterModel.from_pretrained(llama_dir).expert_names == experts
    assert IR3DERouterModel.from_pretrained(fitted).expert_names == ["code", "legal"]  # the input is untouched


def test_pull_into_a_foreign_local_dir_needs_overwrite(hub, fitted, llama_dir, capsys):
    assert main(["push", str(fitted), "me/cli-router"]) == 0
    before = _digest(llama_dir)
    assert main(["pull", "me/cli-router", "--local-dir", str(llama_dir)]) == 1
    assert f"ir3de pull: error: {llama_dir} holds a 'llama' model" in capsys.readouterr().err
    assert _digest(llama_dir) == before

    assert main(["pull", "me/cli-router", "--local-dir", str(llama_dir), "--overwrite"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(llama_dir))
    assert IR3DERouterModel.from_pretrained(llama_dir).expert_names == ["code", "legal"]
    assert not (llama_dir / "generation_config.json").exists()

    assert main(["pull", "me/cli-router", "--local-dir", str(llama_dir)]) == 0  # now a router: no flag needed


# ------------------------------------------------------------------------------------------------ package pieces


def test_the_commands_share_one_positive_int_type():
    """``ir3de fit``, ``ir3de serve`` and ``python -m ir3de_hf.recipes.m2d2`` parse counts with the same function."""
    from ir3de_hf.cli.arguments import port, positive_int
    from ir3de_hf.recipes.m2d2 import build_parser as recipe_parser

    parser = build_parser(commands=["fit", "serve"])
    subparsers = next(action for action in parser._actions if action.dest == "command").choices
    types = {
        (command, action.dest): action.type
        for command in ("fit", "serve")
        for action in subparsers[command]._actions
        if action.dest in {"batch_size", "port", "max_batch_size"}
    }
    types |= {("recipe", action.dest): action.type for action in recipe_parser()._actions if action.dest == "batches"}
    assert set(types) == {("fit", "batch_size"), ("serve", "port"), ("serve", "max_batch_size"), ("recipe", "batches")}
    assert types.pop(("serve", "port")) is port  # its own type: a port from 1 to 65535
    assert set(types.values()) == {positive_int}


def test_ir3de_debug_prints_the_traceback_before_the_one_line_error(fitted, monkeypatch, capsys):
    assert main(["remove-expert", str(fitted), "nope"]) == 1
    quiet = capsys.readouterr().err
    assert "Traceback" not in quiet

    monkeypatch.setenv("IR3DE_DEBUG", "1")
    assert main(["remove-expert", str(fitted), "nope"]) == 1
    loud = capsys.readouterr().err
    assert "Traceback (most recent call last):" in loud and "in _remove_expert" in loud  # after transformers' bars
    assert (
        loud.splitlines()[-1]
        == quiet.splitlines()[-1]
        == ("ir3de remove-expert: error: No expert named 'nope'; the router's experts are: code, legal.")
    )


@pytest.mark.parametrize(
    ("arguments", "missing", "line"),
    [
        (
            ["demo"],
            ["gradio"],
            "ir3de demo: error: ir3de demo needs gradio, which is not installed: pip install 'ir3de_hf[space]'",
        ),
        (
            ["serve", "demo"],
            ["fastapi", "uvicorn"],
            "ir3de serve: error: ir3de serve needs fastapi, which is not installed: pip install 'ir3de_hf[serve]'",
        ),
        (
            ["serve", "demo"],
            ["uvicorn"],
            "ir3de serve: error: ir3de serve needs uvicorn, which is not installed: pip install 'ir3de_hf[serve]'",
        ),
    ],
    ids=["demo without gradio", "serve without fastapi", "serve without uvicorn"],
)
def test_a_command_without_its_extra_names_the_extra_in_one_line(monkeypatch, capsys, arguments, missing, line):
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # what an environment without it imports: nothing
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [line] and "Traceback" not in err
