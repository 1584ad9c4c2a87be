"""A full disk and an unwritable folder during a run (issue 15, item 3): one line naming the
file and what to do, no traceback, no temp files left, and the next run (space freed)
finishes the book without paying a request twice."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from support.parts import require
from support.project import Project, make_project

from pipeline.core import store


def _messages(out: str) -> list[str]:
    """What a run printed besides its progress lines (``.  task``, ``-- task``) and its
    closing summary (``scenemake: N scene(s) built, ...``)."""
    return [line for line in out.splitlines()
            if line.strip() and not line.startswith((".  ", "-- "))
            and not (line.startswith("scenemake: ") and " task(s) run" in line)]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A tmpfs of the given size (root only: CI runs as root; a developer may not)."""
    require(os.geteuid() == 0 and shutil.which("mount") is not None, "a small tmpfs",
            "mounting one needs root and mount")
    mounted: list[Path] = []

    def mount(size_kb: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs",
                               str(where)], capture_output=True, text=True)
        require(done.returncode == 0, "a small tmpfs",
                f"mount -t tmpfs failed: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("size_kb", [200, 350, 700, 1100])
def test_a_full_disk_stops_the_run_in_one_line(small_disk, size_kb: int):
    disk = small_disk(size_kb)
    project = Project(make_project(disk / "proj"))
    full = project.doit()
    assert full.returncode != 0
    assert "Traceback" not in full.out
    said = _messages(full.out)
    # doit's failure report is a header line and the message; a DB failure is one line
    assert 1 <= len(said) <= 2, full.out
    assert any(("full" in line or "No space" in line) and "free some disk space" in line
               for line in said), full.out
    assert list(disk.rglob("*.tmp")) == []  # no debris

    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    again = project.doit()
    assert again.returncode == 0, again.out
    assert "Traceback" not in again.out
    assert list(disk.rglob("*.tmp")) == []
    paid = Counter(c["request_hash"] for c in project.misses())
    # at most the answer whose cache entry the full disk refused is asked again
    assert sum(n - 1 for n in paid.values()) <= 1


def test_a_folder_made_unwritable_before_the_rename_is_one_error(tmp_path: Path,
                                                                 monkeypatch):
    target = tmp_path / "scene" / "prose.md"
    target.parent.mkdir()
    target.write_text("old prose\n")

    def refused(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    # the folder turns read-only between the temp file and its rename: both the rename and
    # the clean-up's unlink are refused
    monkeypatch.setattr(store.os, "replace", refused)
    monkeypatch.setattr(store.os, "unlink", refused)
    with pytest.raises(store.WriteError) as err:
        store.atomic_write_many({str(target): b"new prose\n"})
    assert "prose.md" in str(err.value) and "\n" not in str(err.value)
    assert target.read_text() == "old prose\n"  # nothing built is lost
    monkeypatch.undo()
    # the temp file that could not be removed is the next run's to sweep (its writer is
    # this live process here, so pretend it died: rename it to a dead PID)
    left = list(target.parent.glob(".prose.md.*.tmp"))
    assert len(left) == 1
    dead = left[0].with_name(left[0].name.replace(f".{os.getpid()}-", ".999999999-"))
    left[0].rename(dead)
    assert store.sweep_debris(target.parent) == [dead.name]
    assert sorted(p.name for p in target.parent.iterdir()) == ["prose.md"]


def _chattr(flag: str, path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.mark.slow
def test_an_immutable_artifact_folder_fails_its_task_in_one_line(project: Project):
    project.build("plan")
    folder = project.artifact("ch001_sc001", "write")
    folder.mkdir(parents=True)
    require(_chattr("+i", folder), "chattr +i (an immutable folder)",
            "e2fsprogs' chattr on a file system that supports it")
    try:
        failed = project.doit()
    finally:
        _chattr("-i", folder)
    assert failed.returncode != 0
    assert "Traceback" not in failed.out
    said = _messages(failed.out)
    assert len(said) <= 2 and "write/" in said[-1] and "may write" in said[-1], failed.out
    assert list(project.root.rglob("*.tmp")) == []
    again = project.doit()
    assert again.returncode == 0, again.out
    assert [h for h, n in Counter(c["request_hash"] for c in project.misses()).items()
            if n > 1] == []
