"""The built wheel, installed (not editable) in fresh venvs and run from outside the repository: with the core
dependencies alone it fits, routes, saves, loads and pushes a router, and each extra adds what it promises (the demo,
the benchmark, adapter experts, the server), a missing one named in one line; the wheel carries everything the demo
needs, with no path into the checkout.

One venv per extra, built once per session. torch and the core dependencies are installed once, in the core venv; a
venv of an extra sees them (and the extras it includes) through a ``.pth`` file, so that it holds exactly the core
plus that extra without unpacking torch again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from installs import run_install
from ir3de_hf import IR3DERouterModel
from ir3de_hf.assets import cache_root
from test_architecture import CORE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TORCH_REQUIREMENT = "torch==2.13.0"  # first, so that no dependency pulls a CUDA build
MAX_WHEEL_MB = 40  # the code, the 4.5 MB benchmark and the 29 MB of demo adapters (compressed: about 32 MB)
# the distributions of the extras that a core install must not have (jinja2 comes with torch, httpx2 with the Hub)
OPTIONAL = {"accelerate", "peft", "datasets", "pyarrow", "gguf", "matplotlib", "gradio", "fastapi", "uvicorn"}
# extra -> the extras it includes, whose venvs it shares instead of installing them again
INCLUDED = {"experts": (), "data": (), "space": ("experts", "data"), "serve": ("experts",)}
SPACE_CHECK = """
import json, sys
import gradio
import ir3de_hf
from ir3de_hf.data import load_benchmark
from ir3de_hf.demo import demo_experts_path, load_demo_router

counts = {split: rows.num_rows for split, rows in load_benchmark().items()}
router = load_demo_router()
routed = router.route(["def main():\\n    return 0", "The Licensee shall not sublicense the Software."]).expert_names
router.save_pretrained(sys.argv[1])
print(json.dumps({"file": ir3de_hf.__file__, "experts": str(demo_experts_path()), "rows": counts, "routed": routed}))
"""
# Only core dependencies: every core module imports; a router fits from texts, routes, saves, loads and is pushed
# to the loopback Hub and loaded back; what needs an extra says which, in one line.
CORE_CHECK = """
import importlib, json, sys
from pathlib import Path

encoder, adapter, texts, work = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4])
modules = sys.argv[5:]
for module in modules:
    importlib.import_module(module)
from ir3de_hf import ExpertSpec, IR3DERouterModel
from ir3de_hf._extras import MissingExtraError
from ir3de_hf.experts import ExpertPool
from ir3de_hf.text_sources import open_text_source

router = IR3DERouterModel.from_encoder(encoder)
for name, domain in texts.items():
    router.add_expert(name, texts=domain)
prompts = [domain[0] for domain in texts.values()]
routed = router.route(prompts).expert_names
router.save_pretrained(work / "router")
loaded = IR3DERouterModel.from_pretrained(work / "router").route(prompts).expert_names
commit = router.push_to_hub("org/core-router")
pulled = IR3DERouterModel.from_pretrained("org/core-router", revision=commit.oid).route(prompts).expert_names

messages = {}
pool, placed = ExpertPool(), ExpertPool(device_map="cpu")
pool.register(ExpertSpec(name="adapter", source=adapter, base_model=encoder))
placed.register(ExpertSpec(name="full", source=encoder))
attempts = {
    "peft": lambda: pool.get("adapter"),
    "accelerate": lambda: placed.get("full"),
    "datasets": lambda: open_text_source(["a text"]),
    "data": lambda: importlib.import_module("ir3de_hf.data"),
}
for key, attempt in attempts.items():
    try:
        attempt()
    except MissingExtraError as error:
        messages[key] = str(error)
print(json.dumps({"routed": routed, "loaded": loaded, "pulled": pulled, "messages": messages}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--quiet", "-w", str(out)]
    run_install(command)
    (path,) = out.glob("ir3de_hf-*.whl")
    return path


def _environment() -> dict[str, str]:
    """This process's environment without ``PYTHONPATH``: a checkout's ``src`` (with the egg-info that building the
    wheel leaves there) would pass for an installed ir3de_hf."""
    return {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "IR3DE_DEMO_EXPERTS"}}


def _pip(venv: Path, *arguments: str) -> None:
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *arguments]
    run_install(command, env=_environment())


