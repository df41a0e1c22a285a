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

Permissions: a save refuses a target the user cannot write (the directory itself, not only its parent: the swap
needs only the parent, and would replace a directory its owner made read-only), and every file it writes gets the
mode a plain ``open()`` gives under the umask (safetensors and `tempfile.mkstemp` write 0600, so another user could
not load a shared router). Errors name the path the user gave, never the hidden siblings (the original error is the
``__cause__``).
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no directory locks
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_directory", "atomic_file", "check_writable", "file_mode", "recover_directory"]

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


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file under this process's umask (``0o666 & ~umask``)."""
    umask = os.umask(0o077)  # read it by setting it: 0o077 meanwhile, never a looser one
    os.umask(umask)
    return 0o666 & ~umask


def check_writable(target: str | os.PathLike[str], *, directory: bool) -> None:
    """Refuses, before anything is written, a save that this user may not make: ``target`` itself when it exists
    (a save replaces it), and the folder that receives the hidden sibling (its parent, or the nearest existing
    ancestor when the parent is missing).

    Raises:
        PermissionError: naming ``target``, the folder that is not writable, and what to do.
    """
    given = Path(target)
    resolved = Path(os.path.realpath(given))
    access = os.W_OK | os.X_OK if directory else os.W_OK
    if os.path.lexists(resolved) and not os.access(resolved, access):
        _refuse(given, resolved, "it is not writable by this user")
    parent = resolved.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        _refuse(given, parent, "its folder is not writable by this user, and a save writes beside it")


def _refuse(given: Path, blocking: Path, why: str) -> None:
    try:
        info = blocking.stat()
        owner = f" ({blocking} is owned by uid {info.st_uid}, mode {info.st_mode & 0o7777:o})"
    except OSError:
        owner = ""
    raise PermissionError(
        errno.EACCES,
        f"Cannot save to {given}: {why}{owner}. Save to a directory you can write, or ask its owner for write "
        f"permission; {_unchanged(given)}",
        str(given),
    )


def _unchanged(given: Path) -> str:
    return f"{given} was left unchanged" if os.path.lexists(given) else "nothing was written"


@contextmanager
def _named(given: Path, target: Path) -> Iterator[None]:
    """Re-raises an `OSError` naming a hidden sibling of ``target`` (``.<name>.ir3de-new-*``, ``.<name>.*.partial``)
    as the same error about ``given``, the path the user passed, with the original as its ``__cause__``."""
    try:
        yield
    except OSError as error:
        named = [str(name) for name in (error.filename, error.filename2) if name is not None]
        hidden = f"{target.parent}{os.sep}.{target.name}."
        if not any(name.startswith(hidden) for name in named):
            raise
        reason = error.strerror or str(error)
        raise OSError(error.errno, f"Cannot save to {given}: {reason}; {_unchanged(given)}", str(given)) from error


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
        PermissionError: if this user may not write `target` or its folder (see `check_writable`); nothing is
            written and `target` is left unchanged.
    """
    given = Path(target)
    target = Path(os.path.realpath(target))
    if os.path.lexists(target) and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "cannot save into a path that is not a directory", str(given))
    check_writable(given, directory=True)
    with _named(given, target):
        recover_directory(target)
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
        new = _sibling(target, _NEW)
        os.mkdir(new)
    try:
        with ExitStack() as stack:
            _lock(new, stack)
            with _named(given, target):
                yield new
                _umask_modes(new)
                if target.is_dir():
                    _lock(target, stack)  # the old directory, wherever the swap puts it
                    if keep_others:
                        _carry_over(target, new)
                    shutil.copymode(target, new)
                _swap(new, target)
    finally:
        if os.path.lexists(new):  # the new directory if the save failed, the old one after an exchange
            _remove(new)


def _umask_modes(directory: Path) -> None:
    """Gives the files the save wrote at the top of ``directory`` the umask's mode (safetensors writes 0600);
    subfolders are left alone: expert folders are hard links to the user's own files."""
    mode = file_mode()
    for entry in directory.iterdir():
        if entry.is_file() and not entry.is_symlink():
            os.chmod(entry, mode)


@contextmanager
def atomic_file(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a hidden temporary path beside ``target`` (``.<name>.<random>.partial``) to write a file into; when the
    block succeeds the file gets the umask's mode and replaces ``target`` in one rename, else it is removed.

    Raises:
        PermissionError: if this user may not write ``target`` (see `check_writable`); ``target`` is left unchanged.
    """
    given = Path(target)
    target = Path(os.path.realpath(given))
    check_writable(given, directory=False)
    with _named(given, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        os.close(handle)
        try:
            yield Path(staging)
            os.chmod(staging, file_mode())
            os.replace(staging, target)
        finally:
            with suppress(OSError):
                os.unlink(staging)
