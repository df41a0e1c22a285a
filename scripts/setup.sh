#!/usr/bin/env bash
# Create the virtual environment and install the project. torch is installed FIRST and pinned: an unpinned
# torch pulled in by a dependency would take a multi-GB CUDA build.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[dev,space]"
