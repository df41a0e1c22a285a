"""The package's shape: one-way dependencies (no import cycle, the math free of transformers), a core that routes with
the core dependencies alone and never imports the workshop, and services that use the router's public API only."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from ir3de_hf._extras import EXTRAS
from ir3de_hf._resources import PACKAGED

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ir3de_hf"
MODULES = sorted(
    ".".join(("ir3de_hf", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
)
# Names a router is held by in services; reading `<name>._something` from them is reaching into private state.
ROUTER_NAMES = r"(?:router|model|clone|twin|current|fitted|loaded|self\.router|holder\.current)"

# The library: the router, its statistics, fitting, persistence, cards, evaluation and the experts behind it. It
# routes with the core dependencies alone and imports neither the workshop nor a service. A new module is placed in
# one of the three sets (test_every_module_is_core_workshop_or_service).
CORE = {
    "ir3de_hf",
    "ir3de_hf._axl_format",
    "ir3de_hf._embedding_file",
    "ir3de_hf._extras",
    "ir3de_hf._figures",
    "ir3de_hf._lazy",
    "ir3de_hf._resources",
    "ir3de_hf._templates",
    "ir3de_hf.aggregation",
    "ir3de_hf.calibration",
    "ir3de_hf.checkpoint",
    "ir3de_hf.configuration_ir3de",
    "ir3de_hf.distributed",
    "ir3de_hf.encoder",
    "ir3de_hf.evaluation",
    "ir3de_hf.experts",
    "ir3de_hf.fit_checkpoint",
    "ir3de_hf.fitting",
    "ir3de_hf.generation",
    "ir3de_hf.hub",
    "ir3de_hf.hub._atomic",
    "ir3de_hf.hub._companions",
    "ir3de_hf.hub._locations",
    "ir3de_hf.hub._push",
    "ir3de_hf.hub._router_files",
    "ir3de_hf.inputs",
    "ir3de_hf.model_card",
    "ir3de_hf.modeling_ir3de",
    "ir3de_hf.outputs",
    "ir3de_hf.perplexity",
    "ir3de_hf.prompts",
    "ir3de_hf.reference_import",
    "ir3de_hf.routing_tables",
    "ir3de_hf.shared_statistics",
    "ir3de_hf.statistics",
    "ir3de_hf.store",
    "ir3de_hf.text_sources",
    "ir3de_hf.tokenization",
}
# What builds the project's own assets (downloads, the benchmark, demo experts, recipes, baselines): optional
# subpackages behind the extras, which the core never imports.
WORKSHOP = ("ir3de_hf.assets", "ir3de_hf.baselines", "ir3de_hf.data", "ir3de_hf.demo", "ir3de_hf.recipes")
# Front ends on the library: they take a router and use its public API.
SERVICES = ("ir3de_hf.__main__", "ir3de_hf.cli", "ir3de_hf.serve", "ir3de_hf.space_build")
# What a core module may import with an import statement beyond the standard library: the core dependencies of
# pyproject.toml, and numpy and typing_extensions, which transformers and torch require.
CORE_IMPORTS = {"huggingface_hub", "numpy", "safetensors", "tokenizers", "torch", "tqdm", "transformers"}
CORE_IMPORTS |= {"typing_extensions"}
# optional module -> the extra that installs it; a core module reaches it through `require(module, extra=...)` only
OPTIONAL_IMPORTS = {
    "accelerate": "experts",
    "peft": "experts",
    "datasets": "data",
    "pyarrow": "data",  # with datasets
    "gguf": "data",
    "matplotlib": "data",
    "jinja2": "data",
    "gradio": "space",
    "fastapi": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "model2vec": "bench",
    "skeletoken": "bench",
    "sklearn": "bench",
}
DISTRIBUTIONS = {"pyarrow": "datasets", "sklearn": "scikit-learn"}  # import name -> distribution, where they differ
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(f"{prefix}.") for prefix in prefixes)


def _module_file(module: str) -> Path:
    parts = module.split(".")[1:]
    candidate = PACKAGE.joinpath(*parts).with_suffix(".py")
    return candidate if candidate.is_file() else PACKAGE.joinpath(*parts, "__init__.py")


def _import_nodes(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of ``tree`` that run, also inside functions: all but those under ``if TYPE_CHECKING:``."""
    skipped = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and ast.unparse(branch.test) == "TYPE_CHECKING"
        for node in ast.walk(branch)
    }
    return [
        node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skipped
    ]


