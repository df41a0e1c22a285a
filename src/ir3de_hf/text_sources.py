# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Every kind of expert text a fit accepts, opened as one streaming `datasets.IterableDataset`.

A single kind of stream keeps the fit loop simple: it can be sharded over processes without repeating a sample
(`split_dataset_by_node`), and its `state_dict()` is the exact position to resume from after a crash. Files are
streamed, never copied into an Arrow cache, so a fit on billions of tokens runs in constant memory.

A source also has an identity (`source_identity`), which a fit checkpoint records so that a rerun on other data is
refused instead of resumed, and bad data is reported by file (`unreadable`, `invalid_text`) rather than by the
`UnicodeDecodeError` or Arrow parse error that `datasets` raises without naming the file.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._extras import require
from .hub._locations import local_path_or_hub_id

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset

__all__ = [
    "describe_change",
    "describe_source",
    "invalid_text",
    "open_text_source",
    "read_errors",
    "shard_for_process",
    "source_identity",
    "unreadable",
]

_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_FORMATS = {".txt": "text", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_END_BYTES = 64 * 1024  # a large file is identified by its first and last 64 KiB ...
_WHOLE_FILE_BYTES = 1024 * 1024  # ... a file under 1 MiB by all of it
_SCAN_BYTES = 1024 * 1024
_MAX_NAMED_CHANGES = 5

_PURPOSE = "fitting from files, Hub datasets, a datasets.Dataset or texts"


def _datasets() -> ModuleType:
    """`datasets`, which opens every kind of expert text a fit streams (the ``data`` extra)."""
    return require("datasets", extra="data", purpose=_PURPOSE)


def read_errors() -> tuple[type[BaseException], ...]:
    """What `datasets` raises on a file it cannot parse: UnicodeDecodeError and Arrow's errors (both ValueErrors,
    mostly), and StopIteration when the first JSON file has no row to infer the columns from."""
    return (ValueError, require("pyarrow", extra="data", purpose=_PURPOSE).ArrowException, StopIteration)


@dataclass(frozen=True)
class _Files:
    """Local files of one kind, sorted. ``root`` is the folder that their names in an identity are relative to, so a
    moved copy of the data is the same data; ``kind`` is the `datasets` builder that reads them."""

    root: Path
    paths: list[Path]
    kind: str


def open_text_source(source: Any, *, text_column: str = "text", split: str = "train") -> IterableDataset:
    """Opens expert text as an `IterableDataset` with a ``text_column`` of strings.

    ``source`` may be a `datasets.Dataset` or `IterableDataset`, a list of strings, or a path: a directory of ``.txt``
    files (each file is one text; ``.parquet`` / ``.jsonl`` files are used when it has no ``.txt``), a ``.parquet``,
    ``.jsonl`` or ``.txt`` file, a glob pattern of such files, or else a dataset id on the Hub (``split`` is used).
    """
    datasets = _datasets()
    if isinstance(source, str | Path):
        dataset = _open_path(source, text_column, split)
    elif isinstance(source, datasets.Dataset):
        dataset = source.to_iterable_dataset()
    elif isinstance(source, datasets.IterableDataset):
        dataset = source
    else:
        dataset = datasets.Dataset.from_dict({text_column: _texts(source)}).to_iterable_dataset()
    if dataset.features is not None:
        if text_column not in dataset.features:
            raise ValueError(
                f"{describe_source(source)} has no column {text_column!r} (columns: "
                f"{', '.join(dataset.features)}); choose the text column with text_column= (CLI: --text-column)."
            )
        dataset = dataset.select_columns([text_column])
    return dataset


def shard_for_process(dataset: IterableDataset, rank: int, world_size: int) -> IterableDataset:
    """The part of ``dataset`` that process ``rank`` counts. Every sample goes to exactly one process, none twice
    (unlike a DataLoader with ``even_batches=True``): whole files when their number is a multiple of
    ``world_size``, else every ``world_size``-th sample."""
    if world_size == 1:
        return dataset
    distributed = require("datasets.distributed", extra="data", purpose=_PURPOSE)
    return distributed.split_dataset_by_node(dataset, rank=rank, world_size=world_size)


def describe_source(source: Any) -> str:
    """A short description of a source for messages."""
    if isinstance(source, str | Path):
        path = Path(source)
        return str(path.resolve()) if path.exists() else str(source)
    datasets = _datasets()
    if isinstance(source, datasets.Dataset):
        return f"Dataset of {len(source)} rows"
    if isinstance(source, datasets.IterableDataset):
        return f"IterableDataset(name={source.info.dataset_name}, features={source.features})"
    return f"list of {len(source)} texts"


# ------------------------------------------------------------------------------------------------ identity


def source_identity(source: Any, *, text_column: str = "text", split: str = "train") -> dict[str, Any]:
    """What a fit checkpoint records of ``source`` (plain JSON), so that a rerun on other data is refused.

    Files: each file's name (relative to the source's folder), size, ``mtime_ns`` and the sha256 of its first and
    last 64 KiB (of all of it under 1 MiB): no file is read beyond 1 MiB, yet a change of its length, of either end or
    of its modification time shows. A list of strings: the sha256 of all its texts (it is in memory anyway). A
    `Dataset`: its length, columns and the sha256 of its first and last texts (its fingerprint is private API). A
    Hub dataset: its id and ``split``. An `IterableDataset`: only its name, features and shard count, as its content
    cannot be known without reading all of it (resuming on a stream trusts the caller to give the same one).

    Raises:
        ValueError: a text of a list is not valid Unicode (see `invalid_text`), or files of mixed kinds.
        FileNotFoundError: a path that is neither there nor a dataset id.
        TypeError: ``source`` is of no kind a fit reads.
    """
    if isinstance(source, str | Path):
        located = _locate(source)
        if isinstance(located, str):
            return {"dataset": located, "split": split}
        return {"files": {path.relative_to(located.root).as_posix(): _file_identity(path) for path in located.paths}}
    datasets = _datasets()
    if isinstance(source, datasets.Dataset):
        return _dataset_identity(source, text_column)
    if isinstance(source, datasets.IterableDataset):
        return {"stream": source.info.dataset_name, "features": str(source.features), "shards": source.num_shards}
    texts = _texts(source)
    problem = invalid_text(texts)
    if problem is not None:
        raise ValueError(problem)
    return {"texts": len(texts), "sha256": _sha256(texts)}


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """How a source's identity changed, in words: the files added, removed or changed (the first five named), or
    what its texts became."""
    if "files" in old and "files" in new:
        return _file_changes(old["files"], new["files"])
    before, after = _summary(old), _summary(new)
    return f"the content of its {before} changed" if before == after else f"its data changed from {before} to {after}"


def _file_identity(path: Path) -> dict[str, Any]:
    status = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if status.st_size < _WHOLE_FILE_BYTES:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_END_BYTES))
            handle.seek(-_END_BYTES, 2)
            digest.update(handle.read())
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "sha256": digest.hexdigest()}


