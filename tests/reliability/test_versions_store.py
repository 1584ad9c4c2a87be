"""The versions store trusts nothing it reads back (issue 25, item 1): a kept file corrupted in
place, truncated, replaced by a link (to /etc/passwd), or named in the index by a path that
climbs out of ``objects/`` is never shown by ``doit diff`` nor written by ``doit restore``
(one line naming the version and the file, nothing written), and ``doit verify`` and
``doit gc`` report it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.project import Project

from pipeline.book.versions import Versions

TASK = "write:ch001_sc002"
SID = "ch001_sc002"
PASSWD = Path("/etc/passwd")


def _damage(project: Project, how: str) -> str:
    """Damage version 1's prose in the store ``how``; returns what a leak would show."""
    store = project.root / "workspace" / ".scenemake" / "versions" / "example"
    index = store / "index" / SID / "write.json"
    data = json.loads(index.read_text())
    digest = data["versions"][0]["files"]["prose"]
    blob = store / "objects" / digest[:2] / digest
    text = blob.read_bytes()
    if how == "corrupt":  # same size, one word changed
        blob.write_bytes(text.replace(b" ", b"#", 1))
        return "#"
    if how == "truncated":
        blob.write_bytes(text[: len(text) // 2])
        return text[: len(text) // 2].decode()[-20:]
    if how == "symlink":
        blob.unlink()
        os.symlink(PASSWD, blob)
        return "root:"
    if how == "climbing":
        data["versions"][0]["files"]["prose"] = "../../../../../../../../../../etc/passwd"
        index.write_text(json.dumps(data))
        return "root:"
    raise AssertionError(how)


@pytest.fixture
def two_versions(built: Project) -> Project:
    built.build("rerun-from", TASK)
    return built


@pytest.mark.slow
@pytest.mark.parametrize("how", ["corrupt", "truncated", "symlink", "climbing"])
def test_a_damaged_kept_file_is_never_shown_or_restored(two_versions: Project, how: str):
    project = two_versions
    leak = _damage(project, how)
    prose = project.artifact(SID, "write/prose.md")
    before = prose.read_bytes()
    ledger = project.ledger(SID)

    diff = project.doit("diff", TASK, "1", "2")
    assert diff.returncode != 0 and "Traceback" not in diff.out, diff.out
    assert diff.stdout == ""  # not even the header: nothing of either version is shown
    [line] = diff.stderr.strip().splitlines()
    assert f"{TASK} version 1: kept file 'prose'" in line
    assert leak not in line

    restore = project.doit("restore", TASK, "1")
    assert restore.returncode != 0 and "Traceback" not in restore.out, restore.out
    [line] = restore.stderr.strip().splitlines()
    assert f"{TASK} version 1: kept file 'prose'" in line and "nothing was written" in line
    assert prose.read_bytes() == before  # nothing written
    assert project.ledger(SID) == ledger
    assert "restored" not in project.build("history", TASK).stdout

    verify = project.doit("verify")
    assert verify.returncode == 1, verify.out
    assert f"damaged kept version: {TASK} version 1: kept file 'prose'" in verify.stdout
    assert "every recorded file matches" not in verify.stdout

    gc = project.doit("gc")
    assert gc.returncode == 1 and "Traceback" not in gc.out, gc.out
    assert f"damaged: {TASK} version 1: kept file 'prose'" in gc.stdout
    assert PASSWD.exists()
    # version 2 is intact: it still diffs against nothing damaged
    assert project.build("restore", TASK, "2").returncode == 0


def _store_with_one_version(tmp_path: Path) -> tuple[Versions, Path, str]:
    store = Versions(tmp_path / ".scenemake", "b")
    art = tmp_path / "prose.md"
    art.write_text("the lamp was lit\n")
    entry = store.add(TASK, {"prose": str(art)}, {"reason": "first build"})
    assert entry is not None
    return store, art, entry["files"]["prose"]


def test_gc_never_enters_a_linked_folder_nor_deletes_a_links_target(tmp_path: Path):
    store, _, digest = _store_with_one_version(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not the store's")
    (outside / ("ab" * 32)).write_text("named like a blob")
    os.symlink(outside, store.root / "objects" / "zz")
    os.symlink(outside / "precious.txt", store.root / "objects" / digest[:2] / ("0" * 64))
    count, _ = store.gc()
    assert count == 1  # the stray link itself, not what it points to
    assert (outside / "precious.txt").read_text() == "not the store's"
    assert (outside / ("ab" * 32)).exists()
    assert store.damage() == []


def test_keeping_the_same_content_again_repairs_a_damaged_kept_file(tmp_path: Path):
    store, art, digest = _store_with_one_version(tmp_path)
    blob = store.root / "objects" / digest[:2] / digest
    blob.write_text("the lamp was lot\n")
    [damage] = store.damage()
    assert damage.version == 1 and damage.name == "prose" and "does not match" in damage.problem
    art.write_text("the lamp was lit\n")
    store.add(TASK, {"prose": str(art)}, {"reason": "again"})  # same content: no new version
    assert store.damage() == []
    assert store.content(TASK, store.version(TASK, 1), "prose") == b"the lamp was lit\n"


def test_a_fifo_in_the_store_is_refused_without_waiting(tmp_path: Path):
    store, _, digest = _store_with_one_version(tmp_path)
    blob = store.root / "objects" / digest[:2] / digest
    blob.unlink()
    os.mkfifo(blob)
    [damage] = store.damage()
    assert "not a regular file" in damage.problem
