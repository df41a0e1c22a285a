# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""`local_path_or_hub_id` and `hub_id`: the one rule that tells a local path from a Hub repository id."""

from __future__ import annotations

from pathlib import Path

import pytest

from ir3de_hf.hub._locations import hub_id, local_path_or_hub_id


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory holding the directory ``org/name`` and the file ``data.txt``, so relative inputs
    resolve the same on every machine."""
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "data.txt").write_text("text")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("org/name", "local"),  # an existing directory wins over the Hub id it looks like
        ("data.txt", "local"),  # an existing file
        ("./x", "local"),
        ("/abs/missing", "local"),
        ("~/x", "local"),
        ("a/b/c", "local"),  # more than one "/"
        ("org/other", "hub"),
        ("name", "hub"),
        ("org/na me", "local"),  # not a valid repository id
        ("org--name", "local"),
        (Path("org/other"), "local"),  # an os.PathLike is always local
        ("C:\\x", "local"),  # a Windows path
        ("org\\name", "local"),
    ],
)
def test_local_path_or_hub_id(workdir, value, expected):
    located = local_path_or_hub_id(value)
    if expected == "hub":
        assert located == value and isinstance(located, str)
    else:
        assert located == Path(value).expanduser()


def test_home_is_expanded(workdir):
    assert local_path_or_hub_id("~/x") == Path.home() / "x"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("org/other", "org/other"),
        ("name", None),  # cards link only "org/name" repositories
        ("org/name", None),  # exists locally
        ("./org/other", None),
        ("a/b/c", None),
        ("org/na me", None),
        (Path("org/other"), None),
        (None, None),
    ],
)
def test_hub_id(workdir, value, expected):
    assert hub_id(value) == expected