def _dataset_identity(dataset: Dataset, text_column: str) -> dict[str, Any]:
    ends = sorted({0, len(dataset) - 1}) if len(dataset) else []
    texts = [str(dataset[index].get(text_column)) for index in ends]
    return {"rows": len(dataset), "columns": dataset.column_names, "ends_sha256": _sha256(texts)}


def _sha256(texts: Iterable[str]) -> str:
    """Length-prefixed, so that no two different lists of texts hash the same way by concatenation."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _file_changes(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> str:
    changes = [f"file {name!r} added" for name in sorted(new.keys() - old.keys())]
    changes += [f"file {name!r} removed" for name in sorted(old.keys() - new.keys())]
    changes += [
        f"file {name!r} changed ({_how(old[name], new[name])})"
        for name in sorted(old.keys() & new.keys())
        if old[name] != new[name]
    ]
    more = len(changes) - _MAX_NAMED_CHANGES
    return ", ".join(changes[:_MAX_NAMED_CHANGES]) + (f" and {more} more" if more > 0 else "")


def _how(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old["size"] != new["size"]:
        return f"size {old['size']} -> {new['size']} bytes"
    return "content" if old["sha256"] != new["sha256"] else "modification time"


def _summary(identity: dict[str, Any]) -> str:
    if "files" in identity:
        return f"{len(identity['files'])} files"
    if "texts" in identity:
        return f"list of {identity['texts']} texts"
    if "rows" in identity:
        return f"Dataset of {identity['rows']} rows"
    if "dataset" in identity:
        return f"Hub dataset {identity['dataset']!r} (split {identity['split']!r})"
    return f"stream {identity['stream']!r} ({identity['shards']} shards)"


# ------------------------------------------------------------------------------------------------ bad data


def invalid_text(texts: Sequence[str], first_index: int = 0) -> str | None:
    """Why ``texts`` are not valid Unicode, or None: the index (counted from ``first_index``) and position of the
    first lone surrogate, which UTF-8 cannot encode and a tokenizer refuses deep inside with an obscure error."""
    for index, text in enumerate(texts, start=first_index):
        match = _SURROGATE.search(text)
        if match is not None:
            return (
                f"text {index} is not valid Unicode: {match.group()!r} at character {match.start()} is a lone "
                "surrogate (text decoded with errors='surrogateescape'?); decode the source as UTF-8 first."
            )
    return None


def unreadable(source: Any, error: BaseException) -> ValueError:
    """The error to raise when `datasets` failed to read ``source`` with ``error`` (one of `read_errors()`, which
    does not say which file): the first file that is not UTF-8 text, valid JSON lines or parquet is found and named,
    with the byte offset or line of the problem. Only run after a failure: it reads the files again."""
    located = _locate(source) if isinstance(source, str | Path) else None
    return _explained(located if isinstance(located, _Files) else None, describe_source(source), error)


def _explained(files: _Files | None, description: str, error: BaseException) -> ValueError:
    if files is not None:
        problems = (_file_problem(path, files.kind) for path in files.paths)
        problem = next((found for found in problems if found is not None), None)
        if problem is not None:
            return ValueError(problem)
    detail = str(error).splitlines()[0] if str(error) else "no detail"
    return ValueError(f"{description} could not be read ({type(error).__name__}: {detail}).")


def _file_problem(path: Path, kind: str) -> str | None:
    if kind == "parquet":
        pyarrow = require("pyarrow", extra="data", purpose=_PURPOSE)
        try:
            require("pyarrow.parquet", extra="data", purpose=_PURPOSE).ParquetFile(path)
        except pyarrow.ArrowException as error:
            return f"{path} is not a readable parquet file ({str(error).splitlines()[0]})."
        return None
    invalid = _first_invalid_utf8(path)
    if invalid is not None:
        offset, byte = invalid
        return (
            f"{path} is not UTF-8 text: byte 0x{byte:02x} at offset {offset} cannot be decoded; re-encode the file "
            "as UTF-8 (e.g. iconv -f latin1 -t utf-8) or remove it."
        )
    problem = _json_lines_problem(path) if kind == "json" else None
    return None if problem is None else f"{path}: {problem}; expected one JSON object per line."


def _first_invalid_utf8(path: Path) -> tuple[int, int] | None:
    """``(offset, byte)`` of the first byte that does not decode as UTF-8, reading 1 MiB at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    read = 0
    with path.open("rb") as handle:
        while True:
            block = handle.read(_SCAN_BYTES)
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the previous block
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as error:
                return read - pending + error.start, error.object[error.start]
            if not block:
                return None
            read += len(block)


