"""GPU check of `ir3de serve`: the demo router in front of vLLM (SmolLM2 + the six demo LoRA adapters) against the
local backend (bf16 experts on cuda:0, micro-batched). Writes JSON to benchmarks/results/serve_gpu.json.

    python scripts/gpu_serve_check.py [--model-dir DIR] [--install-vllm] [--clients 1 8 32] [--new-tokens 64]

``--model-dir``: a Hugging Face directory of SmolLM2-135M-Instruct; the router is then fitted on it (seconds), for
hosts without the asset cache (default: the demo router and SmolLM2 of the asset cache, see ir3de_hf.assets).
vLLM is started as ``python -m vllm.entrypoints.openai.api_server --model DIR --enable-lora --lora-modules
code=space_app/experts/code ...``, and ``ir3de serve``'s app is run with ``--expert-url NAME=http://127.0.0.1:PORT/v1``
for each expert; vLLM is also called directly (each request naming the adapter the router picks), so that the JSON
has the rows of bench_serve.py's vLLM table (direct, ir3de serve in front, local; requests/s and tokens/s). When
vLLM cannot be imported (nor installed with ``--install-vllm``), the local backend is still measured on the GPU and
the JSON records why vLLM was not.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.data import load_benchmark
from ir3de_hf.demo import DOMAINS, ENCODER_ID, demo_experts_path, load_demo_router
from ir3de_hf.experts import ExpertPool
from ir3de_hf.serve.app import ServeSettings, create_app
from ir3de_hf.serve.backends.local import LocalBackend
from ir3de_hf.serve.backends.remote import RemoteBackend, RemoteEndpoint
from ir3de_hf.serve.decision import Decider

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_serve import Served, run_clients  # noqa: E402
from servers import Process  # noqa: E402


def vllm_available(install: bool) -> str | None:
    """None when vLLM can be imported (installing it first if asked), else why not."""
    if importlib.util.find_spec("vllm") is not None:
        return None
    if not install:
        return "vllm is not installed (pass --install-vllm to pip install it)"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "vllm"], capture_output=True, text=True)
    if done.returncode != 0 or importlib.util.find_spec("vllm") is None:
        return f"pip install vllm failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return None


def start_vllm(model_dir: Path, experts: dict[str, Path], port: int, log: Path, start_s: float) -> Process:
    """vLLM in this interpreter (bfloat16, the experts as LoRA modules), ready when /health answers."""
    ranks = [json.loads((path / "adapter_config.json").read_text())["r"] for path in experts.values()]
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        "smollm2",
        "--dtype",
        "bfloat16",
        "--port",
        str(port),
        "--enable-lora",
        "--max-loras",
        str(len(experts)),
        "--max-lora-rank",
        str(max(8, *ranks)),
        "--lora-modules",
        *(f"{name}={path}" for name, path in experts.items()),
    ]
    print(" ".join(command), flush=True)
    return Process(command, f"http://127.0.0.1:{port}", log=log, start_s=start_s)


def measure(
    app: Any, prompts: list[str], levels: list[int], new_tokens: int, url: str | None = None, models: Any = None
) -> list[dict[str, Any]]:
    """Requests/s and tokens/s at each client count, of ``app`` (served here) or of the server at ``url`` (vLLM
    called directly, each prompt naming its adapter: ``models[i]``)."""
    server = Served(app) if url is None else None
    base = server.url if server is not None else str(url)
    rows = []
    try:
        asyncio.run(run_clients(base, prompts[:4], 4, new_tokens, models and models[:4]))  # warm-up: loads, graphs
        for clients in levels:
            count = max(16, 4 * clients)
            batch = [prompts[i % len(prompts)] for i in range(count)]
            named = [models[i % len(prompts)] for i in range(count)] if models else None
            run = asyncio.run(run_clients(base, batch, clients, new_tokens, named))
            rows.append({"clients": clients, "requests": len(batch), **run.rates()})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if server is not None:
            server.stop()
    return rows


def demo_router(model_dir: Path | None) -> IR3DERouterModel:
    """The demo router (from the asset cache), or, on a host without it, the same fit on ``model_dir``'s embeddings
    with the six demo adapters as experts."""
    if model_dir is None:
        return load_demo_router()
    router = IR3DERouterModel.from_encoder(str(model_dir), encoder_id=ENCODER_ID)
    train = load_benchmark()["train"]
    for domain in DOMAINS:
        texts = [text for text, label in zip(train["text"], train["domain"], strict=True) if label == domain]
        router.add_expert(domain, texts=texts, source=str(demo_experts_path() / domain), base_model=str(model_dir))
    return router


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="SmolLM2-135M-Instruct as a Hugging Face directory")
    parser.add_argument("--install-vllm", action="store_true", help="pip install vllm when it cannot be imported")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--vllm-port", type=int, default=8011)
    parser.add_argument("--vllm-start-s", type=float, default=600)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve_gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_serve_check: no CUDA device; run it on a GPU machine.")

    router = demo_router(args.model_dir)
    bases = dict(router.expert_pool.base_model_paths)
    model_dir = args.model_dir or Path(bases[ENCODER_ID])
    router.expert_pool = ExpertPool(
        dtype=torch.bfloat16, device_map="cuda:0", base_model_paths={ENCODER_ID: model_dir}
    )
    tokenizer = router.tokenizer
    test = load_benchmark()["test"]
    prompts = [
        tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][: args.prompt_tokens])
        for text in test["text"][:256]
    ]
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "new_tokens": args.new_tokens,
        "prompt_tokens": args.prompt_tokens,
    }
    local = LocalBackend(router, max_batch_size=32, batch_wait_ms=5)
    report["local_bf16_batched"] = measure(
        create_app(Decider(router), local, ServeSettings()), prompts, args.clients, args.new_tokens
    )

    unavailable = vllm_available(args.install_vllm)
    report["vllm"] = {"available": unavailable is None, "why_not": unavailable}
    if unavailable is None:
        experts = {name: demo_experts_path() / name for name in router.expert_names}
        log = args.out.with_suffix(".vllm.log")
        server = None
        try:
            server = start_vllm(model_dir, experts, args.vllm_port, log, args.vllm_start_s)
            import vllm

            report["vllm"]["version"] = vllm.__version__
            remote = RemoteBackend({name: RemoteEndpoint(f"{server.url}/v1", name) for name in router.expert_names})
            app = create_app(Decider(router), remote, ServeSettings())
            report["proxy_to_vllm"] = measure(app, prompts, args.clients, args.new_tokens)
            routed = [decision.expert for decision in Decider(router).route(prompts)]
            report["vllm_direct"] = measure(None, prompts, args.clients, args.new_tokens, server.url, routed)
        except RuntimeError as error:
            report["vllm"]["why_not"] = f"{error}; see {log.name}"
        finally:
            if server is not None:
                server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
