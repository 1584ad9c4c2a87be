"""Runs one L7 session: validate, then build its doit tasks in-process, then map the
result to the spec's exit codes (0 success, 1 gate failed, 2 config/runtime/contract).

Each session keeps its own build DB (``<state_dir>/l7/<session_id>/build.sqlite``, the
``scenemake`` backend, committed per task) and work files beside it; the LLM response
cache and call log are the workspace's, shared with every family.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TextIO

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path
from pipeline.core.lock import exclusive
from pipeline.l7 import export
from pipeline.l7.llm import answers_at_once
from pipeline.l7.session import RunConfig, session_for
from targets.l7.tasks import l7_tasks
from targets.runner import run_tasks

OK, GATE_FAILED, ERROR = 0, 1, 2


def session_lock(path: Path, session_id: str) -> AbstractContextManager[None]:
    """One run per session at a time: both would write the same work files."""
    return exclusive(path, f"another L7 run of session '{session_id}' is in progress",
                     "wait for it to finish", show_path=True)


def run(cfg: RunConfig, err: TextIO | None = None) -> int:
    """Run the session described by ``cfg``; returns the exit code (messages on ``err``)."""
    err = err or sys.stderr
    try:
        session = session_for(cfg)
        lay = session.layout
        with session_lock(lay.lock, session.session_id):
            export.recover(Path(cfg.out_dir))
            export.check_out_dir(cfg.out_dir, [cfg.session_input, cfg.session_objective,
                                               cfg.scenes_v2, session.spec_path,
                                               *([cfg.base_prompt_map_pack]
                                                 if cfg.base_prompt_map_pack else [])])
            result = run_tasks({"task_l7": lambda: l7_tasks(cfg)}, lay.db, tasks=["l7"],
                               echo=True, verbosity=2, error_log=lay.root / "last_error.txt",
                               parallel=answers_at_once(session.objective,
                                                        cfg.session_objective))
    except UserError as exc:
        err.write(f"scenemake-l7: error: {exc}\n")
        return ERROR
    code, failures = result.code, result.failed
    gate = [f for f in failures if f.kind == "gate"]
    if code == 0 and not failures:
        print(f"scenemake-l7: session '{session.session_id}' passed the gates; outputs in "
              f"{display_path(cfg.out_dir)}")
        return OK
    if gate and len(gate) == len(failures):
        err.write(f"scenemake-l7: gate failed: {gate[0].message}\n")
        return GATE_FAILED
    if failures:
        err.write(f"scenemake-l7: error: {failures[0].task}: {failures[0].message}\n")
    else:
        err.write(f"scenemake-l7: error: the build stopped (doit exit code {code}); see above\n")
    return ERROR
