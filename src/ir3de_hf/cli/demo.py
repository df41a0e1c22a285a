# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``ir3de demo``: the Gradio Space on the demo router, or one test prompt per domain answered in the terminal."""

from __future__ import annotations

import argparse
import sys

from ._command import Command
from ._common import require_extra
from .arguments import positive_int

__all__ = ["COMMANDS"]


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cli", action="store_true", help="answer one test prompt per domain in the terminal instead of the Space app"
    )
    parser.add_argument("--max-new-tokens", type=positive_int, default=32, help="tokens per answer (--cli)")
    parser.add_argument("--rebuild", action="store_true", help="refit the cached demo router")


def _demo(args: argparse.Namespace) -> int:
    if not args.cli:
        require_extra("demo", ("gradio", "space"))
        return _space_app(rebuild=args.rebuild)
    require_extra("demo --cli", ("peft", "experts"))  # the demo experts are LoRA adapters
    from ..demo import load_demo_router, sample_prompts

    router = load_demo_router(rebuild=args.rebuild)
    prompts = sample_prompts(router.tokenizer)
    results = router.generate(list(prompts.values()), max_new_tokens=args.max_new_tokens, do_sample=False)
    for domain, result in zip(prompts, results, strict=True):
        print(f"[{domain}] -> {result.expert} (margin {result.margin:.2f})\n  prompt: {result.prompt[:160]!r}")
        print(f"  answer: {result.text[:240]!r}")
    return 0


def _space_app(rebuild: bool) -> int:
    """Becomes the Space app (``space_app/app.py`` of a checkout, or its copy in the installed wheel): this process
    is replaced by ``python app.py``, so a signal that stops ``ir3de demo`` (SIGTERM, Ctrl+C) stops the app and frees
    its port; a child process would be left serving."""
    import os

    from .._resources import resource_path
    from ..demo import load_demo_router

    app = resource_path("space_app/app.py")
    if rebuild:
        load_demo_router(rebuild=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, str(app)])


COMMANDS = [
    Command(
        "demo",
        "launch the Gradio Space on the demo router (or, with --cli, answer one test prompt per domain)",
        """examples:
  ir3de demo                                   # the Space app on http://127.0.0.1:7860
  IR3DE_ROUTER=org/my-router ir3de demo        # the Space app on another router
  ir3de demo --cli --max-new-tokens 64 --rebuild""",
        _demo_arguments,
        _demo,
    ),
]
