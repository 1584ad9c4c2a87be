"""Shared fixtures: a fresh copy of the project per test (``project``), a built one
(``built``), the llama.cpp server (``llama_server``); helpers live in tests/support/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.llama import llama_server, pytest_runtest_setup  # noqa: F401
from support.project import Project, make_project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(make_project(tmp_path / "proj"))


@pytest.fixture(scope="session")
def built_template(tmp_path_factory) -> Path:
    """One full offline build, copied by tests that start from a built book."""
    root = make_project(tmp_path_factory.mktemp("built") / "proj")
    Project(root).build()
    return root


@pytest.fixture
def built(tmp_path: Path, built_template: Path) -> Project:
    root = tmp_path / "proj"
    shutil.copytree(built_template, root, symlinks=True)
    return Project(root)


def pytest_collection_modifyitems(items) -> None:
    """A test that needs a real server is slow too: ``pytest -m "not slow"`` is the quick suite."""
    for item in items:
        if (item.get_closest_marker("llama") is not None
                or item.get_closest_marker("fleet") is not None):
            item.add_marker(pytest.mark.slow)