def _imported_names(path: Path, package: str) -> set[str]:
    """Every dotted name an import of ``path`` may load (``from a import b`` gives ``a`` and ``a.b``), relative imports
    resolved against ``package``."""
    found = set()
    for node in _import_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.update([f"{base}.{alias.name}" for alias in node.names] + [base])
        else:
            found.update(alias.name for alias in node.names)
    return found


def _imports(module: str) -> set[str]:
    """The package modules ``module`` imports at run time: every import statement, also inside functions, except
    those under ``if TYPE_CHECKING:``."""
    path = _module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return {name for name in _imported_names(path, package) if name in MODULES and name != module}


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


def test_every_module_is_core_workshop_or_service():
    kinds = {
        module: [kind for kind, inside in (("core", module in CORE), ("workshop", _within(module, WORKSHOP)),
                                           ("service", _within(module, SERVICES))) if inside]
        for module in MODULES
    }  # fmt: skip
    assert {module: found for module, found in kinds.items() if len(found) != 1} == {}
    assert set(MODULES) >= CORE


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_imports_neither_the_workshop_nor_a_service(module):
    assert {name for name in _imports(module) if name not in CORE} == set()


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_imports_only_core_dependencies(module):
    """No import statement of a core module, at module level or in a function, loads an optional package: those are
    reached through `ir3de_hf._extras.require`, which names the extra when one is missing."""
    path = _module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    third_party = {
        name.split(".")[0]
        for name in _imported_names(path, package)
        if name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] not in {"ir3de_hf", ""}
    }
    assert third_party - CORE_IMPORTS == set()


def _require_calls(path: Path) -> list[tuple[str, str]]:
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if name == "require" and node.args and isinstance(node.args[0], ast.Constant):
                extra = next(keyword.value for keyword in node.keywords if keyword.arg == "extra")
                calls.append((node.args[0].value, ast.literal_eval(extra)))
    return calls


def test_every_require_names_the_extra_that_installs_the_module():
    calls = {
        (str(path.relative_to(ROOT)), module, extra)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_extras.py"  # its doctest requires json and a missing module
        for module, extra in _require_calls(path)
    }
    assert {module for _, module, _ in calls} >= {"peft", "matplotlib.figure", "datasets", "accelerate"}
    wrong = {call for call in calls if OPTIONAL_IMPORTS.get(call[1].split(".")[0]) != call[2]}
    assert wrong == set()


def _extra_requirements(extra: str) -> set[str]:
    """The distributions that ``pip install 'ir3de_hf[extra]'`` adds, following the extras it includes."""
    names = set()
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0)
        if name == "ir3de_hf":
            for included in re.search(r"\[(.*)\]", requirement).group(1).split(","):
                names |= _extra_requirements(included.strip())
        else:
            names.add(name.lower().replace("_", "-"))
    return names


def test_the_extras_of_pyproject_are_the_extras_the_code_names():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras) == set(EXTRAS)
    core = {re.match(r"[A-Za-z0-9_.\-]+", r).group(0).lower() for r in PYPROJECT["project"]["dependencies"]}
    assert core == {"torch", "transformers", "safetensors", "huggingface-hub", "tokenizers", "tqdm", "packaging"}
    for module, extra in OPTIONAL_IMPORTS.items():
        assert DISTRIBUTIONS.get(module, module) in _extra_requirements(extra), (module, extra)
    assert _extra_requirements("space") >= _extra_requirements("experts") | _extra_requirements("data")
    assert _extra_requirements("serve") >= _extra_requirements("experts")
    assert _extra_requirements("dev") >= set().union(*(_extra_requirements(e) for e in extras if e != "dev"))


