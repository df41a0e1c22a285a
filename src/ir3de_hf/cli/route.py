# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``ir3de route``: the expert each prompt goes to, with every expert's score (as text or strict JSON)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from ._command import Command
from ._common import load_router

__all__ = ["COMMANDS"]


def _route_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id)")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="prompts to route (default: all of stdin as one)")
    parser.add_argument(
        "--file", dest="files", type=Path, action="append", default=[], help="a prompt read from a file"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list: per prompt the expert (null without evidence), the margin (best minus second-best "
        "score; null when it is not a finite number, as with a single expert), no_evidence, every expert's score "
        "and the text",
    )


def _route(args: argparse.Namespace) -> int:
    prompts = list(args.texts) + [_read_prompt(path) for path in args.files]
    if not prompts:
        prompts = [sys.stdin.read()]
    router = load_router(args.router)
    output = router.route(prompts)
    results = []
    for row, prompt in enumerate(prompts):
        scores = dict(zip(router.expert_names, output.logits[row].tolist(), strict=True))
        results.append(
            {
                "expert": output.expert_names[row],
                "margin": float(output.margins[row]),
                "no_evidence": bool(output.no_evidence[row]),
                "scores": scores,
                "text": prompt,
            }
        )
    if args.json:
        print(json.dumps([_json_ready(result) for result in results], ensure_ascii=False, indent=2, allow_nan=False))
        return 0
    for result in results:
        ranked = sorted(result["scores"].items(), key=lambda item: -item[1])
        details = "  ".join(f"{name}={score:.3f}" for name, score in ranked)
        expert = result["expert"] or "(no evidence)"
        print(f"{expert}\tmargin={result['margin']:.3f}\t{details}")
    return 0


def _read_prompt(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from error


def _json_ready(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with every non-finite number as None: JSON has no Infinity or NaN (strict parsers reject them)."""
    scores = {name: _finite(score) for name, score in result["scores"].items()}
    return {**result, "margin": _finite(result["margin"]), "scores": scores}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


COMMANDS = [
    Command(
        "route",
        "print the expert each prompt goes to, with every expert's score",
        """examples:
  ir3de route my-router "def main():\\n    return 0" "The Licensee shall not sublicense the Software."
  ir3de route my-router --file prompt.txt --json
  cat prompt.txt | ir3de route my-router""",
        _route_arguments,
        _route,
    ),
]
