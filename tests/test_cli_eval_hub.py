"""`ir3de eval`, `ir3de push` and `ir3de pull`: the CLI over evaluation and the Hub round trip."""

from __future__ import annotations

import json

import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.cli import main
from ir3de_hf.evaluation import evaluate_routing


def _router_dir(onehot_router, domain_texts, tmp_path):
    for name, texts in domain_texts.items():
        onehot_router.add_expert(name, texts=texts[::2])
    onehot_router.save_pretrained(tmp_path / "router")
    return tmp_path / "router"


def test_eval_reports_accuracy_and_writes_confusion_plots(onehot_router, domain_texts, tmp_path, capsys):
    router_dir = _router_dir(onehot_router, domain_texts, tmp_path)
    held_out = [(name, text) for name, texts in domain_texts.items() for text in texts[1::2]]
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps({"text": text, "domain": name}) + "\n" for name, text in held_out))

    assert (
        main(
            [
                "eval",
                str(router_dir),
                "--data",
                str(data),
                "--tokens",
                "8",
                "32",
                "--output",
                str(tmp_path / "ev"),
                "--json",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    expected = evaluate_routing(
        IR3DERouterModel.from_pretrained(router_dir), [t for _, t in held_out], [n for n, _ in held_out], (8, 32)
    )
    assert printed == {str(n): report.to_dict() for n, report in expected.items()}
    assert printed["32"]["accuracy"] > 0.9
    assert (tmp_path / "ev" / "confusion_8.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_without_domain_labels_is_a_one_line_error(onehot_router, domain_texts, tmp_path, capsys):
    router_dir = _router_dir(onehot_router, domain_texts, tmp_path)
    data = tmp_path / "unlabelled.jsonl"
    data.write_text(json.dumps({"text": "some text"}) + "\n")
    assert main(["eval", str(router_dir), "--data", str(data)]) == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line == (
        f"ir3de eval: error: {data} has no 'domain' column to evaluate against (its columns: 'text'); give one JSON "
        "object per line with text and domain keys, or a parquet file with those columns"
    )


def test_eval_on_labels_that_are_not_experts_says_what_they_were_and_to_pass_data(
    onehot_router, domain_texts, tmp_path, capsys
):
    """The README's ``ir3de eval my-router --tokens 16`` on a router whose experts are not the benchmark's domains."""
    from ir3de_hf.data import load_benchmark

    router_dir = _router_dir(onehot_router, domain_texts, tmp_path)
    domains = sorted(set(load_benchmark()["test"]["domain"]) - {"code", "legal", "docs"})
    assert main(["eval", str(router_dir), "--tokens", "16"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"ir3de eval: error: the domains of the ir3de-multidomain test split ({', '.join(domains)}) are not experts "
        f"of {str(router_dir)!r} (its experts: code, legal, docs): pass --data FILE, a .parquet/.jsonl file with "
        "text and domain columns whose domains are the router's expert names"
    )

    data = tmp_path / "other.jsonl"
    data.write_text(json.dumps({"text": "def f(): pass", "domain": "python"}) + "\n")
    assert main(["eval", str(router_dir), "--data", str(data)]) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"ir3de eval: error: the domains of {data} (python) are not experts of {str(router_dir)!r}")
    )


def test_push_then_pull_gives_the_same_router(hub, onehot_router, domain_texts, tmp_path, capsys):
    router_dir = _router_dir(onehot_router, domain_texts, tmp_path)
    assert main(["push", str(router_dir), "me/cli-router", "--message", "first"]) == 0
    assert capsys.readouterr().out.startswith(f"pushed {router_dir} to me/cli-router at ")
    assert main(["pull", "me/cli-router", "--local-dir", str(tmp_path / "pulled")]) == 0
    pulled = IR3DERouterModel.from_pretrained(capsys.readouterr().out.strip())
    assert pulled.expert_names == ["code", "legal", "docs"]
    assert torch.equal(pulled.expert_counts, onehot_router.expert_counts)


def test_pull_of_a_missing_repo_is_a_one_line_error(hub, capsys):
    assert main(["pull", "me/no-such-router"]) == 1
    assert capsys.readouterr().err.strip() == (
        "ir3de pull: error: Router 'me/no-such-router' (revision main) is neither a local directory nor a Hub "
        "repository."
    )