def _site_packages(venv: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Callable[[str], Path]:
    """``venv(extra)``: a fresh venv with the wheel and ``extra`` (``"core"``: none), built on first use; the install
    times are written to the terminal (the cost these tests add to CI)."""
    built: dict[str, Path] = {}

    def get(extra: str) -> Path:
        if extra in built:
            return built[extra]
        shared = [get(included) for included in (*INCLUDED[extra], "core")] if extra != "core" else []
        start = time.perf_counter()
        root = tmp_path_factory.mktemp(f"venv-{extra}")
        run_install([sys.executable, "-m", "venv", str(root)])
        if extra == "core":
            _pip(root, TORCH_REQUIREMENT)
            _pip(root, str(wheel))
        else:
            (_site_packages(root) / "_ir3de_shared.pth").write_text("".join(f"{_site_packages(s)}\n" for s in shared))
            _pip(root, "--ignore-installed", "--no-deps", str(wheel))  # its own copy and `ir3de` script
            _pip(root, f"{wheel}[{extra}]")
        sys.stderr.write(f"\n[test_wheel] venv {extra}: {time.perf_counter() - start:.0f} s\n")
        built[extra] = root
        return root

    return get


@pytest.fixture
def outside(tmp_path) -> dict[str, object]:
    """Working directory and environment of a user outside the repository: a fresh asset cache that shares only the
    verified SmolLM2 entry of the suite's cache (read-only: entries are checked, never rewritten), so the demo router
    is fitted here, not in the suite's cache."""
    cache = tmp_path / "asset-cache"
    cache.mkdir()
    (cache / "models").symlink_to(cache_root() / "models")
    env = {**_environment(), "IR3DE_HF_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    work = tmp_path / "work"
    work.mkdir()
    return {"cwd": work, "env": env}


def _run(venv: Path, code: str, *arguments: str, outside: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, *arguments], capture_output=True, text=True, **outside
    )


def _installed(venv: Path) -> set[str]:
    command = [str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"]
    listed = subprocess.run(command, capture_output=True, text=True, check=True, env=_environment())
    return {package["name"].lower() for package in json.loads(listed.stdout)}


def test_wheel_carries_the_data_and_nothing_else(wheel) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "ir3de_hf/benchmark/data/test-00000-of-00001.parquet",
        "ir3de_hf/benchmark/sources/sources.parquet",
        "ir3de_hf/space_app/app.py",
        "ir3de_hf/space_app/requirements.txt",
        "ir3de_hf/space_app/experts/legal/adapter_model.safetensors",
        "ir3de_hf/hub_cards/model_card.md",
    ):
        assert needed in names
    assert not [name for name in names if "__pycache__" in name or ".venv" in name or name.endswith(".pyc")]
    assert wheel.stat().st_size < MAX_WHEEL_MB * 1e6
    # every module of the checkout, and every file the demo reads, from the folders the package maps
    modules = {f"ir3de_hf/{path.relative_to(REPO / 'src' / 'ir3de_hf')}" for path in REPO.glob("src/ir3de_hf/**/*.py")}
    modules |= {f"ir3de_hf/space_app/{path.name}" for path in (REPO / "space_app").glob("*.py")}
    assert modules - set(names) == set()
    demo = {
        f"ir3de_hf/space_app/experts/{p.relative_to(REPO / 'space_app/experts')}"
        for p in REPO.glob("space_app/experts/*/*")
    }
    benchmark = {
        f"ir3de_hf/benchmark/{p.relative_to(REPO / 'data/ir3de-multidomain')}"
        for p in REPO.glob("data/ir3de-multidomain/**/*.*")
    }
    templates = {f"ir3de_hf/hub_cards/{path.name}" for path in REPO.glob("hub_cards/*.md")}
    assert len(demo) == 18 and len(benchmark) >= 11 and len(templates) >= 6
    assert (demo | benchmark | templates) - set(names) == set()


def test_the_core_routes_with_only_the_core_dependencies(
    venv, outside, domain_texts, expert_dirs, hub, tmp_path
) -> None:
    core = venv("core")
    assert _installed(core) & OPTIONAL == set()
    outside["env"].update({"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"})
    texts = {name: texts[:20] for name, texts in domain_texts.items()}
    encoder, adapter = str(expert_dirs["base"]), str(expert_dirs["lora1"])
    arguments = (encoder, adapter, json.dumps(texts), str(tmp_path), *sorted(CORE))
    result = _run(core, CORE_CHECK, *arguments, outside=outside)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    here = IR3DERouterModel.from_encoder(encoder)  # the same fit in this (full) environment
    for name, domain in texts.items():
        here.add_expert(name, texts=domain)
    assert report["routed"] == here.route([domain[0] for domain in texts.values()]).expert_names
    assert report["loaded"] == report["pulled"] == report["routed"]
    assert report["messages"] == {
        "peft": "loading a LoRA adapter expert needs peft, which is not installed: pip install 'ir3de_hf[experts]'",
        "accelerate": (
            "placing experts with a device_map needs accelerate, which is not installed: "
            "pip install 'ir3de_hf[experts]'"
        ),
        "datasets": (
            "fitting from files, Hub datasets, a datasets.Dataset or texts needs datasets, which is not installed: "
            "pip install 'ir3de_hf[data]'"
        ),
        "data": (
            "the ir3de-multidomain benchmark and its builders (ir3de_hf.data) needs datasets, which is not "
            "installed: pip install 'ir3de_hf[data]'"
        ),
    }
    helped = subprocess.run([str(core / "bin" / "ir3de"), "--help"], capture_output=True, text=True, **outside)
    assert helped.returncode == 0 and "route" in helped.stdout


def test_the_experts_extra_generates_with_adapter_experts(venv, outside, domain_texts, expert_sources) -> None:
    experts = venv("experts")
    assert {"accelerate", "peft"} <= _installed(experts) and _installed(experts) & {"datasets", "gradio"} == set()
    code = """
import json, sys
from ir3de_hf import IR3DERouterModel
from ir3de_hf._extras import MissingExtraError

encoder, texts, sources = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
router = IR3DERouterModel.from_encoder(encoder)
for name, domain in texts.items():
    router.add_expert(name, texts=domain, **sources[name])
answers = router.generate([texts["legal"][0][:80]], expert="legal", max_new_tokens=2, do_sample=False)
try:
    import ir3de_hf.data
except MissingExtraError as error:
    missing = str(error)
print(json.dumps({"expert": answers[0].expert, "missing": missing}))
"""
    texts = json.dumps({name: texts[:20] for name, texts in domain_texts.items()})
    base = expert_sources["legal"]["base_model"]
    result = _run(experts, code, base, texts, json.dumps(expert_sources), outside=outside)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["expert"] == "legal"
    assert report["missing"].endswith("needs datasets, which is not installed: pip install 'ir3de_hf[data]'")


def test_the_data_extra_reads_the_benchmark_and_plots(venv, outside, tmp_path) -> None:
    data = venv("data")
    assert _installed(data) >= {"datasets", "gguf", "matplotlib"} and _installed(data) & {"peft", "gradio"} == set()
    code = """
import json, sys
import ir3de_hf.assets, ir3de_hf.recipes
from ir3de_hf._extras import MissingExtraError
from ir3de_hf.data import load_benchmark
from ir3de_hf.evaluation import plot_confusion_matrix, routing_report

counts = {split: rows.num_rows for split, rows in load_benchmark().items()}
report = routing_report(["code", "legal"], ["code", "code"], labels=["code", "legal"])
plot_confusion_matrix(report, sys.argv[1])
try:
    import peft
except ImportError:
    peft = None
print(json.dumps({"rows": counts, "peft": peft is not None}))
"""
    result = _run(data, code, str(tmp_path / "confusion.png"), outside=outside)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "rows": {"train": 9600, "validation": 1200, "test": 2400},
        "peft": False,
    }
    assert (tmp_path / "confusion.png").read_bytes().startswith(b"\x89PNG")


