"""The one in-process doit runner (targets/runner.py): results, failures with their kind,
a bug's traceback in a file, nothing shared between two runs of one process."""

from __future__ import annotations

from pathlib import Path

from doit.exceptions import TaskFailed

from pipeline.core.taskrun import Failure
from targets.runner import run_tasks


def _namespace(out: Path, fail: str | None = None) -> dict:
    def write(name: str) -> dict | TaskFailed:
        if name == fail:
            failed = TaskFailed(f"{name} is not acceptable")
            failed.kind = "gate"
            return failed
        if name == "bug":
            raise ZeroDivisionError("a bug")
        (out / name).write_text(name)
        return {"wrote": name}

    def task_make():
        for name in ("a", "b", "bug"):
            yield {"name": name, "actions": [(write, [name])], "targets": [str(out / name)],
                   "file_dep": [], "uptodate": [True] if name != "bug" else []}

    def task_only_ab():
        return {"actions": None, "task_dep": ["make:a", "make:b"]}

    return {"task_make": task_make, "task_only_ab": task_only_ab}


def test_a_run_reports_what_ran_then_what_was_up_to_date(tmp_path, capsys):
    db = tmp_path / "db" / "build.sqlite"
    first = run_tasks(_namespace(tmp_path), db, tasks=["only_ab"])
    assert first.ok and first.code == 0
    assert first.ran == ["make:a", "make:b"] and first.up_to_date == []
    assert (tmp_path / "a").read_text() == "a"
    again = run_tasks(_namespace(tmp_path), db, tasks=["only_ab"])
    assert again.ran == [] and again.up_to_date == ["make:a", "make:b"]
    assert capsys.readouterr().out == ""  # quiet unless asked to echo


def test_echo_prints_doit_s_task_lines(tmp_path, capsys):
    run_tasks(_namespace(tmp_path), tmp_path / "build.sqlite", tasks=["only_ab"], echo=True)
    out = capsys.readouterr().out
    assert ".  make:a" in out and ".  make:b" in out


def test_a_failure_carries_its_kind_and_stays_with_its_run(tmp_path):
    db = tmp_path / "build.sqlite"
    failed = run_tasks(_namespace(tmp_path, fail="b"), db, tasks=["only_ab"])
    assert failed.code != 0 and not failed.ok
    assert failed.failed == [Failure("make:b", "b is not acceptable", "gate")]
    # the next run of the same process starts clean (no module-level list of failures)
    fixed = run_tasks(_namespace(tmp_path), db, tasks=["only_ab"])
    assert fixed.ok and fixed.failed == [] and fixed.ran == ["make:b"]


def test_a_bug_in_an_action_is_one_line_and_its_traceback_in_the_log(tmp_path):
    log = tmp_path / "logs" / "errors.log"
    result = run_tasks(_namespace(tmp_path), tmp_path / "build.sqlite", tasks=["make:bug"],
                       error_log=log)
    [failure] = result.failed
    assert failure.task == "make:bug" and failure.kind == "error"
    assert failure.message.startswith("ZeroDivisionError: a bug (details in ")
    assert "Traceback" in log.read_text() and "ZeroDivisionError" in log.read_text()


def test_an_unknown_task_is_a_failure_not_an_exception(tmp_path):
    result = run_tasks(_namespace(tmp_path), tmp_path / "build.sqlite", tasks=["nope"])
    assert result.code != 0
