"""Whole-directory atomic saves: a save interrupted after any filesystem step leaves the old router or the new one."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

import ir3de_hf.hub._atomic as saving
from ir3de_hf import IR3DERouterModel
from ir3de_hf.hub._atomic import atomic_directory, recover_directory

PROBE = torch.tensor([[1, 2, 3], [30, 31, 32], [5, 25, 35], [12, 13, 14]])

# Every filesystem call a save goes through, also those made inside shutil.rmtree and transformers.
STEPS = [
    (os, "rename"),
    (os, "replace"),
    (os, "link"),
    (os, "symlink"),
    (os, "mkdir"),
    (os, "makedirs"),
    (os, "rmdir"),
    (os, "unlink"),
    (os, "remove"),
    (shutil, "copy2"),
    (shutil, "copymode"),
    (shutil, "rmtree"),
    (saving, "_exchange"),
]


def _unsupported_exchange(first: Path, second: Path) -> None:
    raise OSError(errno.EINVAL, "exchange not supported here (injected)")


class Interruption:
    """Lets the first `survivors` filesystem calls run, then fails every later one with `OSError("injected")`.

    With `performed`, call `survivors + 1` still happens before it fails (the process dies right after it).
    """

    def __init__(self, survivors: int | None = None, performed: bool = False) -> None:
        self.survivors, self.performed = survivors, performed
        self.calls: list[str] = []

    def wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self.survivors is None or len(self.calls) <= self.survivors:
                return real(*args, **kwargs)
            if self.performed and len(self.calls) == self.survivors + 1:
                real(*args, **kwargs)
            raise OSError("injected")

        return step


@contextmanager
def interrupted(interruption: Interruption, fallback: bool) -> Iterator[Interruption]:
    with pytest.MonkeyPatch.context() as patch:
        if fallback:
            patch.setattr(saving, "_exchange", _unsupported_exchange)
        for module, name in STEPS:
            patch.setattr(module, name, interruption.wrap(name, getattr(module, name)))
        yield interruption


def _router() -> IR3DERouterModel:
    torch.manual_seed(0)
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding(40, 6))
    router.add_expert("a", input_ids=torch.randint(0, 20, (4, 16)))
    router.add_expert("b", input_ids=torch.randint(20, 40, (4, 16)))
    return router


def _state(router: IR3DERouterModel) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    output = router.route(PROBE)
    return list(router.expert_names), output.expert_ids, output.logits


def _same(
    first: tuple[list[str], torch.Tensor, torch.Tensor], second: tuple[list[str], torch.Tensor, torch.Tensor]
) -> bool:
    return first[0] == second[0] and torch.equal(first[1], second[1]) and torch.equal(first[2], second[2])


def _tree(directory: Path) -> dict[str, tuple[int, str]]:
    """Every entry under `directory`: its mode and, for files, a digest of its bytes."""
    tree = {}
    for path in sorted(directory.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        tree[path.relative_to(directory).as_posix()] = (path.stat().st_mode, digest)
    return tree


def _debris(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if ".ir3de-" in p.name)


@pytest.fixture(scope="module")
def routers(tmp_path_factory) -> dict[str, Any]:
    """The OLD router saved with a user's files beside it (the template each case copies), and the NEW router."""
    template = tmp_path_factory.mktemp("old") / "router"
    router = _router()
    router.save_pretrained(template)
    (template / "NOTES.md").write_text("my notes")
    (template / "runs" / "deep").mkdir(parents=True)
    (template / "runs" / "deep" / "log.txt").write_text("run 1")
    (template / ".git").mkdir()
    (template / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    old = _state(IR3DERouterModel.from_pretrained(template))

    router.remove_expert("b")
    router.add_expert("c", input_ids=torch.randint(10, 30, (4, 16)))
    new = _state(router)
    assert not _same(old, new)
    return {"template": template, "router": router, "old": old, "new": new}


def _fresh_copy(routers: dict[str, Any], root: Path) -> Path:
    target = root / "router"
    shutil.copytree(routers["template"], target)
    return target


def _assert_user_files_kept(target: Path) -> None:
    assert (target / "NOTES.md").read_text() == "my notes"
    assert (target / "runs" / "deep" / "log.txt").read_text() == "run 1"
    assert (target / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"


def _clean_save_steps(routers: dict[str, Any], root: Path, fallback: bool) -> list[str]:
    target = _fresh_copy(routers, root)
    with interrupted(Interruption(), fallback) as counter:
        routers["router"].save_pretrained(target)
    assert _same(_state(IR3DERouterModel.from_pretrained(target)), routers["new"])
    _assert_user_files_kept(target)
    assert _debris(target) == []
    return counter.calls


def test_a_clean_save_swaps_the_whole_directory_in_one_exchange(routers, tmp_path):
    steps = _clean_save_steps(routers, tmp_path / "exchange", fallback=False)
    assert steps.count("_exchange") == 1 and "rename" not in steps and "replace" not in steps
    assert steps.count("link") == 3  # NOTES.md, runs/deep/log.txt, .git/HEAD
    assert steps == _clean_save_steps(routers, tmp_path / "again", fallback=False)  # the count is deterministic

    fallback = _clean_save_steps(routers, tmp_path / "fallback", fallback=True)
    assert fallback.count("rename") == 2


@pytest.mark.parametrize("performed", [False, True], ids=["before-step", "after-step"])
@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "two-renames"])
def test_a_save_interrupted_after_any_step_leaves_the_old_or_the_new_router(routers, tmp_path, fallback, performed):
    total = len(_clean_save_steps(routers, tmp_path / "count", fallback))
    outcomes = []
    for survivors in range(total + 1):
        target = _fresh_copy(routers, tmp_path / f"k{survivors}")
        raised = False
        with interrupted(Interruption(survivors, performed), fallback):
            try:
                routers["router"].save_pretrained(target)
            except OSError as error:
                assert str(error) == "injected"
                raised = True
        if fallback:
            recover_directory(target)
        state = _state(IR3DERouterModel.from_pretrained(target))
        is_old, is_new = _same(state, routers["old"]), _same(state, routers["new"])
        assert is_old or is_new, f"interrupted after step {survivors}: neither the old nor the new router"
        assert raised or is_new, f"the save reported success after step {survivors} but left the old router"
        _assert_user_files_kept(target)
        outcomes.append("new" if is_new else "old")

        routers["router"].save_pretrained(target)
        assert _same(_state(IR3DERouterModel.from_pretrained(target)), routers["new"])
        _assert_user_files_kept(target)
        assert _debris(target) == []
    assert outcomes[0] == "old" and outcomes[-1] == "new"