def test_the_serve_extra_imports_the_server(venv, outside) -> None:
    serve = venv("serve")
    assert _installed(serve) >= {"fastapi", "uvicorn", "httpx", "peft"} and "datasets" not in _installed(serve)
    code = "import uvicorn, ir3de_hf.serve.app, ir3de_hf.serve.command, ir3de_hf.serve.backends.remote"
    result = _run(serve, code, outside=outside)
    assert result.returncode == 0, result.stderr[-3000:]
    helped = subprocess.run(
        [str(serve / "bin" / "ir3de"), "serve", "--help"], capture_output=True, text=True, **outside
    )
    assert helped.returncode == 0 and "--port" in helped.stdout


def test_the_space_extra_runs_the_demo_outside_the_repository(venv, outside, tmp_path) -> None:
    space = venv("space")
    python = str(space / "bin" / "python")
    router = tmp_path / "router"
    result = _run(space, SPACE_CHECK, str(router), outside=outside)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("file", "experts"):
        assert Path(report[key]).is_relative_to(space) and not Path(report[key]).is_relative_to(REPO), report
    assert report["rows"] == {"train": 9600, "validation": 1200, "test": 2400}
    assert report["routed"] == ["code", "legal"]

    ir3de = [str(space / "bin" / "ir3de")]
    evaluated = subprocess.run(
        [*ir3de, "eval", str(router), "--tokens", "16"], capture_output=True, text=True, **outside
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "16-token prompts: accuracy" in evaluated.stdout
    helped = subprocess.run([*ir3de, "demo", "--help"], capture_output=True, text=True, **outside)
    assert helped.returncode == 0 and "Space" in helped.stdout
    app = subprocess.run(
        [python, "-c", "from ir3de_hf._resources import resource_path; print(resource_path('space_app/app.py'))"],
        capture_output=True,
        text=True,
        **outside,
    )
    assert Path(app.stdout.strip()).is_relative_to(space)
