"""The live-edit load test, short (benchmarks/bench_live_edits.py is the full one, on the demo router and vLLM):
8 clients for 5 s alone then 20 s while an expert is removed and re-added 3 times through the admin API of a real
``ir3de serve`` process on the tiny test router. No request may fail, and every answer's expert must be one of the
router version that routed it. The load and the checks are the benchmark's own (benchmarks/live_load.py)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from ir3de_hf import IR3DERouterModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from live_load import expert_body, run_load, summary
from servers import free_port, ir3de_serve


@pytest.mark.slow
def test_experts_removed_and_added_under_load_fail_no_request(router_dir, expert_dirs, domain_texts, tmp_path):
    directory = tmp_path / "router"  # edits are saved to the served folder: serve a copy
    shutil.copytree(router_dir, directory)
    body = expert_body(IR3DERouterModel.from_pretrained(directory), "docs", str(expert_dirs["lora2"]))
    prompts = [texts[i] for i in range(10) for texts in domain_texts.values()]
    server = ir3de_serve(str(directory), free_port(), "--admin-key", "admin-secret", log=tmp_path / "serve.log")
    try:
        run = asyncio.run(
            run_load(server.url, "admin-secret", prompts, clients=8, baseline_s=5, edits_s=20, cycles=3, body=body)
        )
    finally:
        server.stop()
    result = summary(run)

    assert {key: value for key, value in result["checks"].items() if key != "examples"} == {
        "failed_requests": 0,
        "unversioned_answers": 0,
        "unknown_versions": 0,
        "answers_by_absent_experts": 0,
        "failed_edits": 0,
        "listing_conflicts": 0,
    }, result["checks"]["examples"]
    assert [edit.action for edit in run.edits] == ["remove", "add"] * 3
    assert all(edit.version in run.versions for edit in run.edits)
    assert result["baseline"]["requests"] > 0 and result["edits"]["requests"] > 0
    assert result["router_versions_seen"] >= 2, "no answer was routed by an edited version"
    assert "docs" in result["baseline"]["answered_by"], "the removed expert never answered: the load is not routed"