def test_a_save_into_a_missing_directory_creates_it(routers, tmp_path):
    target = tmp_path / "not" / "yet" / "router"
    routers["router"].save_pretrained(target)
    assert _same(_state(IR3DERouterModel.from_pretrained(target)), routers["new"])
    assert _debris(target) == []


def test_a_failing_save_leaves_the_old_directory_byte_identical(routers, tmp_path, monkeypatch, word_tokenizer):
    target = tmp_path / "router"
    router = IR3DERouterModel.from_encoder(torch.nn.Embedding(len(word_tokenizer), 6), word_tokenizer)
    router.add_expert("a", input_ids=torch.randint(3, 40, (4, 16)))
    router.save_pretrained(target)
    (target / "NOTES.md").write_text("my notes")
    before = _tree(target)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    router.add_expert("b", input_ids=torch.randint(40, 80, (4, 16)))
    monkeypatch.setattr(router.tokenizer, "save_pretrained", fail)  # the weights are written by then
    with pytest.raises(OSError, match="disk full"):
        router.save_pretrained(target)

    assert _tree(target) == before
    assert _debris(target) == []
    assert IR3DERouterModel.from_pretrained(target).expert_names == ["a"]


def test_recovery_restores_the_old_directory_and_removes_debris(routers, tmp_path):
    target = _fresh_copy(routers, tmp_path)
    os.rename(target, target.with_name(".router.ir3de-old-1234"))  # stopped between the two fallback renames
    target.with_name(".router.ir3de-new-5678").mkdir()
    (target.with_name(".router.ir3de-new-5678") / "config.json").write_text("{}")
    recover_directory(target)
    assert _same(_state(IR3DERouterModel.from_pretrained(target)), routers["old"])
    _assert_user_files_kept(target)
    assert _debris(target) == []


def test_recovery_leaves_a_save_in_progress_alone(routers, tmp_path):
    target = _fresh_copy(routers, tmp_path)
    with atomic_directory(target) as staging:
        (staging / "config.json").write_text("{}")
        recover_directory(target)  # e.g. a loader in another process, while this save is under way
        assert (staging / "config.json").exists()
    assert (target / "config.json").read_text() == "{}"
    assert _debris(target) == []


@pytest.mark.parametrize("path", ["org/name", "missing-dir", "file.txt"])
def test_recovery_is_a_no_op_for_hub_ids_missing_paths_and_files(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    recover_directory(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
