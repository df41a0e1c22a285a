"""`ir3de space build` / `ir3de space push`: a self-contained Space folder (card header, launcher, copied app, saved
router, requirements with a vendored wheel) and its upload to a Gradio Space; the slow test installs the folder in a
fresh venv and serves it offline."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi, RepoCard

from installs import run_install
from ir3de_hf import IR3DERouterModel
from ir3de_hf._resources import resource_path
from ir3de_hf.cli import main
from ir3de_hf.space_build import TORCH_REQUIREMENT, build_space, push_space

ENCODER_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CARD_KEYS = (
    "title",
    "emoji",
    "colorFrom",
    "colorTo",
    "sdk",
    "sdk_version",
    "app_file",
    "license",
    "short_description",
)


@pytest.fixture
def saved_router(onehot_router, domain_texts, expert_dirs, tmp_path) -> Path:
    """A small router with two local full-model experts, saved (its experts copied into ``experts/``)."""
    onehot_router.add_expert("code", texts=domain_texts["code"], source=expert_dirs["base"])
    onehot_router.add_expert("legal", texts=domain_texts["legal"], source=expert_dirs["twin"])
    directory = tmp_path / "router"
    onehot_router.save_pretrained(directory)
    return directory


@pytest.fixture
def wheel(tmp_path_factory) -> Path:
    """A stand-in wheel file (vendoring checks and copies it; the slow test installs a real one)."""
    path = tmp_path_factory.mktemp("wheel") / "ir3de_hf-0.1.0.dev0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:  # what `build_space` checks of a wheel: a zip with a dist-info
        archive.writestr("ir3de_hf-0.1.0.dev0.dist-info/METADATA", "Metadata-Version: 2.1\nName: ir3de_hf\n")
    return path


def _text_files(folder: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in {".py", ".md", ".txt", ".json", ".jinja", ""}:
            yield path, path.read_text(encoding="utf-8", errors="replace")


def test_build_writes_a_self_contained_space(saved_router, wheel, tmp_path, capsys) -> None:
    out = tmp_path / "space"
    assert main(["space", "build", str(out), "--router", str(saved_router), "--wheel", str(wheel)]) == 0
    assert str(out) in capsys.readouterr().out

    card = RepoCard.load(out / "README.md")
    header = card.data.to_dict()
    assert all(header.get(key) for key in CARD_KEYS), header
    assert header["sdk"] == "gradio" and header["app_file"] == "app.py"
    assert re.fullmatch(r"\d+\.\d+\.\d+", header["sdk_version"])
    assert "models" not in header  # the experts are local and the one-hot encoder has no Hub id

    lines = (out / "requirements.txt").read_text().splitlines()
    assert lines[0] == TORCH_REQUIREMENT
    assert lines[1] == f"./wheels/{wheel.name}[space]" and (out / "wheels" / wheel.name).is_file()
    assert f"gradio=={header['sdk_version']}" in lines

    app_modules = {path.name for path in resource_path("space_app").glob("*.py")}
    assert {path.name for path in (out / "ir3de_space").iterdir()} == app_modules
    assert "IR3DE_ROUTER" in (out / "app.py").read_text()
    served = IR3DERouterModel.from_pretrained(out / "router")
    assert served.expert_names == ["code", "legal"]
    assert {path.name for path in (out / "router" / "experts").iterdir()} == {"code", "legal"}

    for path, text in _text_files(out):
        for local in (str(tmp_path), str(Path.home()), str(Path(__file__).resolve().parents[1])):
            assert local not in text, f"{path} names the local path {local}"


def test_models_and_datasets_are_hub_ids(saved_router, wheel, tmp_path) -> None:
    router = IR3DERouterModel.from_pretrained(saved_router)
    router.config.encoder = ENCODER_ID
    out = build_space(tmp_path / "space", router, wheel=wheel, datasets=["me/ir3de-multidomain"])
    header = RepoCard.load(out / "README.md").data.to_dict()
    assert header["models"] == [ENCODER_ID]
    assert header["datasets"] == ["me/ir3de-multidomain"]


def test_package_url_replaces_the_wheel(saved_router, tmp_path) -> None:
    router = IR3DERouterModel.from_pretrained(saved_router)
    out = build_space(tmp_path / "space", router, package="https://github.com/org/ir3de_hf")
    lines = (out / "requirements.txt").read_text().splitlines()
    assert lines[1] == "ir3de_hf[space] @ git+https://github.com/org/ir3de_hf"
    assert not (out / "wheels").exists()


def test_bad_arguments_are_refused(saved_router, wheel, tmp_path, capsys) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["space", "build", str(taken), "--router", str(saved_router), "--wheel", str(wheel)]) == 1
    assert "not an empty directory" in capsys.readouterr().err
    assert (taken / "notes.txt").read_text() == "mine"
    assert main(["space", "build", str(tmp_path / "a"), "--router", str(saved_router), "--wheel", "no.whl"]) == 1
    assert "no such wheel" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["router", "taken"]  # nothing half-written
    with pytest.raises(SystemExit) as exit_info:
        main(["space", "build", str(tmp_path / "b"), "--package", "git+x", "--wheel", str(wheel)])
    assert exit_info.value.code == 2
    assert main(["space", "push", str(tmp_path), "me/space"]) == 1
    assert "not a Space folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- bad build arguments

NOT_A_ZIP = "not a wheel: it is not a zip archive; build one with `pip wheel . --no-deps -w dist/`"
PIP_URL = r"give the pip URL of ir3de_hf, like git\+https://github\.com/ORG/ir3de_hf"
DATASET = r"is not a Hub dataset id: give NAME or ORG/NAME .* like me/ir3de-multidomain"
# (id, keyword arguments of build_space, the message; "WHEEL:" values are written as a file of that content)
BAD_BUILDS: list[tuple[str, dict[str, object], str]] = [
    ("wheel-text-file", {"wheel": "WHEEL:text"}, re.escape(NOT_A_ZIP)),
    ("wheel-html-page", {"wheel": "WHEEL:html"}, re.escape(NOT_A_ZIP)),
    (
        "wheel-zip-without-dist-info",
        {"wheel": "WHEEL:zip"},
        r"not a wheel: it has no NAME-VERSION\.dist-info/METADATA",
    ),
    ("wheel-not-whl", {"wheel": "WHEEL:tar"}, r"no such wheel file"),
    (
        "package-newline",
        {"package": "git+https://github.com/org/ir3de_hf\ntorch==1.0"},
        r"holds whitespace.*" + PIP_URL,
    ),
    ("package-space", {"package": "https://github.com/org/ir3de hf"}, r"holds whitespace"),
    ("package-empty", {"package": ""}, r"--package '' is not a pip URL \(it is empty"),
    ("package-marker", {"package": 'https://x.org/ir3de_hf.whl;os_name=="nt"'}, r"a character a URL cannot hold"),
    ("package-named-requirement", {"package": "ir3de_hf==0.2"}, r"'ir3de_hf==0\.2' is not a remote URL; " + PIP_URL),
    ("package-local-path", {"package": "../ir3de_hf"}, r"'\.\./ir3de_hf' is not a remote URL; .*use --wheel PATH"),
    ("package-file-url", {"package": "file:///tmp/ir3de_hf-0.1-py3-none-any.whl"}, r"is not a remote URL"),
    ("dataset-newline", {"datasets": ["me/data\nevil: true"]}, r"--dataset 'me/data\\nevil: true' " + DATASET),
    ("dataset-local-path", {"datasets": ["/tmp/data"]}, r"--dataset '/tmp/data' " + DATASET),
    ("dataset-three-parts", {"datasets": ["me/data/more"]}, DATASET),
    ("dataset-empty", {"datasets": ["me/ok", ""]}, r"--dataset '' " + DATASET),
    ("dataset-space", {"datasets": ["me/my data"]}, DATASET),
]
_WHEEL_CONTENT = {"text": b"just some text\n", "html": b"<html>404 Not Found</html>", "tar": b"not a whl"}


def _bad_value(folder: Path, value: object) -> object:
    if not (isinstance(value, str) and value.startswith("WHEEL:")):
        return value
    kind = value.removeprefix("WHEEL:")
    path = folder / ("ir3de_hf-0.1-py3-none-any" + (".tar.gz" if kind == "tar" else ".whl"))
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("ir3de_hf/__init__.py", "")
    else:
        path.write_bytes(_WHEEL_CONTENT[kind])
    return path


@pytest.mark.parametrize(("arguments", "message"), [case[1:] for case in BAD_BUILDS], ids=[c[0] for c in BAD_BUILDS])
def test_bad_build_arguments_are_refused_and_write_nothing(saved_router, wheel, tmp_path, arguments, message) -> None:
    router = IR3DERouterModel.from_pretrained(saved_router)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    given = {key: _bad_value(inputs, value) for key, value in arguments.items()}
    if "package" not in given:
        given.setdefault("wheel", wheel)
    out = tmp_path / "parent" / "space"
    before = sorted(path.name for path in tmp_path.iterdir())
    with pytest.raises((ValueError, FileNotFoundError), match=message) as caught:
        build_space(out, router, **given)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)  # one line
    assert sorted(path.name for path in tmp_path.iterdir()) == before and not out.parent.exists()


def test_the_bad_build_table_has_distinct_cases() -> None:
    ids = [case[0] for case in BAD_BUILDS]
    assert len(set(ids)) == len(ids) >= 15


def test_bad_build_arguments_are_reported_by_the_cli(saved_router, tmp_path, capsys) -> None:
    out = tmp_path / "space"
    text = tmp_path / "ir3de_hf-0.1-py3-none-any.whl"
    text.write_text("not a zip")
    for extra, message in [
        (["--wheel", str(text)], "is not a wheel: it is not a zip archive"),
        (["--package", "ir3de_hf==0.2"], "'ir3de_hf==0.2' is not a remote URL"),
        (["--wheel", str(text), "--dataset", "a/b/c"], "--dataset 'a/b/c' is not a Hub dataset id"),
    ]:
        assert main(["space", "build", str(out), "--router", str(saved_router), *extra]) == 1
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_push_uploads_the_folder_as_a_space(hub, saved_router, wheel, tmp_path) -> None:
    out = build_space(tmp_path / "space", IR3DERouterModel.from_pretrained(saved_router), wheel=wheel)
    assert main(["space", "push", str(out), "me/ir3de-space"]) == 0
    files = hub.files("me/ir3de-space")
    local = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    assert set(files) - {".gitattributes"} == local  # the Hub starts every repository with .gitattributes
    assert files["README.md"] == (out / "README.md").read_bytes()
    assert ("POST", "/api/spaces/me/ir3de-space/commit/main") in hub.requests
    commit = push_space(out, "me/ir3de-space", message="again")  # exist_ok: a second push is a new commit
    assert commit.oid == hub.commits("me/ir3de-space")[-1]
    assert HfApi().list_repo_files("me/ir3de-space", repo_type="space")


# ---------------------------------------------------------------------------------------------- slow: a fresh venv


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _seed_hf_cache(root: Path, model: Path, repo_id: str) -> Path:
    """An HF hub cache holding ``model``'s files as ``repo_id`` at a made-up commit (symlinks, as the Hub client
    writes them), so the Space loads the adapters' base model with ``HF_HUB_OFFLINE=1``."""
    commit = "0" * 40
    repo = root / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in model.iterdir():
        if path.is_file():
            (snapshot / path.name).symlink_to(path)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