def test_pyproject_packages_every_package_and_the_resource_folders():
    """The package list is explicit (a mapped folder is not discovered): it must name every package under src/ and
    map the folders `resource_path` finds to where the repository keeps them."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    code = {".".join(("ir3de_hf", *init.parent.relative_to(PACKAGE).parts)) for init in PACKAGE.rglob("__init__.py")}
    mapped = {f"ir3de_hf.{folder}": where for folder, where in PACKAGED.items()}
    assert set(setuptools["packages"]) == code | set(mapped)
    assert setuptools["package-dir"] == {"": "src", **mapped}
    assert all((ROOT / where).is_dir() and not (PACKAGE / folder).exists() for folder, where in PACKAGED.items())


def test_services_take_the_router_from_the_package():
    """A service (the server, the Space) is handed a router and uses its public API: it imports the class from
    `ir3de_hf`, never from the module that defines it (nor anything private of it)."""
    sources = [(path, "ir3de_hf.space_app") for path in sorted((ROOT / "space_app").glob("*.py"))]
    sources += [(_module_file(m), m.rpartition(".")[0]) for m in MODULES if _within(m, ("ir3de_hf.serve",))]
    sources += [(_module_file("ir3de_hf.space_build"), "ir3de_hf")]
    assert len(sources) > 10
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path, package in sources
        for name in _imported_names(path, package)
        if name.startswith("ir3de_hf.modeling_ir3de")
    }
    assert offenders == set()


def _space_imports() -> list[tuple[str, str]]:
    """``(module, name)`` for every ``from ir3de_hf... import name`` of the Space app, also inside functions."""
    found = []
    for path in sorted((ROOT / "space_app").glob("*.py")):
        for node in _import_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ir3de_hf":
                found += [(node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("ir3de_hf") for alias in node.names), path
    return found


def _not_public(imports: list[tuple[str, str]]) -> list[str]:
    """The ``module.name`` of ``imports`` that are not public: the module's path has an underscore, or the name is
    not in its `__all__` (checked in a fresh interpreter, so that this test's imports do not mask a missing one)."""
    code = "import importlib, json, sys\nfor module, name in json.loads(sys.argv[1]):\n"
    code += "    print(name in getattr(importlib.import_module(module), '__all__', ()))"
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(imports)], capture_output=True, text=True, check=True
    )
    return [
        f"{module}.{name}"
        for (module, name), public in zip(imports, result.stdout.split(), strict=True)
        if public != "True" or any(part.startswith("_") for part in module.split("."))
    ]


def test_the_space_uses_public_api_only():
    """The Space is a user of the library: each name it imports is public (`_not_public`), so a refactoring of
    private code never breaks a deployed Space."""
    imports = _space_imports()
    assert ("ir3de_hf.hub", "local_path_or_hub_id") in imports and len(imports) >= 10
    assert _not_public(imports) == []


def _documented_imports() -> list[tuple[str, str]]:
    """``(module, name)`` for every ``from ir3de_hf... import a, b`` in the README and docs/*.md: the API we teach."""
    pattern = re.compile(r"from (ir3de_hf[\w.]*) import ([\w, ]+)")
    texts = [(ROOT / "README.md").read_text(), *(path.read_text() for path in sorted((ROOT / "docs").glob("*.md")))]
    return sorted(
        {
            (match[1], name.strip())
            for text in texts
            for match in pattern.finditer(text)
            for name in match[2].split(",")
            if name.strip()
        }
    )


def test_what_the_docs_teach_is_declared_public():
    """The public API is what the README and the docs teach: each of those names is public (`_not_public`);
    everything else may change without notice."""
    imports = _documented_imports()
    assert ("ir3de_hf.outputs", "decide") in imports and ("ir3de_hf", "IR3DERouterModel") in imports
    assert _not_public(imports) == []
