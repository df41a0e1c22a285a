# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``ir3de space build`` and ``ir3de space push``: a self-contained Hugging Face Space folder for a router."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._command import Command
from ._common import load_router

__all__ = ["COMMANDS"]


def _space_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="space_action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="write a self-contained Space folder for a router")
    build.add_argument("out", type=Path, help="the folder to write (missing or empty)")
    build.add_argument("--router", help="a saved router (directory or Hub id); default: the demo router and experts")
    source = build.add_mutually_exclusive_group()
    source.add_argument("--package", metavar="URL", help="install ir3de_hf from this pip URL (git+https://...)")
    source.add_argument("--wheel", type=Path, help="vendor this ir3de_hf wheel (default: build one from the checkout)")
    build.add_argument(
        "--dataset", dest="datasets", action="append", default=[], help="a Hub dataset id the Space uses (its card)"
    )
    build.set_defaults(space_run=_space_build)
    push = actions.add_parser("push", help="upload a built Space folder to a Gradio Space on the Hub")
    push.add_argument("folder", type=Path, help="a folder written by `ir3de space build`")
    push.add_argument("repo_id", help="the Space, e.g. me/ir3de-router (created if missing)")
    push.add_argument("--private", action="store_true", help="create the Space as private")
    push.add_argument("--message", help="commit message")
    push.set_defaults(space_run=_space_push)


def _space(args: argparse.Namespace) -> int:
    return int(args.space_run(args))


def _space_build(args: argparse.Namespace) -> int:
    from ..space_build import build_space

    if args.router is None:
        from ..demo import load_demo_router

        router = load_demo_router()
    else:
        router = load_router(args.router)
    out = build_space(args.out, router, package=args.package, wheel=args.wheel, datasets=args.datasets)
    print(f"wrote the Space to {out}; try it with `cd {out} && pip install -r requirements.txt && python app.py`")
    return 0


def _space_push(args: argparse.Namespace) -> int:
    from huggingface_hub.utils import validate_repo_id

    from ..space_build import push_space

    validate_repo_id(args.repo_id)
    commit = push_space(args.folder, args.repo_id, private=args.private or None, message=args.message)
    print(f"pushed {args.folder} to the Space {args.repo_id} at {commit.oid}")
    return 0


COMMANDS = [
    Command(
        "space",
        "build a self-contained Hugging Face Space folder for a router, or push one to the Hub",
        """examples:
  ir3de space build my-space                            # the demo router, ir3de_hf vendored as a wheel
  ir3de space build my-space --router me/my-router --package git+https://github.com/ORG/ir3de_hf
  cd my-space && pip install -r requirements.txt && python app.py    # try it locally
  ir3de space push my-space me/ir3de-router""",
        _space_arguments,
        _space,
    ),
]
