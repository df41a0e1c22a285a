# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The ``ir3de`` command: fit a router, add or remove experts, route prompts, run the demo.

One module per command group (`experts`: fit, add-expert, remove-expert; `route`; `evaluate`: eval, calibrate;
`hub`: push, pull; `reference`: import-reference, export-reference; `demo`; `space`; `serve`; `recipe`), each with a
``COMMANDS`` list of `Command`: a name, help texts with examples, a function that declares its arguments and one that
runs it and returns the exit code. Argument types shared by the groups (and by ``python -m ir3de_hf.recipes.m2d2``)
live in `ir3de_hf.cli.arguments`. To add a command, write the two functions in its group and append a `Command`.

Exit codes: 0 success, 1 an error with a one-line message on stderr (missing file, bad data, unknown expert, a missing
optional extra), 2 a usage error (reported by argparse), 130 interrupted. ``IR3DE_DEBUG=1`` prints the traceback
before that line.

The package imports only the standard library: each command imports what it needs when it runs, and `main` builds
only the arguments of the command being run (those of ``fit`` import torch), so ``ir3de --help`` starts at once.
"""

from ._main import COMMANDS, Command, build_parser, main

__all__ = ["COMMANDS", "Command", "build_parser", "main"]
