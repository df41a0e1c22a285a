# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``ir3de serve``: an OpenAI-compatible server that routes each request to an expert (its arguments and its run
live with the server, in `ir3de_hf.serve.command`)."""

from __future__ import annotations

import argparse

from ._command import Command
from ._common import load_router, require_extra

__all__ = ["COMMANDS"]


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    from ..serve.command import configure

    configure(parser)


def _serve(args: argparse.Namespace) -> int:
    require_extra("serve", ("fastapi", "serve"), ("uvicorn", "serve"))
    from ..serve.command import check_exposure, serve

    check_exposure(args)  # before the router loads: a refusal is immediate

    if args.router == "demo":
        from ..demo import load_demo_router

        return serve(load_demo_router(), args)
    return serve(load_router(args.router), args)


def _vllm_arguments(parser: argparse.ArgumentParser) -> None:
    from ..serve.vllm_command import configure

    configure(parser)


def _vllm_command(args: argparse.Namespace) -> int:
    from ..serve.vllm_command import run

    if args.router == "demo":
        from ..demo import load_demo_router

        return run(load_demo_router(), args)
    return run(load_router(args.router), args)


COMMANDS = [
    Command(
        "serve",
        "an OpenAI-compatible server that routes each request to an expert (in-process, or on vLLM servers)",
        """examples:
  ir3de serve demo                              # http://127.0.0.1:8000/v1, model "ir3de" routes
  ir3de serve my-router --port 9000 --api-key secret --fallback-expert general
  ir3de serve demo --expert-url code=http://127.0.0.1:8001/v1 --expert-url legal=http://127.0.0.1:8001/v1 ...""",
        _serve_arguments,
        _serve,
    ),
    Command(
        "vllm-command",
        "the vLLM command line that serves a router's LoRA experts on one engine (for ir3de serve --vllm-url)",
        """examples:
  ir3de vllm-command demo                       # prints the line (env vars + python -m vllm... --lora-modules)
  ir3de vllm-command my-router --port 8100 --run  # starts it (make vllm installs vLLM first)
  ir3de serve my-router --vllm-url http://127.0.0.1:8100/v1""",
        _vllm_arguments,
        _vllm_command,
    ),
]
