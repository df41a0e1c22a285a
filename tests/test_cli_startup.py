"""`ir3de --help` starts at once: the package and the CLI import neither torch nor transformers (about 6 s together),
yet `import ir3de_hf` still makes `AutoConfig` / `AutoModel` resolve ``model_type: "ir3de"``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("ir3de")  # the console script of this environment
HEAVY = ("torch", "transformers", "huggingface_hub", "datasets", "peft")


def _run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("module", ["ir3de_hf", "ir3de_hf.cli"])
def test_importing_the_package_and_the_cli_imports_no_heavy_library(module):
    code = f"import sys, {module}\nprint(sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY!r})))"
    assert _run_python(code) == "[]"


@pytest.mark.parametrize("command", [[sys.executable, "-m", "ir3de_hf"], [str(SCRIPT)]], ids=["-m ir3de_hf", "ir3de"])
def test_help_starts_in_under_two_seconds(command):
    """A sanity bound on a shared machine: the best of 3 runs (the check above is the deterministic one)."""
    if not Path(command[0]).is_file():
        pytest.skip(f"{command[0]} is not installed")
    durations = []
    for _ in range(3):
        start = time.perf_counter()
        result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120, check=False)
        durations.append(time.perf_counter() - start)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: ir3de") and "remove-expert" in result.stdout
    assert min(durations) < 2.0, durations


def test_a_subcommands_help_lists_its_arguments_without_importing_torch():
    """`main` declares only the arguments of the command being run; `route` imports nothing heavy for that."""
    code = (
        "import contextlib, io, sys\nfrom ir3de_hf.cli import main\nout = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n    main(['route', '--help'])\n"
        f"print('--json' in out.getvalue(), sorted({{n.split('.')[0] for n in sys.modules}} & set({HEAVY!r})))"
    )
    assert _run_python(code) == "True []"


@pytest.mark.parametrize(
    "first",
    ["", "from transformers import AutoTokenizer\n", "from transformers import pipeline\n"],
    ids=["auto-classes", "tokenizer-first", "pipeline-first"],
)
def test_import_ir3de_hf_then_auto_classes_load_a_saved_router(first, text_router, domain_texts, tmp_path):
    """In a fresh interpreter: ``import ir3de_hf`` first, transformers' auto classes afterwards (the lazy path), also
    when another auto module (the tokenizer's imports the config's and the model's) is what pulls them in."""
    for name, texts in domain_texts.items():
        text_router.add_expert(name, texts=texts[:5])
    text_router.save_pretrained(tmp_path)
    code = (
        "import sys, warnings, ir3de_hf\nassert 'transformers' not in sys.modules\n"
        "warnings.simplefilter('error', RuntimeWarning)\n"
        f"{first}from transformers import AutoConfig, AutoModel\n"
        f"config = AutoConfig.from_pretrained({str(tmp_path)!r})\n"
        f"model = AutoModel.from_pretrained({str(tmp_path)!r})\n"
        "print(type(config).__name__, type(model).__name__, model.expert_names)"
    )
    assert _run_python(code).splitlines()[-1] == "IR3DEConfig IR3DERouterModel ['code', 'legal', 'docs']"


def test_auto_classes_imported_before_ir3de_hf_are_registered_at_import(text_router, domain_texts, tmp_path):
    """The README's order: transformers first, then ``import ir3de_hf`` registers at once."""
    text_router.add_expert("code", texts=domain_texts["code"][:5])
    text_router.save_pretrained(tmp_path)
    code = (
        "import transformers\nfrom transformers import AutoModel\nimport ir3de_hf\n"
        f"print(type(transformers.AutoModel.from_pretrained({str(tmp_path)!r})).__name__)"
    )
    assert _run_python(code).splitlines()[-1] == "IR3DERouterModel"
