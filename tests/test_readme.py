"""Every Python and shell block of README.md and docs/*.md runs here, or says in its document why not.

Rules (the extraction is tests/readme_blocks.py):
- A block belongs to the nearest heading above it in its document. ``<!-- not run: reason -->`` on the line right
  before a block marks it as not run; every other ``python`` / ``bash`` block runs, in document order, once per
  section (one test per document and section).
- Each section runs in a fresh working directory holding the files of `DATA_FILES`, against one loopback Hub
  (tests/hub_server.py) serving `HUB_REPOS`; offline mode is off for that Hub only.
- Consecutive Python blocks of a section share one namespace. Every other section with Python, in the README or in
  docs/, starts from a copy of the namespace `CONTINUES_FROM` leaves (the README says the docs' examples continue from
  its Quickstart), with ``router`` a ``router.copy()``.
- Shell blocks run with ``bash -euo pipefail`` in a subprocess whose ``ir3de`` is this venv's and whose Hub is the
  loopback one (`shell_env`).
- A Python expression whose comment is a literal (``out.expert_names  # ['code', 'legal']``) must give that value;
  ``...`` in it matches anything.
- The README stays a front door: its title, one paragraph, then exactly the two commands `make demo` and `make test`;
  at most `README_MAX_LINES` lines; a link to every docs/*.md; every relative link of README and docs resolves.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ir3de_hf.assets import smollm2_path
from ir3de_hf.demo import demo_experts_path
from readme_blocks import PYTHON, SHELL, Block, read_blocks, run_python, shown_values

# ------------------------------------------------------------------ offline substitutions: the one place

# Hub ids the README reads -> the local folder the loopback Hub serves under that id (the me/... repositories are
# pushed by the examples themselves).
HUB_REPOS: dict[str, Callable[[], Path]] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": smollm2_path,  # the pinned local copy (asset cache, no network)
    "my-org/smollm2-code-lora": lambda: demo_experts_path() / "code",  # the demo's LoRA adapters of SmolLM2
    "my-org/smollm2-legal-lora": lambda: demo_experts_path() / "legal",
    "my-org/smollm2-fiction-lora": lambda: demo_experts_path() / "fiction",
}
# Text replaced in every block before it runs: absolute paths of the README -> paths in the working directory.
TEXT_SUBSTITUTIONS = {"=/private/": "=private/"}
# Data paths the README reads -> (benchmark split, domains): a folder of one .txt per text, or a parquet file with
# "text" and "domain" columns; 40 texts per domain.
DATA_FILES = {
    "data/code/": ("train", ["code"]),
    "legal.parquet": ("train", ["legal"]),
    "books/": ("train", ["fiction"]),
    "test.parquet": ("test", ["code", "fiction"]),
    "private/legal/": ("train", ["legal"]),
    "private/code/": ("train", ["code"]),
}
TEXTS_PER_DOMAIN = 40
CONTINUES_FROM = ("README.md", "Quickstart")  # (document, section)


def shell_env(hub_url: str, hub_cache: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # this venv's ir3de
        "HF_ENDPOINT": hub_url,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_CACHE": hub_cache,
    }


# ------------------------------------------------------------------ the blocks of the README and the docs

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [block for path in DOCUMENTS for block in read_blocks(path, path.relative_to(ROOT).as_posix())]
RUNNABLE = [block for block in BLOCKS if block.language in PYTHON + SHELL]
SECTIONS = list(dict.fromkeys((block.document, block.section) for block in RUNNABLE if block.not_run is None))
README_MAX_LINES = 300
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _key(block: Block) -> tuple[str, str]:
    return block.document, block.section


def test_every_python_and_shell_block_runs_or_says_why_not():
    for block in RUNNABLE:
        assert block.not_run is None or block.not_run, f"{block.where}: `<!-- not run: -->` needs a reason"
    for block in BLOCKS:
        assert block.language, f"{block.where}: give the block a language (python, bash, text...)"
        assert block.not_run is None or block.language in PYTHON + SHELL, f"{block.where}: only code blocks run"
    assert CONTINUES_FROM in SECTIONS
    runs = [key for key, _ in itertools.groupby(_key(block) for block in BLOCKS)]
    assert len(runs) == len(set(runs)), f"two headings share a title: {sorted({s for s in runs if runs.count(s) > 1})}"
    assert {block.document for block in BLOCKS} > {"README.md"}, "docs/*.md blocks are read too"


def test_the_readme_opens_with_what_it_is_and_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# ir3de_hf" and lines[1] == ""
    paragraph_end = lines.index("", 2)
    assert paragraph_end > 2 and not any(line.startswith(("#", "```", "<!--")) for line in lines[2:paragraph_end])
    first = BLOCKS[0]
    assert first.document == "README.md" and first.language in SHELL
    assert first.line == paragraph_end + 3, "the two commands follow the paragraph at once"
    commands = [line.split("#")[0].strip() for line in first.code.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make demo", "make test"]
    targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert {"demo", "test"} <= set(targets)


def test_the_readme_is_short_and_links_the_manual():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    linked = {target.split("#")[0] for target in _LINK.findall(text)}
    assert {path.relative_to(ROOT).as_posix() for path in DOCUMENTS[1:]} <= linked
    for path in DOCUMENTS:
        for target in _LINK.findall(path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("#"):
                continue
            assert (path.parent / target.split("#")[0]).exists(), f"{path.relative_to(ROOT)}: no file for {target}"


def test_a_shown_output_is_checked():
    shown = [value for block in RUNNABLE if block.language in PYTHON for value in shown_values(block).values()]
    assert ["code", "legal"] in shown  # the Quickstart's routing decisions
    fake = Block("demo", 10, "python", "x = {'a': 1, 'b': [2]}\nx  # {'a': ..., 'b': [2]}\nx['b']  # [3]\n", None)
    with pytest.raises(AssertionError, match=r"README.md:13 \(demo\): the README shows \[3\], the code gives \[2\]"):
        run_python(fake, {})


@pytest.fixture(scope="module")
def readme_hub(tmp_path_factory) -> Iterator[tuple[Any, str]]:
    """The loopback Hub with `HUB_REPOS`, for the whole module (the SmolLM2 weights are downloaded once), and its HF
    cache; huggingface_hub's and transformers' endpoint constants point at it while the module runs."""
    import huggingface_hub.constants as hub_constants
    import huggingface_hub.hf_api
    import transformers.utils.hub as transformers_hub

    from hub_server import LoopbackHub

    server = LoopbackHub().start()
    for repo_id, folder in HUB_REPOS.items():
        files = {path.name: path.read_bytes() for path in folder().iterdir() if path.is_file() and path.name[0] != "."}
        server.create(repo_id)
        server.commit(repo_id, "main", files, [])
    cache = str(tmp_path_factory.mktemp("readme-hf-hub-cache"))
    with pytest.MonkeyPatch.context() as patch:  # as tests/conftest.py's `hub` fixture, module-wide
        patch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        patch.setattr(hub_constants, "ENDPOINT", server.url)
        patch.setattr(
            hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        patch.setattr(hub_constants, "HF_HUB_CACHE", cache)
        patch.setattr(transformers_hub, "_hf_api", None)
        patch.setattr(huggingface_hub.hf_api.api, "endpoint", server.url)  # behind file_exists(), which peft calls
        yield server, cache
    server.stop()


@pytest.fixture(scope="module")
def benchmark():
    from ir3de_hf.data import load_benchmark

    return load_benchmark()


def make_data_files(directory: Path, benchmark) -> None:
    import pandas as pd

    for relative, (split, domains) in DATA_FILES.items():
        texts, labels = [], []
        for domain in domains:
            rows = benchmark[split].filter(lambda row, d=domain: row["domain"] == d).select(range(TEXTS_PER_DOMAIN))
            texts += rows["text"]
            labels += rows["domain"]
        target = directory / relative
        if relative.endswith("/"):
            target.mkdir(parents=True)
            for index, text in enumerate(texts):
                (target / f"{index:03d}.txt").write_text(text, encoding="utf-8")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"text": texts, "domain": labels}).to_parquet(target)


def run_section(section: tuple[str, str], directory: Path, namespace: dict[str, Any], readme_hub, benchmark) -> None:
    server, cache = readme_hub
    make_data_files(directory, benchmark)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        for block in RUNNABLE:
            if _key(block) != section or block.not_run is not None:
                continue
            code = block.code
            for old, new in TEXT_SUBSTITUTIONS.items():
                code = code.replace(old, new)
            if block.language in PYTHON:
                run_python(dataclasses.replace(block, code=code), namespace)
                continue
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                env=shell_env(server.url, cache),
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert result.returncode == 0, (
                f"{block.where}: exit code {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
                f"--- stderr\n{result.stderr[-4000:]}"
            )


@pytest.fixture(scope="module")
def quickstart(readme_hub, benchmark, tmp_path_factory) -> dict[str, Any]:
    """The namespace the `CONTINUES_FROM` section leaves behind (run once per module)."""
    namespace: dict[str, Any] = {}
    run_section(CONTINUES_FROM, tmp_path_factory.mktemp("readme-quickstart"), namespace, readme_hub, benchmark)
    return namespace


@pytest.mark.slow
@pytest.mark.parametrize("section", SECTIONS, ids=[f"{document}::{section}" for document, section in SECTIONS])
def test_readme_section_runs(section, request, readme_hub, benchmark, tmp_path):
    if section == CONTINUES_FROM:
        assert "router" in request.getfixturevalue("quickstart")  # the fixture runs the section
        return
    namespace: dict[str, Any] = {}
    if any(_key(block) == section and block.language in PYTHON for block in RUNNABLE):
        quickstart = request.getfixturevalue("quickstart")
        namespace = {**quickstart, "router": quickstart["router"].copy()}
    run_section(section, tmp_path, namespace, readme_hub, benchmark)
