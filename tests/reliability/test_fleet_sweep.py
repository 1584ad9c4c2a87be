"""A killed fleet worker's temporary copy (issue 25, item 8): the copies of dead workers
(``scenemake-fleet-*`` in the temp folder) are swept at the next unit on that machine and by
the next ``doit fleet``; a live worker's copy is never touched. (The end-to-end runs with a
real Dask cluster and PostgreSQL are in tests/fleet/test_fleet.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from targets.fleet import worker
from targets.fleet.units import Unit


@pytest.fixture
def tmp_dir(tmp_path: Path, monkeypatch) -> Path:
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


def _copy_of_a_killed_worker(tmp_dir: Path) -> Path:
    """A real worker process makes its copy, writes into it, and is killed (SIGKILL)."""
    code = ("import sys, time; from targets.fleet.worker import new_copy; "
            "copy, lock = new_copy(); (copy / 'workspace').mkdir(); "
            "(copy / 'workspace' / 'book.json').write_text('{}'); "
            "print(copy, flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_dir)})
    copy = Path(proc.stdout.readline().strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert copy.is_dir() and copy.parent == tmp_dir.resolve()
    return copy


def _copies(tmp_dir: Path) -> list[str]:
    return sorted(p.name for p in tmp_dir.glob("scenemake-fleet-*"))


def test_a_dead_workers_copy_is_swept_and_a_live_ones_is_not(tmp_dir: Path):
    dead = _copy_of_a_killed_worker(tmp_dir)
    live, lock = worker.new_copy()  # this process: alive (it swept the dead one already)
    try:
        assert not dead.exists() and _copies(tmp_dir) == sorted([live.name, live.name + ".lock"])
        assert worker.sweep_dead_copies() == []
        assert live.is_dir()
    finally:
        lock.release()
        live.rmdir()
    assert _copies(tmp_dir) == []


def test_copies_made_before_copies_had_locks_go_only_when_their_pid_is_dead(tmp_dir: Path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_dir / f"scenemake-fleet-{gone}-abc").mkdir()
    (tmp_dir / f"scenemake-fleet-{os.getpid()}-abc").mkdir()
    (tmp_dir / "scenemake-fleet-x8k2j1").mkdir()  # tempfile.mkdtemp's: no owner known
    assert worker.sweep_dead_copies() == [f"scenemake-fleet-{gone}-abc"]
    assert _copies(tmp_dir) == [f"scenemake-fleet-{os.getpid()}-abc", "scenemake-fleet-x8k2j1"]


def test_the_next_unit_sweeps_the_dead_copy(tmp_dir: Path):
    dead = _copy_of_a_killed_worker(tmp_dir)
    unit = Unit("book:a", ("workspace/books/a",), ("workspace/books/a/draft",), ("true",))
    result = worker.build_unit(unit, b"", "another install", "", None)
    assert result["rc"] == "skew"  # refused at once, after the sweep
    assert not dead.exists() and _copies(tmp_dir) == []  # and its own copy went with it
