"""The built wheel, installed (not editable) in a fresh venv and run from outside the repository, finds everything it
carries: the benchmark, the demo experts and the Space app, with no path into the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ir3de_hf.assets import cache_root

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TORCH_REQUIREMENT = "torch==2.13.0"  # first, so that no dependency pulls a CUDA build
MAX_WHEEL_MB = 40  # the code, the 4.5 MB benchmark and the 29 MB of demo adapters (compressed: about 32 MB)
CHECK = """
import json, sys
import ir3de_hf
from ir3de_hf.data import load_benchmark
from ir3de_hf.demo import demo_experts_path, load_demo_router

counts = {split: rows.num_rows for split, rows in load_benchmark().items()}
router = load_demo_router()
routed = router.route(["def main():\\n    return 0", "The Licensee shall not sublicense the Software."]).expert_names
router.save_pretrained(sys.argv[1])
print(json.dumps({"file": ir3de_hf.__file__, "experts": str(demo_experts_path()), "rows": counts, "routed": routed}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--quiet", "-w", str(out)]
    subprocess.run(command, check=True)
    (path,) = out.glob("ir3de_hf-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with torch (CPU) and the wheel with its dependencies (from the pip cache)."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, TORCH_REQUIREMENT], check=True)
    subprocess.run([*pip, str(wheel)], check=True)
    return root


@pytest.fixture
def outside(tmp_path) -> dict[str, object]:
    """Working directory and environment of a user outside the repository: a fresh asset cache that shares only the
    verified SmolLM2 entry of the suite's cache (read-only: entries are checked, never rewritten), so the demo router
    is fitted here, not in the suite's cache."""
    cache = tmp_path / "asset-cache"
    cache.mkdir()
    (cache / "models").symlink_to(cache_root() / "models")
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "IR3DE_DEMO_EXPERTS"}}
    env.update({"IR3DE_HF_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    work = tmp_path / "work"
    work.mkdir()
    return {"cwd": work, "env": env}


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


def test_installed_wheel_works_outside_the_repository(venv, outside, tmp_path) -> None:
    python = str(venv / "bin" / "python")
    router = tmp_path / "router"
    result = subprocess.run([python, "-c", CHECK, str(router)], capture_output=True, text=True, **outside)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("file", "experts"):
        assert Path(report[key]).is_relative_to(venv) and not Path(report[key]).is_relative_to(REPO), report
    assert report["rows"] == {"train": 9600, "validation": 1200, "test": 2400}
    assert report["routed"] == ["code", "legal"]

    ir3de = str(venv / "bin" / "ir3de")
    evaluated = subprocess.run(
        [ir3de, "eval", str(router), "--tokens", "16"], capture_output=True, text=True, **outside
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "16-token prompts: accuracy" in evaluated.stdout
    helped = subprocess.run([ir3de, "demo", "--help"], capture_output=True, text=True, **outside)
    assert helped.returncode == 0 and "Space" in helped.stdout
    app = subprocess.run(
        [python, "-c", "from ir3de_hf._resources import resource_path; print(resource_path('space_app/app.py'))"],
        capture_output=True,
        text=True,
        **outside,
    )
    assert Path(app.stdout.strip()).is_relative_to(venv)
