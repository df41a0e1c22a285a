"""Live-edit load: concurrent chat clients against ``ir3de serve`` while an expert is removed and re-added through the
admin API, and the checks of every answer (imported by bench_live_edits.py and tests/test_live_edits_load.py).

A run has two phases: ``baseline`` (the clients alone) then ``edits`` (the clients while the edit cycles run). Every
answer names the router version that routed it (header ``x-ir3de-router-version``, body ``ir3de.router_version``);
the versions' experts are known from the admin answers (an edit's version has the experts before it, plus or minus
the edited one) and from ``GET /v1/experts``, so `check` can tell whether each answer's expert existed in its
version. Half the clients stream.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from latency import percentiles

VERSION_HEADER = "x-ir3de-router-version"


@dataclass
class Outcome:
    """One chat request: when it started (seconds into the run), how long it took, and what answered it."""

    client: int
    phase: str
    stream: bool
    start: float
    seconds: float
    expert: str | None = None
    version: str | None = None
    error: str | None = None


@dataclass
class Edit:
    action: str  # "add" or "remove"
    name: str
    seconds: float
    version: str | None
    error: str | None = None


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    versions: dict[str, list[str]] = field(default_factory=dict)  # router version -> its experts
    conflicts: list[str] = field(default_factory=list)  # a version seen with two different sets of experts


def expert_body(router: Any, name: str, source: str) -> dict[str, Any]:
    """The ``POST /v1/experts`` body that re-adds expert ``name`` of ``router`` as it is: its token histogram (the
    same statistics, so the re-solved router equals the original), its registry fields, ``source`` for its weights
    (outside the served router's folder: a remove deletes the folder's copy)."""
    spec = router.config.expert_specs[router.expert_names.index(name)]
    histogram = router.store.histogram(name)
    if histogram is None:
        raise ValueError(f"expert {name!r} has no histogram (imported statistics); pick another expert")
    body = {"name": name, "histogram": histogram.tolist(), "source": source, "description": spec.description}
    return {**body, "base_model": spec.base_model} if spec.base_model else body


async def run_load(
    url: str,
    admin_key: str,
    prompts: list[str],
    *,
    clients: int,
    baseline_s: float,
    edits_s: float,
    cycles: int,
    body: dict[str, Any],
    new_tokens: int = 8,
) -> Run:
    """``clients`` clients send chats (``model: "ir3de"``, greedy) one after the other for ``baseline_s`` seconds,
    then for ``edits_s`` seconds while ``cycles`` remove/add cycles of expert ``body["name"]`` run, evenly spaced."""
    run, phase, stop = Run(), ["baseline"], asyncio.Event()
    origin = time.monotonic()
    admin = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        version, experts = await _experts(http, admin)
        run.versions[version] = experts
        for expert in experts:  # warm-up, not timed: every expert loaded before the baseline
            warm = {"model": expert, "messages": [{"role": "user", "content": prompts[0]}], "max_tokens": 1}
            (await http.post("/v1/chat/completions", json=warm)).raise_for_status()
        tasks = [
            asyncio.create_task(_client(http, i, prompts, new_tokens, phase, stop, run, origin))
            for i in range(clients)
        ]
        await asyncio.sleep(baseline_s)
        phase[0] = "edits"
        await _cycles(http, admin, body, cycles, edits_s, run, experts)
        stop.set()
        await asyncio.gather(*tasks)
    return run


async def _client(
    http: httpx.AsyncClient,
    index: int,
    prompts: list[str],
    new_tokens: int,
    phase: list[str],
    stop: asyncio.Event,
    run: Run,
    origin: float,
) -> None:
    stream, sent = index % 2 == 1, index
    while not stop.is_set():
        body = {
            "model": "ir3de",
            "messages": [{"role": "user", "content": prompts[sent % len(prompts)]}],
            "max_tokens": new_tokens,
            "temperature": 0,
            "stream": stream,
        }
        sent += 1
        outcome = Outcome(index, phase[0], stream, time.monotonic() - origin, 0.0)
        try:
            await (_streamed if stream else _answered)(http, body, outcome)
        except (httpx.HTTPError, ValueError, LookupError, TypeError) as error:  # no answer, or not an OpenAI one
            outcome.error = f"{type(error).__name__}: {error}"
        outcome.seconds = time.monotonic() - origin - outcome.start
        run.outcomes.append(outcome)


async def _answered(http: httpx.AsyncClient, body: dict[str, Any], outcome: Outcome) -> None:
    response = await http.post("/v1/chat/completions", json=body)
    if response.status_code != 200:
        outcome.error = f"{response.status_code}: {response.text[:300]}"
        return
    answer = response.json()
    _named(outcome, response.headers, answer)
    if not answer["choices"] or answer["choices"][0]["message"]["content"] is None:
        outcome.error = f"no answer text: {response.text[:300]}"


async def _streamed(http: httpx.AsyncClient, body: dict[str, Any], outcome: Outcome) -> None:
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            outcome.error = f"{response.status_code}: {(await response.aread()).decode()[:300]}"
            return
        done, first = False, True
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            chunk = json.loads(line[len("data: ") :])
            if "error" in chunk:
                outcome.error = f"error event: {line[:300]}"
            elif first:
                _named(outcome, response.headers, chunk)
                first = False
        if not done and outcome.error is None:
            outcome.error = "the stream ended without data: [DONE]"


def _named(outcome: Outcome, headers: httpx.Headers, body: dict[str, Any]) -> None:
    """The expert and the router version of an answer; header and body must agree."""
    outcome.expert = body.get("model")
    decision = body.get("ir3de") or {}
    outcome.version = headers.get(VERSION_HEADER)
    named = decision.get("router_version")
    if named is not None and str(named) != outcome.version:
        outcome.error = f"header {VERSION_HEADER}: {outcome.version} but ir3de.router_version {named}"


async def _cycles(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    body: dict[str, Any],
    cycles: int,
    seconds: float,
    run: Run,
    experts: list[str],
) -> None:
    """Remove, then re-add, expert ``body["name"]`` ``cycles`` times, each edit at its slot of ``seconds``; the
    experts of each new version are ``experts`` (those before the edits) with the edits applied."""
    name, start = body["name"], time.monotonic()
    for slot in range(2 * cycles):
        await asyncio.sleep(max(0.0, start + slot * seconds / (2 * cycles) - time.monotonic()))
        action = "remove" if slot % 2 == 0 else "add"
        began = time.monotonic()
        if action == "remove":
            response = await http.delete(f"/v1/experts/{name}", headers=admin)
        else:
            response = await http.post("/v1/experts", json=body, headers=admin)
        elapsed = time.monotonic() - began
        ok = response.status_code == (200 if action == "remove" else 201)
        version = str(response.json()["router_version"]) if ok else None
        run.edits.append(
            Edit(action, name, elapsed, version, None if ok else f"{response.status_code}: {response.text[:300]}")
        )
        if version is not None:
            experts = [expert for expert in experts if expert != name] + ([name] if action == "add" else [])
            _learn(run, version, experts, f"the {action} of {name!r} answered")
            _learn(run, *await _experts(http, admin), "GET /v1/experts listed")
    await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))


def _learn(run: Run, version: str, experts: list[str], how: str) -> None:
    """Records the experts of ``version``; a version seen before (an id may come back: re-adding an expert as it
    was may give the first version again) must have the same experts."""
    known = run.versions.setdefault(version, experts)
    if sorted(known) != sorted(experts):
        run.conflicts.append(f"version {version}: {how} {sorted(experts)}, known as {sorted(known)}")


async def _experts(http: httpx.AsyncClient, admin: dict[str, str]) -> tuple[str, list[str]]:
    response = await http.get("/v1/experts", headers=admin)
    response.raise_for_status()
    listed = response.json()
    return str(listed["router_version"]), [expert["name"] for expert in listed["data"]]


def check(run: Run) -> dict[str, Any]:
    """The failures of a run: failed requests, answers without a version or with one never seen, answers by an
    expert that was not in their version, failed edits and listing conflicts (all must be empty)."""
    failed = [o for o in run.outcomes if o.error is not None]
    unversioned = [o for o in run.outcomes if o.error is None and o.version is None]
    unknown = [o for o in run.outcomes if o.version is not None and o.version not in run.versions]
    wrong = [
        o
        for o in run.outcomes
        if o.version in run.versions and o.error is None and o.expert not in run.versions[o.version]
    ]
    return {
        "failed_requests": len(failed),
        "unversioned_answers": len(unversioned),
        "unknown_versions": len(unknown),
        "answers_by_absent_experts": len(wrong),
        "failed_edits": sum(edit.error is not None for edit in run.edits),
        "listing_conflicts": len(run.conflicts),
        "examples": [asdict(o) for o in (failed + unversioned + unknown + wrong)[:5]]
        + [asdict(edit) for edit in run.edits if edit.error][:5]
        + run.conflicts[:5],
    }


def summary(run: Run) -> dict[str, Any]:
    """Requests, latency p50/p99 per phase, the experts that answered, edit latencies (p50 and max per action)."""
    result: dict[str, Any] = {"checks": check(run), "router_versions_seen": len({o.version for o in run.outcomes})}
    for phase in ("baseline", "edits"):
        done = [o for o in run.outcomes if o.phase == phase]
        seconds = sorted(o.seconds for o in done if o.error is None)
        experts: dict[str, int] = {}
        for outcome in done:
            experts[str(outcome.expert)] = experts.get(str(outcome.expert), 0) + 1
        result[phase] = {"requests": len(done), "answered_by": dict(sorted(experts.items())), **percentiles(seconds)}
    for action in ("remove", "add"):
        seconds = sorted(edit.seconds for edit in run.edits if edit.action == action and edit.error is None)
        result[f"{action}_edits"] = {
            "count": len(seconds),
            "p50_ms": 1000 * statistics.median(seconds) if seconds else None,
            "max_ms": 1000 * seconds[-1] if seconds else None,
        }
    return result
