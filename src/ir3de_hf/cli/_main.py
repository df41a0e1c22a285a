# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The ``ir3de`` parser and entry point: every group's commands, one-line errors, ``IR3DE_DEBUG``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection, Sequence

from ._command import Command
from .demo import COMMANDS as DEMO
from .errors import DEBUG_ENV, EXPECTED_ERRORS, report_error
from .evaluate import COMMANDS as EVALUATE
from .experts import COMMANDS as EXPERTS
from .hub import COMMANDS as HUB
from .recipe import COMMANDS as RECIPE
from .reference import COMMANDS as REFERENCE
from .route import COMMANDS as ROUTE
from .serve import COMMANDS as SERVE
from .space import COMMANDS as SPACE

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

COMMANDS: list[Command] = [
    *EXPERTS,
    *ROUTE,
    *EVALUATE,
    *HUB,
    *REFERENCE,
    *DEMO,
    *SPACE,
    *SERVE,
    *RECIPE,
]  # the order of `ir3de --help`


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``ir3de`` parser: every subcommand with its help line, and the arguments of ``commands``.

    Args:
        commands: the subcommands whose arguments to declare (default: all). `main` declares only the one being
            run, because declaring some imports torch (``fit`` lists the aggregations), which ``ir3de --help`` and
            the other commands do not need.
    """
    parser = argparse.ArgumentParser(
        prog="ir3de",
        description="IR3DE linear router: fit it on each expert's text, manage experts, route prompts.",
        epilog=f"Run 'ir3de COMMAND --help' for the options and examples of a command. {DEBUG_ENV}=1 shows the "
        "traceback of an error.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        subparser = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if commands is None or command.name in commands:
            command.configure(subparser)
        subparser.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ir3de`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top-level parser has no option but --help, so its first positional argument is the command.
    parser = build_parser(commands=[argument for argument in argv if not argument.startswith("-")][:1])
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "texts", None) is not None and not any(item.startswith("-") for item in extra):
        args.texts += extra  # prompts given after options: ``ir3de route DIR --json "text"``
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.run(args))
    except (*EXPECTED_ERRORS, KeyboardInterrupt) as error:
        return report_error(f"ir3de {args.command}", error)
