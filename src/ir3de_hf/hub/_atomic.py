# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Atomic saves: a failed or interrupted save never leaves a half-written router where a good one was.

Design: the whole directory is replaced, not its files one by one. A Hugging Face checkpoint must keep `config.json`
and `model.safetensors` under their fixed names (that is what `AutoModel.from_pretrained` reads), so a manifest
naming the current set of files would not help: the directory itself has to switch in one step. A save therefore

1. writes the new router into a hidden sibling `.<name>.ir3de-new-<random>` (same parent, so same filesystem);
2. carries every file of the old directory that the save did not write (a user's `NOTES.md`, a `.git` folder, any
   subfolder) into it, as hard links where possible, else as copies;
3. swaps the two: on Linux with `renameat2(RENAME_EXCHANGE)`, which is atomic, so the target path always names a
   complete directory, first the old one, then the new one; a target that does not exist yet gets a plain rename;
4. removes the old directory (now at the sibling path); failing to remove it does not fail the save.

Where the exchange is unavailable (not Linux, an old kernel, a filesystem answering `EINVAL`/`ENOSYS`/`ENOTSUP`)
the swap falls back to two renames, `target -> .<name>.ir3de-old-<random>` then `new -> target`. An interruption
between them leaves no directory at the target path, but the old one intact beside it: `recover_directory`, run at
the start of every save (and before loading a local router), renames it back and removes the debris of interrupted
saves. A save holds an `flock` on its new and old directories, and recovery never touches a sibling it cannot lock,
so a load in one process does not destroy a save under way in another.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no directory locks
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_directory", "recover_directory"]

_NEW, _OLD = ".ir3de-new-", ".ir3de-old-"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None


def _exchange(first: Path, second: Path) -> None:
    """Atomically swaps two existing paths with Linux `renameat2(RENAME_EXCHANGE)`.

    Args:
        first: one path; afterwards it names what `second` named.
        second: the other path; afterwards it names what `first` named.

    Raises:
        OSError: with `ENOSYS` where `renameat2` is unavailable, else the errno of the call.
    """
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", str(first))
    if _renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first), None, str(second))


def _sibling(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}{kind}{secrets.token_hex(4)}")


def _siblings(target: Path, kind: str) -> list[Path]:
    """The `.<name><kind>*` siblings of `target`, newest first."""
    found = []
    with suppress(OSError):
        for path in target.parent.glob(f"{glob.escape('.' + target.name + kind)}*"):
            with suppress(OSError):
                found.append((path.lstat().st_mtime_ns, path))
    return [path for _, path in sorted(found, reverse=True)]


def _lock(directory: Path, stack: ExitStack) -> bool:
    """Takes an exclusive `flock` on `directory` until `stack` closes.

    Returns:
        `True` if locked (or the platform has no `flock`), `False` if another process holds it or it cannot be locked.
    """
    if fcntl is None:
        return True
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return False
    stack.callback(os.close, fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _remove(path: Path) -> None:
    with suppress(OSError):
        shutil.rmtree(path)


def recover_directory(target: str | os.PathLike[str]) -> None:
    """Repairs what an interrupted save left beside `target`; a no-op when there is nothing to repair.

    If `target` is missing but an `.<name>.ir3de-old-*` sibling exists (a save stopped between its two fallback
    renames), the newest one is renamed back to `target`. Then leftover `.<name>.ir3de-new-*` and
    `.<name>.ir3de-old-*` siblings are removed, except those a save in progress holds locked. Never raises `OSError`,
    so it is safe to call on a Hub id such as `"org/name"`.

    Args:
        target: the directory a router or statistics were saved to.
    """
    target = Path(os.path.abspath(target))
    with ExitStack() as stack:
        old = _siblings(target, _OLD)
        if old and not os.path.lexists(target) and _lock(old[0], stack):
            with suppress(OSError):
                os.rename(old[0], target)
        leftovers = _siblings(target, _NEW)
        if os.path.lexists(target):  # while it is missing, the old siblings are all there is
            leftovers += _siblings(target, _OLD)
        for leftover in leftovers:
            if _lock(leftover, stack):
                _remove(leftover)


def _carry_over(source: Path, destination: Path) -> None:
    """Links (or copies) into `destination` every entry of `source` it does not have yet, directories recursively."""
    with os.scandir(source) as entries:
        listed = list(entries)
    for entry in listed:
        origin, copy = Path(entry.path), destination / entry.name
        if entry.is_dir(follow_symlinks=False):
            if not os.path.lexists(copy):
                os.mkdir(copy)
                _carry_over(origin, copy)
                shutil.copymode(origin, copy)
            elif copy.is_dir() and not copy.is_symlink():
                _carry_over(origin, copy)
        elif os.path.lexists(copy):
            continue
        elif entry.is_symlink():
            os.symlink(os.readlink(origin), copy)
        else:
            try:
                os.link(origin, copy)
            except OSError:
                shutil.copy2(origin, copy)


def _swap(new: Path, target: Path) -> None:
    """Puts the complete directory `new` at `target`; on return `new` names the old directory, if any."""
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    try:
        _exchange(new, target)
        return
    except OSError as error:
        if error.errno not in _UNSUPPORTED:
            raise
    old = _sibling(target, _OLD)
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        with suppress(OSError):
            os.rename(old, target)
        raise
    _remove(old)


@contextmanager
def atomic_directory(target: str | os.PathLike[str], keep_others: bool = True) -> Iterator[Path]:
    """Yields an empty directory to write a save into; when the block succeeds it replaces `target` as a whole.

    Files of `target` that the block does not write (a user's notes, a `.git` folder, subfolders) are carried over
    unless `keep_others` is false. If the block raises, `target` is left untouched and the new directory removed.

    Args:
        target: the directory to save to; created (with its parents) if missing.
        keep_others: carry over the files of `target` that the save does not write.

    Yields:
        The new directory, a hidden sibling of `target`.

    Raises:
        NotADirectoryError: if `target` exists and is not a directory.
    """
    target = Path(os.path.realpath(target))
    if os.path.lexists(target) and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "cannot save into a path that is not a directory", str(target))
    recover_directory(target)
    if not target.parent.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
    new = _sibling(target, _NEW)
    os.mkdir(new)
    try:
        with ExitStack() as stack:
            _lock(new, stack)
            yield new
            if target.is_dir():
                _lock(target, stack)  # the old directory, wherever the swap puts it
                if keep_others:
                    _carry_over(target, new)
                shutil.copymode(target, new)
            _swap(new, target)
    finally:
        if os.path.lexists(new):  # the new directory if the save failed, the old one after an exchange
            _remove(new)
