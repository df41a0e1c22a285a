"""The fenced code blocks of a Markdown file (the README, docs/*.md), by section, and a runner for their Python that
checks shown output.

A block belongs to the nearest heading above it (any level) of its document. ``<!-- not run: reason -->`` on the line
right before a block marks it as not run, with its reason. In Python, an expression statement whose line ends with a
comment that is a Python literal (``out.expert_names  # ['code', 'legal']``) shows its value: `run_python` checks it,
with ``...`` inside the literal matching anything.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PYTHON = ("python", "py")
SHELL = ("bash", "sh", "shell", "console")

_FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$")
_NOT_RUN = re.compile(r"^<!--\s*not run:(.*?)-->\s*$")
_CHECK = "__readme_check__"


@dataclass(frozen=True)
class Block:
    section: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None  # the reason given by a `<!-- not run: ... -->` marker, None when unmarked
    document: str = "README.md"  # the file, relative to the repository root, in every error message

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line} ({self.section})"


def read_blocks(path: Path, document: str = "README.md") -> list[Block]:
    """Every fenced block of ``path`` in order (unclosed fences are an error); ``document`` names it in messages."""
    blocks: list[Block] = []
    section, language, start, body = "(before any heading)", None, 0, []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if language is None:
            if fence := _FENCE.match(line):
                language, start, body = fence.group(1).lower(), number, []
            elif heading := _HEADING.match(line):
                section = heading.group(1)
        elif line.strip() == "```":
            marker = _NOT_RUN.match(lines[start - 2]) if start >= 2 else None
            reason = marker.group(1).strip() if marker else None
            blocks.append(Block(section, start, language, "\n".join(body) + "\n", reason, document))
            language = None
        else:
            body.append(line)
    if language is not None:
        raise ValueError(f"{path}:{start}: the code block is never closed")
    return blocks


def run_python(block: Block, namespace: dict[str, Any]) -> None:
    """Executes ``block`` in ``namespace``; tracebacks and failed output checks name the document's line."""
    tree = ast.parse("\n" * block.line + block.code, filename=block.document)  # its line numbers, even in errors
    shown = shown_values(block)
    tree.body = [_checked(statement, shown) for statement in tree.body]
    namespace[_CHECK] = lambda value, line: _check(value, shown[line], f"{block.document}:{line} ({block.section})")
    try:
        exec(compile(ast.fix_missing_locations(tree), block.document, "exec"), namespace)
    finally:
        del namespace[_CHECK]


def shown_values(block: Block) -> dict[int, Any]:
    """Document line -> the literal its comment shows, for the lines whose comment is a Python literal."""
    shown = {}
    for token in tokenize.generate_tokens(io.StringIO(block.code).readline):
        if token.type == tokenize.COMMENT:
            with contextlib.suppress(ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # prose
                shown[block.line + token.start[0]] = ast.literal_eval(token.string[1:].strip())
    return shown


def _checked(statement: ast.stmt, shown: dict[int, Any]) -> ast.stmt:
    if not isinstance(statement, ast.Expr) or statement.end_lineno not in shown:
        return statement
    call = ast.Call(ast.Name(_CHECK, ast.Load()), [statement.value, ast.Constant(statement.end_lineno)], [])
    return ast.copy_location(ast.Expr(call), statement)


def _check(value: Any, expected: Any, where: str) -> None:
    if not _matches(value, expected):
        raise AssertionError(f"{where}: the README shows {expected!r}, the code gives {value!r}")


def _matches(value: Any, expected: Any) -> bool:
    if expected is Ellipsis:
        return True
    if isinstance(expected, dict):
        return (
            isinstance(value, Mapping)
            and set(value) == set(expected)
            and all(_matches(value[key], item) for key, item in expected.items())
        )
    if isinstance(expected, list | tuple):
        return (
            isinstance(value, type(expected))
            and len(value) == len(expected)
            and all(_matches(v, e) for v, e in zip(value, expected, strict=True))
        )
    return bool(value == expected)
