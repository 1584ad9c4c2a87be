"""pytest fixtures of the L7 tests: an L7 project copy, built or not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.l7 import L7Project, copy_project


@pytest.fixture
def l7(tmp_path: Path) -> L7Project:
    """A fresh project, nothing built."""
    return copy_project(tmp_path / "proj")


@pytest.fixture(scope="session")
def l7_built_template(tmp_path_factory) -> Path:
    """One offline run of the example session, copied by the tests that start from it."""
    project = copy_project(tmp_path_factory.mktemp("l7built") / "proj")
    proc = project.cli()
    assert proc.returncode == 0, proc.out
    return project.root


@pytest.fixture
def l7_built(tmp_path: Path, l7_built_template: Path) -> L7Project:
    root = tmp_path / "proj"
    shutil.copytree(l7_built_template, root, symlinks=True)
    return L7Project(root)