@pytest.mark.slow
def test_built_demo_space_installs_and_serves_offline(tmp_path) -> None:
    from gradio_client import Client

    from ir3de_hf.assets import smollm2_path
    from ir3de_hf.demo import load_demo_router

    out = build_space(tmp_path / "space", load_demo_router())
    header = RepoCard.load(out / "README.md").data.to_dict()
    assert header["models"] == [ENCODER_ID]
    venv = tmp_path / "venv"
    run_install([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    run_install([*pip, TORCH_REQUIREMENT])
    run_install([*pip, "-r", "requirements.txt"], cwd=out)

    port = _free_port()
    hf_home = _seed_hf_cache(tmp_path / "hf-home", smollm2_path(), ENCODER_ID)
    isolated = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "IR3DE_", "GRADIO_"))}
    env = {
        **isolated,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(hf_home),
        "IR3DE_HF_CACHE": str(tmp_path / "empty-asset-cache"),  # the Space needs no asset of this machine
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
    }
    log = (tmp_path / "space.log").open("w")
    server = subprocess.Popen([str(python), "app.py"], cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = _connect(f"http://127.0.0.1:{port}/", server, tmp_path / "space.log", Client)
        legal = "The Licensee shall not sublicense the Software without the prior written consent of the Licensor."
        assert client.predict(legal, api_name="/route")["expert"] == "legal"
        text = client.predict(legal, "", 8, api_name="/generate")
        assert isinstance(text, str) and text.strip()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert not list((tmp_path / "empty-asset-cache").glob("models/*")), "the Space built a local asset"
    shutil.rmtree(venv)  # about 2 GB


def _connect(url: str, server: subprocess.Popen, log: Path, client_class: type) -> object:
    """A client once the app answers (it loads the router and the benchmark first); fails with the app's log."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the Space exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            return client_class(url, verbose=False)
        except Exception:  # not listening yet
            time.sleep(2)
    pytest.fail(f"the Space did not answer within 300 s:\n{log.read_text()[-4000:]}")
