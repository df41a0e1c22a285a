# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``ir3de push`` and ``ir3de pull``: a saved router to and from the Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._command import Command
from ._common import load_router
from .arguments import add_overwrite_argument

__all__ = ["COMMANDS"]


def _push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router directory")
    parser.add_argument("repo_id", help="the Hub repository, e.g. me/my-router (created if missing)")
    parser.add_argument("--revision", help="an existing branch to push to (default: main)")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument(
        "--encoder-by-reference",
        action="store_true",
        help="leave the embedding table out; it is rebuilt from the encoder repository at load time",
    )


def _push(args: argparse.Namespace) -> int:
    from huggingface_hub.utils import validate_repo_id

    from ..hub import push_router

    validate_repo_id(args.repo_id)  # before loading the router, which may take a while
    commit = push_router(
        load_router(args.router),
        args.repo_id,
        revision=args.revision,
        commit_message=args.message,
        private=args.private or None,
        encoder_by_reference=args.encoder_by_reference,
    )
    print(f"pushed {args.router} to {args.repo_id} at {commit.oid}")
    return 0


def _pull_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo_id", help="the Hub repository of a router")
    parser.add_argument("--revision", help="branch, tag or commit (default: main)")
    parser.add_argument("--local-dir", type=Path, help="copy the files here (default: the HF cache)")
    add_overwrite_argument(parser, "LOCAL_DIR")


def _pull(args: argparse.Namespace) -> int:
    from ..hub import pull_router
    from ..hub._router_files import check_save_target

    if args.local_dir is None or not check_save_target(args.local_dir, args.overwrite):
        print(pull_router(args.repo_id, args.local_dir, revision=args.revision))
        return 0
    from ..hub._atomic import atomic_directory

    with atomic_directory(args.local_dir, keep_others=False) as staging:  # --overwrite: the router replaces it whole
        pull_router(args.repo_id, staging, revision=args.revision)
    print(args.local_dir)
    return 0


COMMANDS = [
    Command(
        "push",
        "upload a saved router (config, weights, tokenizer, model card) to the Hub",
        """examples:
  ir3de push my-router me/ir3de-smollm2
  ir3de push my-router me/ir3de-smollm2 --encoder-by-reference --message 'add the fiction expert'""",
        _push_arguments,
        _push,
    ),
    Command(
        "pull",
        "download a router from the Hub and print where it is",
        """examples:
  ir3de pull me/ir3de-smollm2
  ir3de pull me/ir3de-smollm2 --revision 0123abcd --local-dir ./router""",
        _pull_arguments,
        _pull,
    ),
]
