"""Live-edit load test of `ir3de serve` (the demo router: SmolLM2-135M-Instruct + six LoRA experts), CPU.

    python benchmarks/bench_live_edits.py [--backend local|vllm|both] [--clients 32] [--seconds 120] [--cycles 20]
        [--baseline-seconds 60] [--quick] [--out benchmarks/results/live_edits.json]

The demo router is saved to a temporary folder and served from it by ``ir3de serve DIR --admin-key KEY`` (local
backend, or ``--vllm-url`` of a vLLM engine started with the router's adapters, runtime LoRA loading on). Clients
(half of them streaming) send routed chats one after the other: first alone (``baseline``), then while expert
``--expert`` (default fiction) is removed and re-added ``--cycles`` times through the admin API (re-added with
its token histogram and its adapter from space_app/experts). Every answer is checked: no failed request, and its
expert was one of the router version that routed it (see live_load.py). Records the latency p50/p99 of both
phases and of the edits; writes JSON and prints a Markdown table. ``--quick``: 8 clients, 10 + 20 s, 3 cycles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from ir3de_hf import IR3DERouterModel
from ir3de_hf.demo import demo_experts_path, load_demo_router
from live_load import expert_body, run_load, summary
from prompts import prompts_by_domain
from servers import free_port, ir3de_serve, start_vllm


def measure(backend: str, args: argparse.Namespace, prompts: list[str]) -> dict[str, Any]:
    """One backend: a fresh copy of the demo router in a temporary folder, its server(s), the load, the summary."""
    with tempfile.TemporaryDirectory(prefix="ir3de-live-edits-") as folder:
        directory = Path(folder) / "router"
        load_demo_router().save_pretrained(directory)
        router = IR3DERouterModel.from_pretrained(directory)
        body = expert_body(router, args.expert, str(demo_experts_path() / args.expert))
        key = secrets.token_hex(8)
        servers, flags = [], ["--admin-key", key]
        try:
            if backend == "vllm":
                servers.append(start_vllm(router, free_port(), Path(folder) / "vllm.log"))
                flags += ["--vllm-url", f"{servers[0].url}/v1"]
            servers.append(ir3de_serve(str(directory), free_port(), *flags, log=Path(folder) / "serve.log"))
            run = asyncio.run(
                run_load(
                    servers[-1].url,
                    key,
                    prompts,
                    clients=args.clients,
                    baseline_s=args.baseline_seconds,
                    edits_s=args.seconds,
                    cycles=args.cycles,
                    body=body,
                    new_tokens=args.new_tokens,
                )
            )
        finally:
            for server in reversed(servers):
                server.stop()
        result = {"backend": backend, "serve_flags": [flag for flag in flags if flag != key], **summary(run)}
        print(json.dumps(result), file=sys.stderr, flush=True)
        return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['clients']} clients, {result['baseline_seconds']:.0f} s alone then {result['seconds']:.0f} s with "
        f"{result['cycles']} remove/add cycles of {result['expert']!r}, {result['new_tokens']} new tokens",
        "",
        "| backend | requests alone / during edits | failed | answers by an absent expert | p50 ms alone / edits "
        "| p99 ms alone / edits | remove p50 / max ms | add p50 / max ms | router versions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["runs"]:
        alone, edits, checks, versions = row["baseline"], row["edits"], row["checks"], row["router_versions_seen"]
        failed = checks["failed_requests"] + checks["failed_edits"] + checks["unversioned_answers"]
        wrong = checks["answers_by_absent_experts"] + checks["unknown_versions"] + checks["listing_conflicts"]
        lines.append(
            f"| {row['backend']} | {alone['requests']} / {edits['requests']} | {failed} | {wrong} "
            f"| {_ms(alone['p50_ms'])} / {_ms(edits['p50_ms'])} | {_ms(alone['p99_ms'])} / {_ms(edits['p99_ms'])} "
            f"| {_ms(row['remove_edits']['p50_ms'])} / {_ms(row['remove_edits']['max_ms'])} "
            f"| {_ms(row['add_edits']['p50_ms'])} / {_ms(row['add_edits']['max_ms'])} | {versions} |"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("local", "vllm", "both"), default="both")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=120, help="the edit phase")
    parser.add_argument("--baseline-seconds", type=float, default=60, help="the phase without edits, first")
    parser.add_argument("--cycles", type=int, default=20, help="remove/add cycles in the edit phase")
    parser.add_argument("--expert", default="fiction", help="the demo expert that is removed and re-added")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="8 clients, 10 + 20 s, 3 cycles (a check)")
    parser.add_argument("--out", type=Path, help="default benchmarks/results/live_edits.json ($TMPDIR with --quick)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.baseline_seconds, args.seconds, args.cycles = 8, 10, 20, 3
    if args.out is None:
        folder = Path(tempfile.gettempdir()) if args.quick else Path(__file__).parent / "results"
        args.out = folder / "live_edits.json"

    by_domain = prompts_by_domain(load_demo_router().tokenizer, args.prompt_tokens)
    prompts = [by_domain[domain][i] for i in range(64) for domain in sorted(by_domain)]
    backends = ["local", "vllm"] if args.backend == "both" else [args.backend]
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]},
        **{key: getattr(args, key) for key in ("clients", "baseline_seconds", "seconds", "cycles", "expert")},
        "new_tokens": args.new_tokens,
        "prompt_tokens": args.prompt_tokens,
        "runs": [measure(backend, args, prompts) for backend in backends],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    checks = [row["checks"] for row in result["runs"]]
    if any(value for check in checks for key, value in check.items() if key != "examples"):
        sys.exit(f"bench_live_edits: checks failed: {json.dumps(checks)}")


if __name__ == "__main__":
    main()
