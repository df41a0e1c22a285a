"""Saving and loading refuse what they cannot do with one clear message and leave everything as it was: a target the
user may not write (tested as the unprivileged user ``nobody``), damaged saved files, a Hub encoder that is not in the
cache offline, read-only config keys. Saved files keep the umask's mode; the auto-class registration works in every
import order; the pinned SmolLM2 resolves by its Hub id offline once the HF cache is seeded."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ir3de_hf import ExpertStatistics, IR3DEConfig, IR3DERouterModel, StatisticsError
from ir3de_hf import assets as assets_module
from ir3de_hf.demo import load_demo_router
from ir3de_hf.hub._atomic import atomic_directory, atomic_file, file_mode

SRC = Path(__file__).resolve().parents[1] / "src"
# nobody, who may read and search every folder (CAP_DAC_READ_SEARCH: the checkout and its venv may sit in a folder
# only root may enter) but writes by its own permissions only; `os.access` ignores capabilities for a non-root user,
# so what it says is nobody's plain permission
NOBODY = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=+dac_read_search",
    "--ambient-caps=+dac_read_search",
]
PROBE = ["def parse(text): return json.loads(text)", "the licensee shall keep this notice"]


def _tree(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``folder`` (hidden ones too) with its mode and, for files, its bytes."""
    return {
        str(path.relative_to(folder)): (path.stat().st_mode, path.read_bytes() if path.is_file() else None)
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture
def router(half_fitted_router: IR3DERouterModel) -> IR3DERouterModel:
    """Three fitted experts; the encoder named by a Hub id, as AXL files and by-reference saves need."""
    half_fitted_router.config.encoder = "ir3de-test/one-hot"
    return half_fitted_router


@pytest.fixture
def saved(router: IR3DERouterModel, tmp_path: Path) -> Path:
    router.save_pretrained(tmp_path / "router")
    return tmp_path / "router"


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


# ------------------------------------------------------------------------------------ permissions, as `nobody`


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A folder under /tmp that ``nobody`` can enter (pytest's tmp_path is 0700), removed afterwards."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a child process as the unprivileged user nobody")
    folder = Path(tempfile.mkdtemp(prefix="ir3de-permissions-"))
    folder.chmod(0o755)
    (folder / "hf-home").mkdir(mode=0o777)
    (folder / "hf-home").chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_nobody(shared: Path, code: str) -> str:
    """Runs ``code`` as nobody in a fresh interpreter (this checkout's sources) and returns its last output line."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HOME": str(shared / "hf-home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*NOBODY, sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


REFUSAL = """
import json, sys
from ir3de_hf import IR3DERouterModel, ExpertStatistics
router = IR3DERouterModel.from_pretrained({source!r})
try:
    {call}
except PermissionError as error:
    print(json.dumps([type(error).__name__, str(error)]))
else:
    print(json.dumps(["saved", ""]))
"""

SAVES = {
    "router": "router.save_pretrained({target!r})",
    "statistics": "router.expert_statistics('code').save({target!r})",
    "axl-file": "router.expert_statistics('code').save_reference({target!r}, router.embed_tokens.weight)",
}


@pytest.mark.parametrize(
    ("layout", "what"),
    [
        pytest.param("readonly-target", "router", id="router-into-a-readonly-dir-of-a-writable-parent"),
        pytest.param("readonly-parent", "router", id="router-into-a-new-dir-of-a-readonly-parent"),
        pytest.param("readonly-target", "statistics", id="statistics-into-a-readonly-dir-of-a-writable-parent"),
        pytest.param("readonly-parent", "axl-file", id="axl-file-into-a-readonly-parent"),
    ],
)
def test_a_save_the_user_may_not_make_is_refused_and_changes_nothing(saved, shared, layout, what):
    """The permission test: run as nobody. A root-owned 0755 target inside a folder nobody may write used to be
    replaced through that folder (the owner's copy left as a hidden ``.ro.ir3de-new-*``); now it is refused before
    anything is written, naming the path given, never a hidden sibling."""
    source = shared / "source"
    shutil.copytree(saved, source)
    parent = shared / "parent"
    parent.mkdir()
    if layout == "readonly-target":
        parent.chmod(0o777)  # nobody may create and rename entries here
        target = parent / "target"
        shutil.copytree(saved, target)
        target.chmod(0o755)
    else:
        parent.chmod(0o755)
        target = parent / ("router" if what != "axl-file" else "code.pth")
    before = _tree(parent)
    code = REFUSAL.format(source=str(source), call=SAVES[what].format(target=str(target)))
    kind, message = json.loads(_as_nobody(shared, code))
    assert kind == "PermissionError"
    assert f"Cannot save to {target}" in message and "not writable by this user" in message
    assert "Save to a directory you can write" in message
    assert ".ir3de-new-" not in message and ".partial" not in message
    assert _tree(parent) == before  # byte-identical, no hidden leftovers


def test_a_router_saved_by_root_under_umask_022_loads_as_another_user(router, shared):
    """model.safetensors used to be written 0600 (safetensors' private temporary file): another user got
    "unreadable or truncated"."""
    with _umask(0o022):
        router.save_pretrained(shared / "router")
    code = (
        "import os, pathlib\n"
        "from ir3de_hf import IR3DERouterModel\n"
        f"folder = pathlib.Path({str(shared / 'router')!r})\n"
        "unreadable = [p.name for p in folder.rglob('*') if not os.access(p, os.R_OK)]\n"
        "router = IR3DERouterModel.from_pretrained(folder)\n"
        f"print(unreadable, router.expert_names, router.route({PROBE!r}).expert_names)"
    )
    assert _as_nobody(shared, code) == f"[] {router.expert_names} {router.route(PROBE).expert_names}"


@pytest.mark.parametrize(
    ("saving", "fail"),
    [
        pytest.param(atomic_directory, lambda staging: (staging / "missing" / "file").write_text("x"), id="directory"),
        pytest.param(atomic_file, lambda staging: (staging / "file").write_text("x"), id="file"),
    ],
)
def test_an_error_midway_names_the_users_path_not_the_hidden_sibling(tmp_path, saving, fail):
    """The error of a step inside the save names ``.<name>.ir3de-new-*`` or ``.<name>.*.partial``; it is raised
    again about the target (same errno, same class), the original kept as ``__cause__``."""
    target = tmp_path / "target"
    with pytest.raises(OSError) as raised, saving(target) as staging:
        fail(staging)
    error, cause = raised.value, raised.value.__cause__
    assert isinstance(cause, OSError) and type(error) is type(cause) and error.errno == cause.errno
    assert str(cause.filename).startswith(str(tmp_path / ".target."))
    assert error.filename == str(target) and f"Cannot save to {target}: " in str(error)
    assert "nothing was written" in str(error) and ".target." not in str(error)
    assert sorted(tmp_path.iterdir()) == []  # no target, no hidden leftovers


# ------------------------------------------------------------------------------------------------------ modes


def _plain_modes(folder: Path, mask: int) -> tuple[int, int]:
    """The modes a plain ``open()`` and ``mkdir()`` give under ``mask``, measured, not computed."""
    with _umask(mask):
        probe = folder / f"probe-{mask:o}"
        probe.mkdir()
        (probe / "file").write_text("x")
    modes = ((probe / "file").stat().st_mode & 0o777, probe.stat().st_mode & 0o777)
    shutil.rmtree(probe)
    return modes


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=["umask-022", "umask-027"])
@pytest.mark.parametrize("what", ["router", "statistics", "axl-file"])
def test_every_written_file_has_the_mode_a_plain_open_gives(router, tmp_path, mask, what):
    file_bits, folder_bits = _plain_modes(tmp_path, mask)
    target = tmp_path / what
    with _umask(mask):
        assert file_mode() == file_bits
        if what == "router":
            router.save_pretrained(target)
        elif what == "statistics":
            router.expert_statistics("code").save(target)
        else:
            target = router.expert_statistics("code").save_reference(target, router.embed_tokens.weight)
    files = [target] if target.is_file() else [path for path in target.rglob("*") if path.is_file()]
    assert files and {path.name: path.stat().st_mode & 0o777 for path in files} == dict.fromkeys(
        (path.name for path in files), file_bits
    )
    if target.is_dir():
        assert target.stat().st_mode & 0o777 == folder_bits


# -------------------------------------------------------------------------------------------- damaged loads


def _remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


SAVE_AGAIN = "Save the router again with its tokenizer, or delete tokenizer_config.json"
DAMAGED = [
    pytest.param(_remove("tokenizer.json"), ValueError, ["has no tokenizer.json", SAVE_AGAIN], id="no-tokenizer.json"),
    pytest.param(
        _write("tokenizer.json", '{"version": "1.0", "model": '),
        ValueError,
        ["has a tokenizer.json that cannot be read", SAVE_AGAIN],
        id="truncated-tokenizer.json",
    ),
    pytest.param(
        _write("tokenizer.json", '{"version": "1.0"}'),
        ValueError,
        ["has a tokenizer.json that cannot be read", "added_tokens", SAVE_AGAIN],
        id="incomplete-tokenizer.json",
    ),
    pytest.param(
        _remove("config.json"),
        FileNotFoundError,
        ["has no config.json, so it is not a saved router", "save the router there again"],
        id="no-config.json",
    ),
]


@pytest.mark.parametrize(("damage", "error", "phrases"), DAMAGED)
def test_a_damaged_saved_router_is_refused_naming_the_file(saved, damage, error, phrases):
    damage(saved)
    before = _tree(saved)
    with pytest.raises(error) as raised:
        IR3DERouterModel.from_pretrained(saved)
    assert str(raised.value).startswith(str(saved))
    for phrase in phrases:
        assert phrase in str(raised.value)
    assert _tree(saved) == before


def test_truncated_statistics_are_refused_and_the_router_is_unchanged(router, tmp_path):
    folder = router.expert_statistics("code").save(tmp_path / "statistics")
    weights = folder / "statistics.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    names, decision = router.expert_names, router.route(PROBE).expert_names
    for load in (lambda: ExpertStatistics.load(folder), lambda: router.add_expert_from_hub(folder, name="again")):
        with pytest.raises(StatisticsError, match=r"statistics\.safetensors is missing, unreadable or truncated") as e:
            load()
        assert str(e.value).startswith(str(folder)) and "save or push the expert's statistics again" in str(e.value)
    assert router.expert_names == names and router.route(PROBE).expert_names == decision


def test_a_by_reference_router_whose_hub_encoder_is_not_cached_says_how_to_get_it_offline(router, tmp_path):
    router.config.encoder = "ir3de-test/not-in-the-cache"
    router.save_pretrained(tmp_path / "router", encoder_by_reference=True)
    before = _tree(tmp_path / "router")
    with pytest.raises(ValueError) as raised:
        IR3DERouterModel.from_pretrained(tmp_path / "router")
    message = str(raised.value)
    assert "saved without its embedding table" in message and "'ir3de-test/not-in-the-cache'" in message
    assert "(HF_HUB_OFFLINE=1)" in message and "set HF_HUB_OFFLINE=0 to download it" in message
    assert "hf download ir3de-test/not-in-the-cache" in message
    assert _tree(tmp_path / "router") == before


@pytest.mark.parametrize(
    ("key", "value", "instead"),
    [
        ("expert_names", ["x"], "router.add_expert / router.remove_expert"),
        ("expert_specs", [], "router.add_expert / router.remove_expert"),
        ("never_counted_ids", [0], "config.ignored_token_ids and config.pad_token_id; set those instead"),
    ],
    ids=["expert_names", "expert_specs", "never_counted_ids"],
)
def test_a_read_only_config_key_refuses_assignment_with_a_pointer(router, key, value, instead):
    before = router.config.to_dict()
    with pytest.raises(AttributeError, match=rf"config\.{key} is read-only: it is derived from ") as raised:
        setattr(router.config, key, value)
    assert instead in str(raised.value)
    assert router.config.to_dict() == before and router.expert_names == ["code", "legal", "docs"]


def test_a_fresh_config_refuses_read_only_keys_too():
    with pytest.raises(AttributeError, match=r"config\.expert_names is read-only"):
        IR3DEConfig().expert_names = ["a"]


# ------------------------------------------------------------------------------------- import orders


STEPS = {
    "package": "import ir3de_hf",
    "assets": "import ir3de_hf.assets",
    "hub": "import ir3de_hf.hub",
    "auto": "from transformers import AutoTokenizer, AutoModel",
    "config": "from transformers import AutoConfig",
    "sequence": "from transformers import AutoModelForSequenceClassification",
}
ORDERS = [list(order) for order in itertools.permutations(["assets", "auto", "config"])] + [
    ["hub", "auto"],
    ["auto", "hub"],
    ["sequence", "assets", "auto"],
    ["package", "sequence", "config"],
]


def _load_in_every_order(saved: Path, orders: list[list[str]]) -> list[str]:
    """One fresh interpreter per order (an import order only exists once per process)."""
    results = []
    for order in orders:
        code = "\n".join(
            [
                "import warnings\nwarnings.simplefilter('error', RuntimeWarning)",
                *(STEPS[step] for step in order),
                "from transformers import AutoConfig, AutoModel",
                f"config = AutoConfig.from_pretrained({str(saved)!r})",
                f"model = AutoModel.from_pretrained({str(saved)!r})",
                "print(type(config).__name__, type(model).__name__, model.expert_names)",
            ]
        )
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        results.append(run.stdout.strip().splitlines()[-1] if run.returncode == 0 else f"{order}: {run.stderr}")
    return results


@pytest.mark.slow
def test_registration_works_in_every_import_order(saved):
    expected = "IR3DEConfig IR3DERouterModel ['code', 'legal', 'docs']"
    assert _load_in_every_order(saved, ORDERS) == [expected] * len(ORDERS)


def test_registration_works_when_a_submodule_comes_before_the_auto_classes(saved):
    """The order of the report, in the fast suite (the slow test above runs all of them)."""
    expected = "IR3DEConfig IR3DERouterModel ['code', 'legal', 'docs']"
    assert _load_in_every_order(saved, [["assets", "auto"]]) == [expected]


# ----------------------------------------------------------------------------------------- HF cache seeding


@pytest.fixture
def seeded(tmp_path: Path) -> dict[str, Path]:
    """The pinned models seeded into a throwaway HF cache (never the real one)."""
    entry = (
        assets_module.cache_root() / "models" / f"smollm2-135m-instruct-{assets_module.ARTIFACTS['smollm2'].version}"
    )
    if not (entry / assets_module.MANIFEST_NAME).is_file():
        pytest.skip("the SmolLM2 asset is not prepared; run `make setup`")
    return assets_module.seed_hf_cache(tmp_path / "hub", verify=False)


def test_seeding_writes_the_hub_cache_layout_with_a_fixed_revision(seeded, tmp_path):
    from huggingface_hub import try_to_load_from_cache

    repo = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    revision = assets_module.seeded_revision(assets_module.ARTIFACTS["smollm2"])
    assert len(revision) == 40 and int(revision, 16) >= 0
    assert (repo / "refs" / "main").read_text() == revision
    assert seeded[assets_module.SMOLLM2_HUB_ID] == repo / "snapshots" / revision
    config = try_to_load_from_cache(assets_module.SMOLLM2_HUB_ID, "config.json", cache_dir=tmp_path / "hub")
    assert config == str(repo / "snapshots" / revision / "config.json")
    link = Path(config)
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve().parent == repo / "blobs"
    assert link.resolve().name == hashlib.sha256(link.read_bytes()).hexdigest()
    assert assets_module.seed_hf_cache(tmp_path / "hub", verify=False) == seeded  # idempotent


@pytest.mark.slow
def test_a_seeded_cache_resolves_the_hub_id_offline_for_tokenizer_and_adapters(seeded, tmp_path):
    """The shipped adapters name their base model by Hub id: offline, ``add_expert(source=space_app/experts/legal)``
    used to fail with "not in the HF cache"."""
    legal = Path(__file__).resolve().parents[1] / "space_app" / "experts" / "legal"
    code = (
        "from transformers import AutoTokenizer\nfrom ir3de_hf import IR3DERouterModel\n"
        "from ir3de_hf.assets import SMOLLM2_HUB_ID\n"
        "tokenizer = AutoTokenizer.from_pretrained(SMOLLM2_HUB_ID)\n"
        "router = IR3DERouterModel.from_encoder(SMOLLM2_HUB_ID)\n"
        f"router.add_expert('legal', texts={PROBE[1:]!r}, source={str(legal)!r})\n"
        f"router.add_expert('code', texts={PROBE[:1]!r})\n"
        "print(len(tokenizer), router.expert_names, router.config.experts[0]['base_model'])"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "49152 ['legal', 'code'] HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.slow
def test_a_reloaded_demo_router_generates_offline_from_a_seeded_cache(seeded, tmp_path):
    """The demo router names its adapters' base model by Hub id: re-loaded without the demo's expert pool, it could
    not generate offline before the cache was seeded."""
    built = Path(load_demo_router().name_or_path)  # this version's saved demo router (built once, then cached)
    copy = tmp_path / "demo-router"
    shutil.copytree(built, copy, copy_function=os.link)  # the real cache is never touched
    code = (
        "from ir3de_hf import IR3DERouterModel\n"
        f"router = IR3DERouterModel.from_pretrained({str(copy)!r})\n"
        "answer = router.generate('def parse(text):', max_new_tokens=2, do_sample=False)[0]\n"
        "print(answer.expert, router.config.experts[0]['base_model'])"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "code HuggingFaceTB/SmolLM2-135M-Instruct"
