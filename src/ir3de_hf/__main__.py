# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``python -m ir3de_hf``: the ``ir3de`` command, also for launchers that take a module (``torchrun -m ir3de_hf``)."""

import sys

from .cli import main

sys.exit(main())
