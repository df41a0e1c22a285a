# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``ir3de import-reference`` and ``ir3de export-reference``: routers from and to IR3DE-AXL statistics files (the
paper's published A and b)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._command import Command
from ._common import check_output, load_router
from .arguments import add_overwrite_argument

__all__ = ["COMMANDS"]


def _import_reference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="FILES_OR_REPO",
        help="IR3DE-AXL .pth statistics: files, globs, directories or a Hub repository of them",
    )
    parser.add_argument("--output", type=Path, required=True, help="where to save the router")
    parser.add_argument(
        "--encoder", help="the embedder the statistics were summed over (default: the files' embedder Hub id)"
    )
    parser.add_argument("--encoder-id", help="the Hub id to record when --encoder is a local copy")
    parser.add_argument("--include", default="*.pth", help="file pattern in directories and repositories")
    parser.add_argument("--revision", help="revision of a Hub repository of statistics")
    add_overwrite_argument(parser, "OUTPUT")


def _import_reference(args: argparse.Namespace) -> int:
    from ..reference_import import import_reference_router

    check_output(args.output, args.overwrite)
    router = import_reference_router(
        args.sources, encoder=args.encoder, encoder_id=args.encoder_id, include=args.include, revision=args.revision
    )
    router.save_pretrained(args.output, overwrite=args.overwrite)
    padded = [spec.name for spec in router.config.expert_specs if spec.includes_padding]
    print(
        f"imported {router.num_experts} expert(s) ({', '.join(router.expert_names)}) over {router.config.encoder}; "
        f"padding counted in: {', '.join(padded) or 'none'}; saved to {args.output}"
    )
    return 0


def _export_reference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id)")
    parser.add_argument("--output", type=Path, required=True, help="the .pth file to write")
    parser.add_argument("--expert", action="append", metavar="NAME", help="export only these experts (repeatable)")


def _export_reference(args: argparse.Namespace) -> int:
    from ..reference_import import export_reference

    router = load_router(args.router)
    path = export_reference(router, args.output, args.expert)
    print(f"wrote {len(args.expert or router.expert_names)} expert(s) as IR3DE-AXL statistics to {path}")
    return 0


COMMANDS = [
    Command(
        "import-reference",
        "build a router from IR3DE-AXL statistics files (the paper's published A and b)",
        """examples:
  ir3de import-reference Erosinho/IR3DE-stats --include '*_mergebench.pth' --output mergebench-router
  ir3de import-reference stats/*.pth --encoder ./Meta-Llama-3-8B --encoder-id meta-llama/Meta-Llama-3-8B \\
      --output my-router""",
        _import_reference_arguments,
        _import_reference,
    ),
    Command(
        "export-reference",
        "write a router's experts as an IR3DE-AXL statistics file that AXL peers load",
        """examples:
  ir3de export-reference my-router --output my-router_stats.pth
  ir3de export-reference me/ir3de-smollm2 --expert code --expert legal --output code_legal.pth""",
        _export_reference_arguments,
        _export_reference,
    ),
]
