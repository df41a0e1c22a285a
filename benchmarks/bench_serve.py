"""`ir3de serve` benchmark on the demo router (SmolLM2-135M-Instruct + six LoRA experts), CPU by default.

    python benchmarks/bench_serve.py [--new-tokens 8] [--vllm-url URL] [--quick] [--out benchmarks/results/serve.json]

1. Routing overhead: the same chat request sent straight to an expert server and through the routing proxy
   (``model: "ir3de"``, remote backend). The expert server is a stub that answers at once, so the difference of the
   latencies is what the proxy adds (routing, one more HTTP hop, JSON). Also the routing decision alone, in-process.
2. Throughput of the local backend, in requests/s, at 1, 8 and 32 concurrent clients (each sends its requests one
   after the other), with micro-batching (``--max-batch-size 32``) and without (``--max-batch-size 1``); prompts of
   the six domains round-robin (``mixed``), and all of one domain (``single``: batches fill up).
3. vLLM (``engine``): requests/s and tokens/s at 1, 8 and 32 clients for vLLM called directly (each request names
   its LoRA adapter, the expert the router picks), for ``ir3de serve demo --expert-url NAME=URL:NAME`` in front of it
   (``model: "ir3de"``, routed) and for ``ir3de serve demo`` on the local backend (``--max-batch-size 32``), each
   server its own process, the same prompts; and what routing in front of vLLM adds to a request's latency (p50/p99
   through ``ir3de serve`` minus direct, one client, the same prompts interleaved). The engine is the one at
   ``--vllm-url`` (serving the six demo adapters under their names), or one started from ``$IR3DE_VLLM_VENV``
   (float32, the demo adapters) and stopped after.
Greedy decoding; answers are identical with and without batching (checked), and through ``ir3de serve`` and direct
to vLLM (recorded). ``--quick``: fewer requests, for a short check. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch
import uvicorn
from fastapi import FastAPI

from ir3de_hf.demo import load_demo_router
from ir3de_hf.serve.app import ServeSettings, create_app
from ir3de_hf.serve.backends.local import LocalBackend
from ir3de_hf.serve.decision import Decider
from latency import percentiles
from prompts import prompts_by_domain
from servers import Process, free_port, ir3de_serve, start_vllm


class Served:
    """An app on a free loopback port, served by uvicorn in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join()


