"""The one CLI wrapper (pipeline/core/cli.py) and the codes each command line keeps with it:
bad input -> one line, 2; Ctrl-C / SIGTERM -> 130; a bug -> one line plus a traceback file
(3; L7's spec has no 3: 2)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import pipeline.assistant.server as assistant_server
import targets.l7.cli as l7_cli
import targets.scenario.cli as scenario_cli
from pipeline.core.cli import Cli
from pipeline.core.errors import UserError

L7_ARGS = ["--session-input", "si.json", "--session-objective", "obj.json",
           "--scenes-v2", "scenes.json", "--out-dir", "out"]


def _lines(capsys) -> list[str]:
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return [line for line in out.err.splitlines() if line.strip()]


def _bug():
    raise RuntimeError("boom")


def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    def body() -> int:
        raise UserError("not a number", path="a.json", field="x", fix="write 3")

    assert Cli(prefix="tool: ").run(body, traceback_dir=tmp_path) == 2
    assert _lines(capsys) == ["tool: error: a.json: field 'x': not a number (write 3)"]
    assert not (tmp_path / "last_error.txt").exists()


def test_the_body_s_code_passes_through(capsys):
    assert Cli().run(lambda: 1) == 1
    assert _lines(capsys) == []


def test_a_bug_is_one_line_and_a_traceback_file(capsys, tmp_path):
    assert Cli().run(_bug, traceback_dir=tmp_path / "logs") == 3
    log = tmp_path / "logs" / "last_error.txt"
    [line] = _lines(capsys)
    assert line.startswith("internal error: RuntimeError: boom (traceback in ")
    assert line.endswith("last_error.txt)")
    text = log.read_text()
    assert "Traceback" in text and "RuntimeError: boom" in text and "_bug" in text


def test_a_bug_whose_traceback_cannot_be_written_is_still_one_line(capsys, tmp_path):
    (tmp_path / "file").write_text("in the way")
    assert Cli().run(_bug, traceback_dir=tmp_path / "file" / "logs") == 3
    assert _lines(capsys) == ["internal error: RuntimeError: boom"]


def test_ctrl_c_is_130(capsys):
    def body() -> int:
        raise KeyboardInterrupt

    assert Cli(interrupted_message="stopped; rerun").run(body) == 130
    assert _lines(capsys) == ["stopped; rerun"]


def test_sigterm_is_handled_like_ctrl_c_and_the_handler_restored(capsys):
    before = signal.getsignal(signal.SIGTERM)
    done: list[str] = []

    def body() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # not reached: the handler raises at once
        finally:
            done.append("finally ran")  # cleanup (a started assistant) still happens
        return 0

    assert Cli().run(body) == 130
    assert done == ["finally ran"]
    assert _lines(capsys) == ["interrupted"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_argparse_exits_untouched():
    with pytest.raises(SystemExit) as exc:
        Cli().run(lambda: (_ for _ in ()).throw(SystemExit(2)))
    assert exc.value.code == 2


# -- each command line keeps its codes and prefix ---------------------------------------
def test_l7_bug_is_exit_2_with_its_prefix(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(l7_cli, "run", lambda cfg: _bug())
    assert l7_cli.main(L7_ARGS) == 2
    [line] = _lines(capsys)
    assert line.startswith("scenemake-l7: internal error: RuntimeError: boom (traceback in ")
    assert "RuntimeError: boom" in (tmp_path / "workspace/.scenemake/l7/last_error.txt").read_text()


def test_l7_bad_input_and_interrupt(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def bad(cfg):
        raise UserError("no such thing")

    monkeypatch.setattr(l7_cli, "run", bad)
    assert l7_cli.main(L7_ARGS) == 2
    assert _lines(capsys) == ["scenemake-l7: error: no such thing"]

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(l7_cli, "run", interrupted)
    assert l7_cli.main(L7_ARGS) == 130
    [line] = _lines(capsys)
    assert line.startswith("scenemake-l7: interrupted")


def test_scenario_bug_is_exit_3_with_the_traceback_in_its_workspace(capsys, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setitem(scenario_cli.COMMANDS, "review-run", lambda args: _bug())
    code = scenario_cli.main(["review-run", "somewhere", "--workspace", str(tmp_path / "ws")])
    assert code == 3
    [line] = _lines(capsys)
    assert line.startswith("internal error: RuntimeError: boom (traceback in ")
    assert (tmp_path / "ws/.scenemake/scenarios/last_error.txt").is_file()


def test_scenario_bad_input_and_interrupt(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert scenario_cli.main(["review-run", "nowhere"]) == 2
    [line] = _lines(capsys)
    assert line.startswith("error: nowhere: run folder not found")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(scenario_cli.COMMANDS, "review-run", interrupted)
    assert scenario_cli.main(["review-run", "nowhere"]) == 130
    assert _lines(capsys) == ["interrupted: finished steps are kept; rerun the same command "
                              "to resume"]


def test_stage_entry_point_goes_through_the_same_wrapper(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert scenario_cli.stage_main(["status", "--manifest", "missing.json"]) == 2
    [line] = _lines(capsys)
    assert line.startswith("error: ") and "missing.json" in line


def test_assistant_bad_input_and_bug(capsys, tmp_path, monkeypatch):
    def bad(args):
        raise UserError("cannot listen")

    monkeypatch.setattr(assistant_server, "_serve", bad)
    assert assistant_server.main(["--workspace", str(tmp_path)]) == 2
    assert _lines(capsys) == ["error: cannot listen"]
    monkeypatch.setattr(assistant_server, "_serve", lambda args: _bug())
    assert assistant_server.main(["--workspace", str(tmp_path)]) == 3
    [line] = _lines(capsys)
    assert line.startswith("internal error: RuntimeError: boom")
    assert Path(tmp_path / ".scenemake/assistant/last_error.txt").is_file()
