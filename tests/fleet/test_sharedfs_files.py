"""``--shared-fs`` without servers: the probe, what a worker writes back into the shared
project, and the build-DB rows the caller merges."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from targets.fleet.sharedfs import (
    SharedFS,
    copy_in,
    db_records,
    db_rows,
    manifest,
    merge_records,
    refusal,
    write_back,
    write_probe,
)
from targets.fleet.units import Unit

UNIT = Unit("book:a", inputs=("workspace/books/a/book.json",),
            outputs=("workspace/books/a/draft",),
            optional=("workspace/.scenemake/books/a.sqlite",
                      "workspace/.scenemake/books/a.stamp.json"),
            command=("true",))
DB = "workspace/.scenemake/books/a.sqlite"


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _db(path: Path, rows: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("create table if not exists doit (task_id text not null primary key, "
                     "task_data json)")
        conn.execute("delete from doit")
        conn.executemany("insert into doit values (?, ?)", rows.items())
    conn.close()


def _rows(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("select task_id, task_data from doit"))
    finally:
        conn.close()


def test_a_missing_shared_folder_or_another_probe_is_refused(tmp_path):
    root = tmp_path / "proj"
    (root / "workspace").mkdir(parents=True)
    shared = write_probe(root)
    assert refusal(shared, "w1") == ""
    gone = SharedFS(str(tmp_path / "nowhere"), shared.probe, shared.token)
    why = refusal(gone, "w1")
    assert "worker w1 cannot see the shared folder" in why and str(tmp_path / "nowhere") in why
    assert "\n" not in why
    other = SharedFS(shared.root, shared.probe, "0" * 32)
    assert "worker w1 sees another folder" in refusal(other, "w1")


def test_a_worker_writes_back_what_changed_and_the_caller_merges_the_rows(tmp_path):
    shared, copy = tmp_path / "shared", tmp_path / "copy"
    _write(shared, "workspace/books/a/book.json", "{}")
    kept = _write(shared, "workspace/books/a/draft/kept.md", "the same\n")
    _write(shared, "workspace/books/a/draft/old.md", "to be deleted by the unit\n")
    _write(shared, "workspace/books/a/draft/edited.md", "before\n")
    _db(shared / DB, {"plan": f'"{copy}/x"', "gone": '"g"'})
    kept_mtime = kept.stat().st_mtime_ns
    copy_in(shared, copy, UNIT)
    assert (copy / "workspace/books/a/draft/kept.md").stat().st_mtime_ns == kept_mtime
    before = manifest(copy, UNIT.outputs + UNIT.optional)
    assert DB not in before  # a DB never goes back as a file
    rows = db_rows(copy, UNIT.outputs + UNIT.optional)

    # the unit: one file edited, one new, one deleted, its DB changed; and a temp file of
    # another machine's writer (its PID is no process here) is in the shared folder
    (copy / "workspace/books/a/draft/old.md").unlink()
    _write(copy, "workspace/books/a/draft/edited.md", "after\n")
    new = _write(copy, "workspace/books/a/draft/new.md", "new\n")
    os.utime(new, ns=(1_700_000_000_000_000_000, 1_700_000_000_123_456_789))
    _db(copy / DB, {"plan": f'"{copy}/x"', "write": '"w"'})
    theirs = _write(shared, "workspace/books/a/draft/.other.md.4194305-1-0.tmp", "in flight")
    written, removed = write_back(copy, shared, UNIT, before)

    assert (written, removed) == (2, 1)
    draft = shared / "workspace/books/a/draft"
    assert (draft / "edited.md").read_text() == "after\n"
    assert (draft / "new.md").stat().st_mtime_ns == 1_700_000_000_123_456_789
    assert not (draft / "old.md").exists()
    assert kept.stat().st_mtime_ns == kept_mtime  # unchanged: not rewritten
    assert theirs.exists()  # another machine's write in progress is not "debris"
    assert _rows(shared / DB) == {"plan": f'"{copy}/x"', "gone": '"g"'}
    # (the worker never opens the caller's DB: only its rows go back)

    records = db_records(rows, db_rows(copy, UNIT.outputs + UNIT.optional))
    assert list(records) == [DB]
    table = records[DB]["doit"]
    assert table["upsert"] == [("write", '"w"')] and table["delete"] == [["gone"]]
    merge_records(shared, records, str(copy))
    # the caller's DB: the unit's rows, and the worker's folder in them is the project's
    assert _rows(shared / DB) == {"plan": f'"{shared.resolve()}/x"', "write": '"w"'}


def test_rows_merge_into_a_caller_that_has_no_build_db_yet(tmp_path):
    copy, caller = tmp_path / "copy", tmp_path / "caller"
    _db(copy / DB, {"plan": '"p"'})
    records = db_records({}, db_rows(copy, UNIT.optional))
    merge_records(caller, records, str(copy))
    assert _rows(caller / DB) == {"plan": '"p"'}
    assert db_records(db_rows(copy, UNIT.optional), db_rows(copy, UNIT.optional)) == {}


def test_an_output_the_user_changed_meanwhile_is_not_removed(tmp_path):
    shared, copy = tmp_path / "shared", tmp_path / "copy"
    _write(shared, "workspace/books/a/book.json", "{}")
    _write(shared, "workspace/books/a/draft/notes.md", "v1\n")
    copy_in(shared, copy, UNIT)
    before = manifest(copy, UNIT.outputs)
    (copy / "workspace/books/a/draft/notes.md").unlink()
    _write(shared, "workspace/books/a/draft/notes.md", "edited by hand meanwhile\n")
    assert write_back(copy, shared, UNIT, before) == (0, 0)
    assert (shared / "workspace/books/a/draft/notes.md").read_text() == \
        "edited by hand meanwhile\n"


def test_rows_a_stopped_caller_never_merged_are_merged_by_the_next_fleet(tmp_path):
    from targets.fleet.sharedfs import PENDING_DIR, merge_pending, merged, write_pending

    shared, copy = tmp_path / "shared", tmp_path / "copy"
    _write(shared, "workspace/books/a/book.json", "{}")
    _db(shared / DB, {"plan": '"old"'})
    copy_in(shared, copy, UNIT)
    rows = db_rows(copy, UNIT.optional)
    _db(copy / DB, {"plan": '"new"', "write": f'"{copy}/w"'})
    records = db_records(rows, db_rows(copy, UNIT.optional))
    # the worker keeps the rows beside the files; the caller stopped before merging them
    pending = write_pending(shared, "book:a", str(copy), records)
    assert pending and (shared / pending).is_file()
    assert merge_pending(shared) == ["book:a"]
    assert _rows(shared / DB) == {"plan": '"new"', "write": f'"{shared.resolve()}/w"'}
    assert not list((shared / PENDING_DIR).iterdir())
    # a caller that merged them itself removes them
    pending = write_pending(shared, "book:a", str(copy), records)
    merged(shared, pending)
    assert merge_pending(shared) == []
    assert write_pending(shared, "book:a", str(copy), {}) is None  # nothing changed


def test_a_broken_pending_file_is_one_line(tmp_path):
    from pipeline.core.errors import UserError
    from targets.fleet.sharedfs import PENDING_DIR, merge_pending

    _write(tmp_path, f"{PENDING_DIR}/1-book_a.json", '{"unit": "book:a"}')
    try:
        merge_pending(tmp_path)
    except UserError as exc:
        assert "not a fleet unit's build records" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("a broken pending file was merged")