def stub_expert_server() -> FastAPI:
    """An OpenAI-compatible server that answers every chat at once: latency with no generation in it."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "stub",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return app


def routing_overhead(router: Any, prompts: list[str], requests: int) -> dict[str, Any]:
    """Latency of one chat request sent straight to the stub expert server, through an ``ir3de serve demo`` proxy
    naming the expert (no routing), and through the proxy with ``model: "ir3de"`` (routed); each server is its own
    process, as deployed."""
    stub_url, proxy_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    stub_code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import uvicorn, bench_serve; "
        f"uvicorn.run(bench_serve.stub_expert_server(), port={stub_url.rsplit(':', 1)[1]}, log_level='warning')"
    )
    stub = Process([sys.executable, "-c", stub_code], stub_url)
    urls = [f"--expert-url={name}={stub_url}/v1" for name in router.expert_names]
    proxy = ir3de_serve("demo", int(proxy_url.rsplit(":", 1)[1]), *urls)
    decider = Decider(router)
    times: dict[str, list[float]] = {"direct": [], "proxy_forced": [], "proxy_routed": []}
    try:
        with httpx.Client() as client:
            for index in range(requests + 20):  # interleaved, the first 20 of each as warm-up
                messages = [{"role": "user", "content": prompts[index % len(prompts)]}]
                expert = decider.route([messages[0]["content"]])[0].expert
                for kind, url, model in (
                    ("direct", stub_url, expert),
                    ("proxy_forced", proxy_url, expert),
                    ("proxy_routed", proxy_url, "ir3de"),
                ):
                    start = time.perf_counter()
                    response = client.post(f"{url}/v1/chat/completions", json={"model": model, "messages": messages})
                    elapsed = time.perf_counter() - start
                    assert response.status_code == 200, response.text
                    if index >= 20:
                        times[kind].append(elapsed)
    finally:
        for process in (proxy, stub):
            process.stop()
    decide_s = []
    for index in range(requests):
        start = time.perf_counter()
        decider.route([prompts[index % len(prompts)]])
        decide_s.append(time.perf_counter() - start)
    result: dict[str, Any] = {"requests": requests, **{kind: percentiles(values) for kind, values in times.items()}}
    result["routing_decision_only"] = percentiles(decide_s)
    for name, (slow, fast) in {
        "routing": ("proxy_routed", "proxy_forced"),
        "proxy": ("proxy_routed", "direct"),
    }.items():
        result[f"{name}_adds_p50_ms"] = result[slow]["p50_ms"] - result[fast]["p50_ms"]
        result[f"{name}_adds_p99_ms"] = result[slow]["p99_ms"] - result[fast]["p99_ms"]
    return result


@dataclass(frozen=True)
class Run:
    """One load run: its wall time, the answers (in the prompts' order) and their completion tokens."""

    seconds: float
    answers: list[str]
    completion_tokens: int
    latencies: list[float]

    def rates(self) -> dict[str, float]:
        return {
            "seconds": self.seconds,
            "requests_per_s": len(self.answers) / self.seconds,
            "tokens_per_s": self.completion_tokens / self.seconds,
        }


async def run_clients(
    url: str, prompts: list[str], clients: int, new_tokens: int, models: list[str] | None = None
) -> Run:
    """``clients`` workers share the prompt list, each sending one request at a time, to ``model: "ir3de"`` or to
    ``models[i]`` for prompt ``i``."""
    answers: list[str] = [""] * len(prompts)
    latencies: list[float] = [0.0] * len(prompts)
    tokens = 0
    cursor = iter(range(len(prompts)))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal tokens
        for index in cursor:
            body = {
                "model": models[index] if models else "ir3de",
                "messages": [{"role": "user", "content": prompts[index]}],
                "max_tokens": new_tokens,
                "temperature": 0,
            }
            start = time.perf_counter()
            response = await client.post(f"{url}/v1/chat/completions", json=body)
            latencies[index] = time.perf_counter() - start
            assert response.status_code == 200, response.text
            answers[index] = response.json()["choices"][0]["message"]["content"]
            tokens += response.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=3600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return Run(time.perf_counter() - start, answers, tokens, latencies)


def throughput(
    router: Any, workloads: dict[str, list[str]], levels: list[int], new_tokens: int, wait_ms: float, quick: bool
) -> list[dict]:
    """Each (workload, clients) point unbatched then batched, back to back, so that both see the same machine load."""
    rows = []
    for workload, pool in workloads.items():
        for clients in levels if workload == "mixed" else [8]:
            prompts = [pool[i % len(pool)] for i in range(max(4, clients) if quick else max(8, 2 * clients))]
            unbatched: list[str] = []
            for batch_size in (1, 32):
                backend = LocalBackend(router, max_batch_size=batch_size, batch_wait_ms=wait_ms)
                server = Served(create_app(Decider(router), backend, ServeSettings()))
                run = asyncio.run(run_clients(server.url, prompts, clients, new_tokens))
                server.stop()  # its worker thread ends with it: one backend uses the experts at a time
                unbatched = unbatched or run.answers
                rows.append(
                    {
                        "workload": workload,
                        "clients": clients,
                        "max_batch_size": batch_size,
                        "requests": len(prompts),
                        **run.rates(),
                        "mean_batch": mean_batch(backend.batch_sizes),
                        "answers_identical_to_unbatched": run.answers == unbatched,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


SERVERS = ("vllm_direct", "ir3de_vllm", "ir3de_local")  # the engine section's rows, in its table's order


def engine_throughput(
    router: Any, prompts: list[str], levels: list[int], new_tokens: int, args: argparse.Namespace
) -> dict[str, Any]:
    """vLLM direct, ``ir3de serve`` in front of it and ``ir3de serve`` on the local backend, each client count
    measured on the three back to back (the same prompts), so that the ratios see the same machine load; then the
    latency routing adds in front of vLLM."""
    experts = [decision.expert for decision in Decider(router).route(prompts)]
    engine = None if args.vllm_url else start_vllm(router, free_port(), Path(tempfile.gettempdir()) / "bench-vllm.log")
    vllm = (args.vllm_url or f"{engine.url}/v1").rstrip("/").removesuffix("/v1")  # type: ignore[union-attr]
    servers: list[Process] = []
    try:
        urls = [f"--expert-url={name}={vllm}/v1:{name}" for name in router.expert_names]
        servers.append(ir3de_serve("demo", free_port(), *urls))
        local_flags = ("--max-batch-size", "32", "--batch-wait-ms", str(args.batch_wait_ms))
        servers.append(ir3de_serve("demo", free_port(), *local_flags))
        targets = {"vllm_direct": (vllm, experts), "ir3de_vllm": (servers[0].url, None)}
        targets["ir3de_local"] = (servers[1].url, None)
        for url, models in targets.values():  # warm-up: every adapter loaded, the engine's first batches run
            asyncio.run(run_clients(url, prompts[:12], 4, new_tokens, models and models[:12]))
        rows: list[dict[str, Any]] = []
        for clients in levels:
            count = max(4, clients) if args.quick else max(8, 2 * clients)
            batch, models = (
                [prompts[i % len(prompts)] for i in range(count)],
                [experts[i % len(prompts)] for i in range(count)],
            )
            runs = {
                name: asyncio.run(run_clients(url, batch, clients, new_tokens, models if chosen else None))
                for name, (url, chosen) in targets.items()
            }
            direct = runs["vllm_direct"].answers
            for name, run in runs.items():
                same = sum(a == b for a, b in zip(run.answers, direct, strict=True))
                rows.append(
                    {
                        "server": name,
                        "clients": clients,
                        "requests": count,
                        **run.rates(),
                        "answers_equal_to_vllm_direct": same,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        overhead = engine_overhead(vllm, servers[0].url, prompts, experts, args.engine_overhead_requests, new_tokens)
    finally:
        for server in [*servers, *([engine] if engine else [])]:
            server.stop()
    return {
        "vllm": "given --vllm-url" if args.vllm_url else "started (float32, CPU)",
        "new_tokens": new_tokens,
        "throughput": rows,
        "routing_overhead": overhead,
    }


def engine_overhead(
    vllm: str, proxy: str, prompts: list[str], experts: list[str], requests: int, new_tokens: int
) -> dict[str, Any]:
    """One client; each prompt sent straight to vLLM naming the routed adapter, then through ``ir3de serve``
    (routed): what routing, one more HTTP hop and JSON add to a request that generates ``new_tokens``."""
    times: dict[str, list[float]] = {"direct": [], "ir3de": []}

    async def measure() -> None:
        async with httpx.AsyncClient(timeout=600) as client:
            for index in range(requests + 10):  # the first 10 of each as warm-up
                messages = [{"role": "user", "content": prompts[index % len(prompts)]}]
                for kind, url, model in (("direct", vllm, experts[index % len(prompts)]), ("ir3de", proxy, "ir3de")):
                    body = {"model": model, "messages": messages, "max_tokens": new_tokens, "temperature": 0}
                    start = time.perf_counter()
                    response = await client.post(f"{url}/v1/chat/completions", json=body)
                    elapsed = time.perf_counter() - start
                    assert response.status_code == 200, response.text
                    if index >= 10:
                        times[kind].append(elapsed)

    asyncio.run(measure())
    result: dict[str, Any] = {"requests": requests, **{kind: percentiles(values) for kind, values in times.items()}}
    result["adds_p50_ms"] = result["ir3de"]["p50_ms"] - result["direct"]["p50_ms"]
    result["adds_p99_ms"] = result["ir3de"]["p99_ms"] - result["direct"]["p99_ms"]
    pairs = [routed - direct for routed, direct in zip(times["ir3de"], times["direct"], strict=True)]
    result["paired_adds_p50_ms"] = 1000 * statistics.median(pairs)  # per prompt: robust to the machine's drift
    return result


def mean_batch(sizes: dict[int, int]) -> float:
    return sum(size * count for size, count in sizes.items()) / sum(sizes.values())


def table(result: dict[str, Any]) -> str:
    sections = [
        part(result[key])
        for key, part in (("routing_overhead", overhead_table), ("throughput", local_table), ("engine", engine_table))
        if key in result
    ]
    return "\n\n".join("\n".join(lines) for lines in sections)


def overhead_table(overhead: dict[str, Any]) -> list[str]:
    decision = overhead["routing_decision_only"]
    return [
        f"Over {overhead['requests']} requests to a stub expert that answers at once: routing adds "
        f"{overhead['routing_adds_p50_ms']:.2f} ms p50 / {overhead['routing_adds_p99_ms']:.2f} ms p99 (proxy routed "
        f"vs proxy forced); the proxy as a whole adds {overhead['proxy_adds_p50_ms']:.2f} ms p50 / "
        f"{overhead['proxy_adds_p99_ms']:.2f} ms p99 (vs calling the expert directly, p50 "
        f"{overhead['direct']['p50_ms']:.2f} ms); the decision alone takes {decision['p50_ms']:.2f} ms p50 / "
        f"{decision['p99_ms']:.2f} ms p99 in-process."
    ]


def local_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| workload | clients | requests/s unbatched | requests/s batched | speed-up | mean batch |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["max_batch_size"] != 1:
            continue
        batched = next(
            other
            for other in rows
            if other["max_batch_size"] != 1
            and (other["workload"], other["clients"]) == (row["workload"], row["clients"])
        )
        lines.append(
            f"| {row['workload']} | {row['clients']} | {row['requests_per_s']:.2f} | {batched['requests_per_s']:.2f} "
            f"| {batched['requests_per_s'] / row['requests_per_s']:.2f}x | {batched['mean_batch']:.1f} |"
        )
    return lines


def engine_table(engine: dict[str, Any]) -> list[str]:
    overhead = engine["routing_overhead"]
    lines = [
        f"vLLM ({engine['vllm']}), {engine['new_tokens']} new tokens, greedy: requests/s (tokens/s)",
        "",
        "| clients | vLLM direct | ir3de serve -> vLLM | ir3de serve, local | ir3de -> vLLM / direct | vLLM / local |",
        "|---|---|---|---|---|---|",
    ]
    for clients in sorted({row["clients"] for row in engine["throughput"]}):
        rows = {row["server"]: row for row in engine["throughput"] if row["clients"] == clients}
        cells = [f"{rows[name]['requests_per_s']:.2f} ({rows[name]['tokens_per_s']:.1f})" for name in SERVERS]
        direct, proxied, local = (rows[name]["requests_per_s"] for name in SERVERS)
        lines.append(f"| {clients} | {' | '.join(cells)} | {proxied / direct:.2f}x | {direct / local:.2f}x |")
    lines += [
        "",
        f"Routing in front of vLLM adds {overhead['adds_p50_ms']:.1f} ms p50 / {overhead['adds_p99_ms']:.1f} ms p99 "
        f"per request (median of the per-prompt differences {overhead['paired_adds_p50_ms']:.1f} ms; one client, "
        f"{overhead['requests']} requests of each kind; direct p50 "
        f"{overhead['direct']['p50_ms']:.1f} ms, p99 {overhead['direct']['p99_ms']:.1f} ms).",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--overhead-requests", type=int, default=200)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch-wait-ms", type=float, default=10.0, help="the local backend's batch window")
    parser.add_argument("--engine-overhead-requests", type=int, default=60, help="requests of each kind to vLLM")
    parser.add_argument("--vllm-url", help="a running vLLM serving the demo adapters (default: start one)")
    parser.add_argument("--quick", action="store_true", help="few requests per point (a check, not a measurement)")
    parser.add_argument("--out", type=Path, help="default benchmarks/results/serve.json ($TMPDIR with --quick)")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("overhead", "throughput", "engine"),
        default=["overhead", "throughput", "engine"],
        help="what to measure; the other parts are kept from an existing --out",
    )
    args = parser.parse_args()
    if args.out is None:
        folder = Path(tempfile.gettempdir()) if args.quick else Path(__file__).parent / "results"
        args.out = folder / "serve.json"
    if args.quick:
        args.overhead_requests, args.engine_overhead_requests = 40, 20

    router = load_demo_router()
    by_domain = prompts_by_domain(router.tokenizer, args.prompt_tokens)
    mixed = [by_domain[domain][i] for i in range(64) for domain in sorted(by_domain)]
    workloads = {"mixed": mixed, "single": by_domain["legal"][:64]}
    for name in router.expert_names:  # load the shared base and every adapter before timing
        router.generate(mixed[:1], expert=name, max_new_tokens=1)

    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result.update(
        machine={
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],  # other processes on the machine skew the throughput
            "device": "cpu",
        },
        new_tokens=args.new_tokens,
        prompt_tokens=args.prompt_tokens,
    )
    if "overhead" in args.parts:
        result["routing_overhead"] = routing_overhead(router, mixed, args.overhead_requests)
    if "throughput" in args.parts:
        result["throughput"] = throughput(
            router, workloads, args.clients, args.new_tokens, args.batch_wait_ms, args.quick
        )
        result["batch_wait_ms"] = args.batch_wait_ms
    if "engine" in args.parts:
        result["engine"] = engine_throughput(router, mixed, args.clients, args.new_tokens, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
