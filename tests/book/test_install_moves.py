"""scenemake itself moves (a new venv, a moved checkout): a built book stays built.

The default templates are file dependencies of every LLM phase, recorded by path. Each
"install" here is a copy of the package folders, put first on PYTHONPATH.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.project import REPO, executed

pytestmark = pytest.mark.slow  # real subprocesses and servers: minutes, not seconds


def _install(where: Path) -> dict:
    for package in ("pipeline", "targets"):
        shutil.copytree(REPO / package, where / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return {"PYTHONPATH": str(where)}


def test_a_moved_install_rebuilds_nothing_and_a_changed_default_is_still_a_prompt_change(
        project, tmp_path):
    first = _install(tmp_path / "venv-a")
    second = _install(tmp_path / "venv-b")
    project.build(env=first)
    calls = len(project.calls())
    built = {p: p.stat().st_mtime_ns for p in project.draft.rglob("*.json")}

    # the same templates at another path: nothing runs, nothing is asked, nothing rewritten
    moved = project.build(env=second)
    assert [t for t in executed(moved) if ":" in t] == [], moved.out
    assert len(project.calls()) == calls
    again = project.build(env=second)
    assert [t for t in executed(again) if ":" in t] == [], again.out
    ledger = project.ledger("ch001_sc001")
    assert str(tmp_path / "venv-a") not in str(ledger)

    # the new install's default plan template differs: the guard stops before any call
    plan = tmp_path / "venv-b" / "pipeline" / "book" / "templates" / "plan.j2"
    plan.write_text(plan.read_text() + "\nKeep it short.\n")
    refused = project.doit(env=second)
    assert refused.returncode != 0
    assert "prompt template(s) changed" in refused.out and str(plan) in refused.out
    assert len(project.calls()) == calls

    # back to the first install, whose templates match the records: still nothing to do
    back = project.build(env=first)
    assert [t for t in executed(back) if ":" in t] == [], back.out
    assert len(project.calls()) == calls
    assert {p: p.stat().st_mtime_ns for p in project.draft.rglob("*.json")
            if p in built and "phase_history" not in str(p)} == {
        p: m for p, m in built.items() if "phase_history" not in str(p)}


def test_a_db_older_than_the_package_setting_still_follows_a_move(project, tmp_path):
    import sqlite3

    first = _install(tmp_path / "venv-a")
    second = _install(tmp_path / "venv-b")
    project.build(env=first)
    calls = len(project.calls())
    db = project.root / "workspace" / ".scenemake" / "books" / "example.sqlite"
    with sqlite3.connect(db) as conn:  # as a DB written before scenemake kept the setting
        conn.execute("drop table sm_settings")
        conn.execute("drop table sm_migrations")  # nor recorded migrations

    moved = project.build(env=second)

    assert [t for t in executed(moved) if ":" in t] == [], moved.out
    assert len(project.calls()) == calls
    assert str(tmp_path / "venv-a") not in str(project.ledger("ch002_sc001"))


def test_a_db_from_before_the_book_family_follows_the_templates_move(project):
    """The default templates moved from pipeline/templates/ to pipeline/book/templates/: a
    build DB that recorded them at the old place is migrated, not rebuilt."""
    import json
    import sqlite3

    project.build()
    calls = len(project.calls())
    db = project.root / "workspace" / ".scenemake" / "books" / "example.sqlite"
    with sqlite3.connect(db) as conn:  # as the DB of a build before the move
        rows = conn.execute("select task_id, task_data from doit").fetchall()
        for task_id, raw in rows:
            conn.execute("update doit set task_data=? where task_id=?",
                         (raw.replace("pipeline/book/templates/", "pipeline/templates/"), task_id))
        conn.execute("delete from sm_settings where key='templates_folder'")
        conn.execute("drop table sm_migrations")  # it had no record of migrations either
    old = json.loads(dict(rows)["write:ch001_sc001"].replace("pipeline/book/templates/",
                                                           "pipeline/templates/"))
    assert any(k.endswith("pipeline/templates/write.j2") for k in old)

    again = project.build()

    assert [t for t in executed(again) if ":" in t] == [], again.out
    assert len(project.calls()) == calls
    assert "pipeline/templates/" not in json.dumps(project.ledger("ch001_sc001"))
