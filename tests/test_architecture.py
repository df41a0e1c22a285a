"""The package's shape: one-way dependencies (no import cycle, the math free of transformers) and services that use
the router's public API only."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ir3de_hf"
MODULES = sorted(
    ".".join(("ir3de_hf", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
)
# Names a router is held by in services; reading `<name>._something` from them is reaching into private state.
ROUTER_NAMES = r"(?:router|model|clone|twin|current|fitted|loaded|self\.router|holder\.current)"


def _module_file(module: str) -> Path:
    parts = module.split(".")[1:]
    candidate = PACKAGE.joinpath(*parts).with_suffix(".py")
    return candidate if candidate.is_file() else PACKAGE.joinpath(*parts, "__init__.py")


def _imports(module: str) -> set[str]:
    """The package modules ``module`` imports at run time: every import statement, also inside functions, except
    those under ``if TYPE_CHECKING:``."""
    path = _module_file(module)
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and ast.unparse(branch.test) == "TYPE_CHECKING"
        for node in ast.walk(branch)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in MODULES and name != module)
    return found


def test_the_import_graph_of_the_package_has_no_cycle():
    graph = {module: _imports(module) for module in MODULES}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dependency in sorted(graph[module]):
            if dependency == "ir3de_hf":  # `from ir3de_hf import X` in a service: the package entry point
                continue
            if state.get(dependency) == "open":
                cycle = [*path[path.index(dependency) :], dependency]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dependency not in state:
                visit(dependency, [*path, dependency])
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])
    assert "ir3de_hf.store" in graph and "ir3de_hf.modeling_ir3de" in graph["ir3de_hf.hub._push"]


@pytest.mark.parametrize("module", ["ir3de_hf.statistics", "ir3de_hf.aggregation", "ir3de_hf.store"])
def test_the_math_and_the_store_import_no_transformers(module):
    # importing a submodule runs the package __init__ first (which imports transformers): stub the package
    code = (
        "import sys, types\n"
        "package = sys.modules['ir3de_hf'] = types.ModuleType('ir3de_hf')\n"
        f"package.__path__ = [{str(PACKAGE)!r}]\n"
        f"import {module}\n"
        "print([m for m in sys.modules if m.split('.')[0] == 'transformers'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_module_imports_in_a_fresh_interpreter_leaves_first():
    """The graph walk above sees import statements; this runs them, the most dependent modules first."""
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)"
    order = [module for module in reversed(MODULES) if not module.endswith("__main__")]  # __main__ runs the CLI
    subprocess.run([sys.executable, "-c", code, *order], check=True, capture_output=True)


def test_no_module_outside_the_model_and_store_reads_private_router_state():
    pattern = re.compile(rf"\b{ROUTER_NAMES}\._[a-z]\w*")
    allowed = {PACKAGE / "modeling_ir3de.py", PACKAGE / "store.py"}
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in (PACKAGE, ROOT / "space_app")
        for path in sorted(folder.rglob("*.py"))
        if path not in allowed
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert offenders == []
