#!/usr/bin/env bash
# Create the virtual environment and install the project. torch is installed FIRST and pinned: an unpinned
# torch pulled in by a dependency would take a multi-GB CUDA build.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"  # dev includes every extra (experts, data, space, serve, bench)
# The Debian corpus is fetched with `apt-get download`, which needs package lists; a fresh machine may have none.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
    apt-get update -qq
fi
# The Space's browser test drives Debian's headless Chromium through its chromedriver (selenium, in the dev extra).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
fi
