"""Commands that build venvs and install into them, for the install suites: a failure names the command, its last
lines of output and the free disk space (pip's own error is otherwise lost in a CI excerpt)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

# pip repeats this for each package it looks up in the machine's configured local indexes: noise, never the cause
_NOISE = "is ignored: it is neither a file nor a directory"


def run_install(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Runs ``command``; on failure the test fails with a message that says why."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode == 0:
        return
    lines = [line for line in (done.stdout + done.stderr).splitlines() if _NOISE not in line]
    free_gb = shutil.disk_usage(cwd or Path.cwd()).free / 1e9
    pytest.fail(
        f"{' '.join(command[-3:])} failed (exit {done.returncode}; {free_gb:.1f} GB free on its disk): "
        + " | ".join(lines[-12:])
    )
