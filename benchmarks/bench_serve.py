"""`ir3de serve` benchmark on the demo router (SmolLM2-135M-Instruct + six LoRA experts), CPU by default.

    python benchmarks/bench_serve.py [--new-tokens 8] [--out benchmarks/results/serve.json]

1. Routing overhead: the same chat request sent straight to an expert server and through the routing proxy
   (``model: "ir3de"``, remote backend). The expert server is a stub that answers at once, so the difference of the
   latencies is what the proxy adds (routing, one more HTTP hop, JSON). Also the routing decision alone, in-process.
2. Throughput of the local backend, in requests/s, at 1, 8 and 32 concurrent clients (each sends its requests one
   after the other), with micro-batching (``--max-batch-size 32``) and without (``--max-batch-size 1``); prompts of
   the six domains round-robin (``mixed``), and all of one domain (``single``: batches fill up).
Greedy decoding; answers are identical with and without batching (checked). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
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
from prompts import prompts_by_domain


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


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
    }


def _process(arguments: list[str], url: str) -> subprocess.Popen[bytes]:
    """Starts a server process and waits until it answers HTTP."""
    process = subprocess.Popen([sys.executable, *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{arguments} exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            httpx.get(f"{url}/health", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{arguments} did not start")


def routing_overhead(router: Any, prompts: list[str], requests: int) -> dict[str, Any]:
    """Latency of one chat request sent straight to the stub expert server, through an ``ir3de serve demo`` proxy
    naming the expert (no routing), and through the proxy with ``model: "ir3de"`` (routed); each server is its own
    process, as deployed."""
    stub_url, proxy_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    stub_code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import uvicorn, bench_serve; "
        f"uvicorn.run(bench_serve.stub_expert_server(), port={stub_url.rsplit(':', 1)[1]}, log_level='warning')"
    )
    stub = _process(["-c", stub_code], stub_url)
    urls = [f"--expert-url={name}={stub_url}/v1" for name in router.expert_names]
    proxy = _process(["-m", "ir3de_hf", "serve", "demo", "--port", proxy_url.rsplit(":", 1)[1], *urls], proxy_url)
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
            process.terminate()
            process.wait()
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run_clients(url: str, prompts: list[str], clients: int, new_tokens: int) -> tuple[float, list[str]]:
    """``clients`` workers share the prompt list, each sending one request at a time; returns (seconds, answers)."""
    answers: list[str] = [""] * len(prompts)
    cursor = iter(range(len(prompts)))

    async def worker(client: httpx.AsyncClient) -> None:
        for index in cursor:
            body = {
                "model": "ir3de",
                "messages": [{"role": "user", "content": prompts[index]}],
                "max_tokens": new_tokens,
                "temperature": 0,
            }
            response = await client.post(f"{url}/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            answers[index] = response.json()["choices"][0]["message"]["content"]

    async with httpx.AsyncClient(timeout=3600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return time.perf_counter() - start, answers


def throughput(
    router: Any, workloads: dict[str, list[str]], levels: list[int], new_tokens: int, wait_ms: float
) -> list[dict]:
    """Each (workload, clients) point unbatched then batched, back to back, so that both see the same machine load."""
    rows = []
    for workload, pool in workloads.items():
        for clients in levels if workload == "mixed" else [8]:
            prompts = [pool[i % len(pool)] for i in range(max(8, 2 * clients))]
            unbatched: list[str] = []
            for batch_size in (1, 32):
                backend = LocalBackend(router, max_batch_size=batch_size, batch_wait_ms=wait_ms)
                server = Served(create_app(Decider(router), backend, ServeSettings()))
                seconds, answers = asyncio.run(run_clients(server.url, prompts, clients, new_tokens))
                server.stop()  # its worker thread ends with it: one backend uses the experts at a time
                unbatched = unbatched or answers
                rows.append(
                    {
                        "workload": workload,
                        "clients": clients,
                        "max_batch_size": batch_size,
                        "requests": len(prompts),
                        "seconds": seconds,
                        "requests_per_s": len(prompts) / seconds,
                        "mean_batch": mean_batch(backend.batch_sizes),
                        "answers_identical_to_unbatched": answers == unbatched,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def mean_batch(sizes: dict[int, int]) -> float:
    return sum(size * count for size, count in sizes.items()) / sum(sizes.values())


def table(result: dict[str, Any]) -> str:
    overhead = result["routing_overhead"]
    decision = overhead["routing_decision_only"]
    lines = [
        f"Over {overhead['requests']} requests to a stub expert that answers at once: routing adds "
        f"{overhead['routing_adds_p50_ms']:.2f} ms p50 / {overhead['routing_adds_p99_ms']:.2f} ms p99 (proxy routed "
        f"vs proxy forced); the proxy as a whole adds {overhead['proxy_adds_p50_ms']:.2f} ms p50 / "
        f"{overhead['proxy_adds_p99_ms']:.2f} ms p99 (vs calling the expert directly, p50 "
        f"{overhead['direct']['p50_ms']:.2f} ms); the decision alone takes {decision['p50_ms']:.2f} ms p50 / "
        f"{decision['p99_ms']:.2f} ms p99 in-process.",
        "",
        "| workload | clients | requests/s unbatched | requests/s batched | speed-up | mean batch |",
        "|---|---|---|---|---|---|",
    ]
    rows = result["throughput"]
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
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--overhead-requests", type=int, default=200)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch-wait-ms", type=float, default=10.0, help="the local backend's batch window")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("overhead", "throughput"),
        default=["overhead", "throughput"],
        help="what to measure; the other part is kept from an existing --out",
    )
    args = parser.parse_args()

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
        result["throughput"] = throughput(router, workloads, args.clients, args.new_tokens, args.batch_wait_ms)
        result["batch_wait_ms"] = args.batch_wait_ms
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
