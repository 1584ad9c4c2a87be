"""The stage-level AGENT loop: a development stage's pack loop, GUI run reviews, repairs,
their validation, and the closing gate.

Everything of a stage lives in
``<workspace>/artifacts/domain_runs/stage_agent_loops/<stage_id>/``::

    stage_loop_plan.json                 what ``plan`` resolved
    stage_loop_summary.json              the stage's state (derived from the files below)
    stage_loop_handoff.md                for the final human visual confirmation
    stage_repair_handoff.md/json         the next coder pass's input
    stage_run_record.json                the last ``run`` (its pack loop's outcome)
    saved_autorun.json                   the save of an accepted pack run, if any
    pack_loop/                           the pack loop (``run-pack-loop`` layout)
    gui_run_reviews/<run_id>/            the bridge's review files + ingest_record.json
    repair_iterations/<n>/               repair_iteration_plan.json, repair_prompt.md,
                                         repair_checklist.md, repair_coder.command.txt,
                                         repair_execution_summary.json,
                                         repair_coder_result.json, stdout/stderr
    repair_validation_history.jsonl      every post-repair validation, appended

The summary is recomputed from those files by every command (``status`` computes it without
writing it), so it never disagrees with them. Events are ordered by their ``at_ns`` stamps.

**Closing gate.** ``loop_accepted_gate`` is the raw verdict of the pack loop under the
stage gate. ``accepted_gate`` is true only when it is, the latest repair whose coder result
is ``patched`` has a matching successful validation (an ingested GUI run, other than the
one the repair came from, with no unresolved P0/P1), and the latest GUI review after the
loop is clean; otherwise ``stage_closing_gate.status`` says what blocks it
(``blocked_pending_repair_validation``, ``blocked_by_gui_review``,
``blocked_loop_not_accepted``, ``not_run``).

Modules: :mod:`.state` (the manifest, the files and the summary derived from them),
:mod:`.rendering` (the handoff files) and :mod:`.commands` (what each command does).
"""

from .commands import Stage, stage_lock
from .state import (
    COMMANDS,
    EXECUTION,
    HANDOFF,
    HISTORY,
    INGEST,
    NEXT_COMMAND,
    PROG,
    REPAIR_HANDOFF,
    SUMMARY,
    WHY,
    StageState,
)

__all__ = ["COMMANDS", "EXECUTION", "HANDOFF", "HISTORY", "INGEST", "NEXT_COMMAND", "PROG",
           "REPAIR_HANDOFF", "SUMMARY", "WHY", "Stage", "StageState", "stage_lock"]
