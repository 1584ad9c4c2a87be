"""Every doit command (scenemake's and doit's own, as ``doit help`` lists them) and every
command-line entry point, run the four ways a user tries a command they do not know yet:
with no arguments and piped into ``head -1``, with ``--help``, with an unknown option. Each
answers with its help or with one line, never a traceback (issue 22)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.parts import require
from support.project import Project

pytestmark = pytest.mark.slow

BOGUS = "--no-such-option"
BIN = Path(sys.executable).parent
ENTRY_POINTS = {  # name -> how it is started
    "scenemake-l7": [str(BIN / "scenemake-l7")],
    "scenemake-scenario": [str(BIN / "scenemake-scenario")],
    "scenemake-stage": [str(BIN / "scenemake-stage")],
    "scenemake-assistant": [str(BIN / "scenemake-assistant")],
    "python -m pipeline.l7": [sys.executable, "-m", "pipeline.l7"],
    "python -m pipeline.scenario": [sys.executable, "-m", "pipeline.scenario"],
    "python -m pipeline.assistant": [sys.executable, "-m", "pipeline.assistant"],
}
SERVERS = {"scenemake-assistant", "python -m pipeline.assistant"}  # no arguments: it serves


def _doit_commands() -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "doit", "help"], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2])
    names = re.findall(r"^  doit (\S+)\s{2,}", proc.stdout, flags=re.M)
    return sorted(set(names))


COMMANDS = _doit_commands()


def test_the_commands_are_listed():
    assert {"run", "list", "info", "ledger", "why", "history", "diff", "restore", "gc",
            "report", "fleet", "cost", "estimate", "rerun-from", "reset", "verify",
            "forget", "clean", "dumpdb"} <= set(COMMANDS)


def _head_1(argv: list[str], cwd: Path, server: bool = False) -> tuple[str, str, int]:
    """``ARGV | head -1``: the first line read, then the reader goes away; a server is
    stopped once it said its first line."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first = proc.stdout.readline().decode()
    proc.stdout.close()
    if server and proc.poll() is None:
        time.sleep(0.5)  # it goes on serving after its reader left: stop it as a user would
        proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=300)
    return first, err, code


def _quiet(err: str, out: str = "") -> None:
    assert "Traceback" not in err + out, err + out
    assert "Exception ignored" not in err, err


def _one_line_or_usage(err: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) <= 1 or lines[0].startswith("usage:"), err
    return lines


@pytest.mark.parametrize("command", COMMANDS)
def test_a_doit_command_tried_four_ways(built: Project, command: str):
    project = built
    doit = [sys.executable, "-m", "doit"]
    first, err, code = _head_1([*doit, command], project.root)
    _quiet(err, first)
    _one_line_or_usage(err)
    assert code in (0, 1, 3, 141), (code, err)

    helped = project.doit(command, "--help")
    assert helped.returncode == 0 and helped.stderr == "", helped.out
    assert f"doit {command}" in helped.stdout and "PURPOSE" in helped.stdout

    bad = project.doit(command, BOGUS)
    _quiet(bad.out)
    where = "doit" if command == "run" else f"doit {command}"
    assert bad.returncode == 3
    assert bad.stderr == f"ERROR: {where}: unknown option {BOGUS} (doit help {command} lists " \
                         "its options)\n"


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_an_entry_point_tried_four_ways(tmp_path: Path, name: str):
    argv = ENTRY_POINTS[name]
    if argv[0] != sys.executable:
        require(Path(argv[0]).exists(), f"the {name} console script", "pip install -e .")
    cwd = tmp_path / "proj"
    shutil.copytree(Path(__file__).resolve().parents[2] / "workspace", cwd / "workspace")
    first, err, code = _head_1(argv, cwd, server=name in SERVERS)
    _quiet(err, first)
    if name in SERVERS:  # it started (or said in one line why it could not)
        assert first.startswith("assistant ") or len(_one_line_or_usage(err)) == 1, err
    else:
        lines = _one_line_or_usage(err)
        assert code == 2 and lines and "required" in lines[-1], err

    first, err, code = _head_1([*argv, "--help"], cwd)
    _quiet(err, first)
    assert code in (0, 141) and first.startswith("usage:") and err == ""

    bad = subprocess.run([*argv, BOGUS], cwd=cwd, capture_output=True, text=True, timeout=120)
    _quiet(bad.stderr, bad.stdout)
    lines = _one_line_or_usage(bad.stderr)
    assert bad.returncode == 2 and lines and "error" in lines[-1], bad.stderr


def test_a_cli_run_piped_into_head_goes_on_quietly(tmp_path: Path):
    """``scenemake-l7 ... | head -1``: the session is still built, with no word on stderr."""
    cwd = tmp_path / "proj"
    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "workspace", cwd / "workspace")
    shutil.copytree(repo / "score_specs", cwd / "score_specs")
    l7 = "workspace/l7"
    first, err, code = _head_1(
        [sys.executable, "-m", "pipeline.l7", "--session-input",
         f"{l7}/sample_session_input_l7.json", "--session-objective",
         f"{l7}/sample_session_objective_l7_prompt_map.json", "--scenes-v2",
         f"{l7}/l6_run_output/scenes_v2.json", "--out-dir", f"{l7}/l7_run_output"], cwd)
    assert first.startswith(".  l7_gate_in")
    assert err == "" and code == 0
    assert (cwd / l7 / "l7_run_output" / "session_output.json").exists()
