"""The package data pyproject.toml ships exists: every glob names at least one file."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_data_glob_matches_a_file() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    data = project["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["firmware"], "PEP 561: the package says it is typed"
    for package, globs in data.items():
        folder = REPO / package.replace(".", "/")
        for pattern in globs:
            assert list(folder.glob(pattern)), f"{package}: nothing matches {pattern!r}"