def _json_lines_problem(path: Path) -> str | None:
    """The first line that is not a JSON object; None too for a ``.json`` file that is one JSON document."""
    if path.suffix.lower() == ".json" and _is_json_document(path):
        return None
    rows = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                return f"line {number} is not valid JSON: {error.msg} (column {error.colno})"
            if not isinstance(row, dict):
                return f"line {number} is not a JSON object"
            rows += 1
    return None if rows else "it holds no JSON line"


def _is_json_document(path: Path) -> bool:
    try:
        json.loads(path.read_bytes())
    except json.JSONDecodeError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ locating


def _texts(source: Any) -> list[str]:
    """``source`` as a list of strings; any other object is of no kind a fit reads."""
    if not isinstance(source, Sequence) or isinstance(source, bytes | bytearray):
        raise TypeError(
            f"a value of type {type(source).__name__} is not expert text: expected a path, a dataset id, a "
            "datasets.Dataset / IterableDataset or a list of strings."
        )
    for index, text in enumerate(source):
        if not isinstance(text, str):
            raise TypeError(
                f"the list of texts holds a value of type {type(text).__name__} at index {index}; expected strings."
            )
    return list(source)


def _locate(source: str | Path) -> str | _Files:
    """A Hub dataset id, or the local files of ``source``; `local_path_or_hub_id` decides which (a `Path` is always
    local), and ``_DATASET_ID`` also requires a dataset id to start with a letter or digit."""
    located = local_path_or_hub_id(source)
    if isinstance(located, str) and _DATASET_ID.match(located):
        return located
    path = Path(located)
    pattern = str(source)
    if path.is_dir():
        root, files = path, _files_in(path)
    elif path.is_file():
        root, files = path.parent, [path]
    elif glob.has_magic(pattern):
        files = sorted(Path(match) for match in glob.glob(str(path), recursive=True) if Path(match).is_file())
        if not files:
            raise FileNotFoundError(f"No file matches {pattern!r}.")
        root = Path(*itertools.takewhile(lambda part: not glob.has_magic(part), path.parts))
    else:
        raise FileNotFoundError(
            f"No such file or directory: {pattern!r} (expected a directory of .txt files, a .parquet / .jsonl / .txt "
            "file, a glob pattern or a dataset id)."
        )
    kinds = {_FORMATS.get(file.suffix.lower()) for file in files}
    if None in kinds or len(kinds) != 1:
        suffixes = sorted({file.suffix or file.name for file in files})
        raise ValueError(f"{pattern!r}: expected files of one kind among .txt, .parquet, .jsonl, got {suffixes}.")
    return _Files(root, files, str(kinds.pop()))


