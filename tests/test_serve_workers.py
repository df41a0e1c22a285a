"""Several `ir3de serve` workers (real processes) on one router directory: an expert added or removed through one is
served by the other within a few watch intervals, under the same router version."""

from __future__ import annotations

import shutil
import time

import httpx

import test_serve_admin
from test_bad_inputs_serve import _start
from test_serve import PROMPTS
from test_serve_admin import ADMIN

WATCH = 0.2  # seconds
two_experts_dir = test_serve_admin.two_experts_dir  # the fixture: a router with 'code' and 'legal'


def _until(check, seconds: float = 30.0) -> float:
    """Waits for ``check()`` to be true; returns how long it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, "the other worker did not follow the edit"
        time.sleep(0.05)
    return time.monotonic() - started


def test_an_edit_through_one_worker_reaches_the_other(two_experts_dir, domain_texts, expert_sources, tmp_path):
    directory = tmp_path / "router"
    shutil.copytree(two_experts_dir, directory)
    arguments = ("--admin-key", ADMIN, "--watch-interval", str(WATCH), "--batch-wait-ms", "0")
    workers = [_start(directory, *arguments) for _ in range(2)]
    try:
        first, second = (httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) for _, port, _ in workers)
        admin = {"authorization": f"Bearer {ADMIN}"}
        version = first.get("/health").json()["router_version"]
        assert second.get("/health").json()["router_version"] == version

        body = {"name": "docs", "texts": domain_texts["docs"], **expert_sources["docs"]}
        added = first.post("/v1/experts", json=body, headers=admin)
        assert added.status_code == 201, added.text
        new = added.json()["router_version"]
        waited = _until(lambda: second.get("/health").json()["router_version"] == new)
        assert waited < 10 * WATCH + 5
        assert "docs" in [model["id"] for model in second.get("/v1/models").json()["data"]]
        chat = {"model": "ir3de", "messages": [{"role": "user", "content": PROMPTS["docs"]}], "max_tokens": 3}
        answered = second.post("/v1/chat/completions", json=chat)
        assert answered.status_code == 200, answered.text
        assert answered.json()["model"] == "docs" and answered.headers["x-ir3de-router-version"] == new
        routes = [first.post("/v1/route", json={"input": list(PROMPTS.values())}).json()["data"]]
        routes.append(second.post("/v1/route", json={"input": list(PROMPTS.values())}).json()["data"])
        assert routes[0] == routes[1] and [item["expert"] for item in routes[0]] == list(PROMPTS)

        removed = second.delete("/v1/experts/docs", headers=admin)
        assert removed.status_code == 200, removed.text
        _until(lambda: first.get("/health").json()["router_version"] == removed.json()["router_version"])
        assert first.get("/v1/models/docs").status_code == 404
        assert first.post("/v1/route", json={"input": PROMPTS["docs"]}).json()["data"][0]["expert"] != "docs"
    finally:
        for process, _, _ in workers:
            process.terminate()
            process.wait(timeout=30)
