"""What the command-line bad-input suites share: a directory's digest (any write shows) and the one error line of a
refused ``ir3de`` command."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ir3de_hf.cli import main


def directory_digest(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with its content hash: any write, removal or new file shows."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(root.rglob("*"))
    }


def error_line(stderr: str) -> str:
    """The one line of the error (progress bars of transformers and datasets may share stderr)."""
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if ": error: " in line]
    return line


def refused(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> str:
    """Runs ``ir3de ARGV``, which must exit with ``code`` (2: a usage error from argparse, 1: our refusal), and
    returns its one error line."""
    capsys.readouterr()
    if code == 2:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    else:
        assert main(argv) == 1
    return error_line(capsys.readouterr().err)