def _files_in(directory: Path) -> list[Path]:
    everything = sorted(file for file in directory.rglob("*") if file.is_file())
    for suffixes in ((".txt",), (".parquet",), (".jsonl", ".json")):
        files = [file for file in everything if file.suffix.lower() in suffixes]
        if files:
            return files
    held = ", ".join(file.relative_to(directory).as_posix() for file in everything[:_MAX_NAMED_CHANGES])
    more = f" and {len(everything) - _MAX_NAMED_CHANGES} more" if len(everything) > _MAX_NAMED_CHANGES else ""
    contents = f"it holds {held}{more}" if everything else "it is empty"
    raise FileNotFoundError(f"{str(directory)!r} holds no .txt, .parquet or .jsonl file ({contents}).")


def _open_path(source: str | Path, text_column: str, split: str) -> IterableDataset:
    located = _locate(source)
    if isinstance(located, str):
        return _open_hub_dataset(located, split)
    options: dict[str, Any] = {"sample_by": "document"} if located.kind == "text" else {}
    data_files = [str(path) for path in located.paths]
    try:  # parquet and JSON files are read here already, to infer the columns
        dataset = _datasets().load_dataset(
            located.kind, data_files=data_files, split="train", streaming=True, **options
        )
    except read_errors() as error:
        raise _explained(located, describe_source(source), error) from error
    if located.kind == "text" and text_column != "text":
        dataset = dataset.rename_column("text", text_column)
    return dataset


def _open_hub_dataset(dataset_id: str, split: str) -> IterableDataset:
    try:
        return _datasets().load_dataset(dataset_id, split=split, streaming=True)
    except Exception as error:  # the Hub client raises many types; the user needs one message
        raise FileNotFoundError(
            f"{dataset_id!r} is neither a local path nor a loadable dataset id ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'})."
        ) from error
