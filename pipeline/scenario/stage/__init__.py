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
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from pathlib import Path
from typing import Any

from pipeline.core.clock import now_iso
from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, read_json_or_none
from pipeline.core.lock import exclusive
from pipeline.core.store import append_line, atomic_write_json, atomic_write_text
from pipeline.scenario import autoruns, coder, repair, runner, save_gate
from pipeline.scenario.contracts import load_pack
from pipeline.scenario.layout import RunLayout
from pipeline.scenario.loop import LoopConfig, PackLoop, iteration_dir, latest_verdict, read_state
from pipeline.scenario.loop import restart as loop_restart
from pipeline.scenario.reviewing import Reviewer
from pipeline.scenario.stage_manifest import StageManifest, load

PROG = "python -m pipeline.scenario stage"
SUMMARY = "stage_loop_summary.json"
HANDOFF = "stage_loop_handoff.md"
REPAIR_HANDOFF = "stage_repair_handoff"
HISTORY = "repair_validation_history.jsonl"
EXECUTION = "repair_execution_summary.json"
INGEST = "ingest_record.json"
COMMANDS = ("plan", "run", "ingest_gui_run", "prepare_repair", "run_repair_dry_run",
            "run_repair", "status", "summarize")
NEXT_COMMAND = {
    "run_stage_loop": "run", "run_repair": "run_repair_dry_run",
    "rerun_and_ingest_gui_run": "ingest_gui_run",
    "continue_repair_from_gui_review_p0": "prepare_repair",
    "continue_repair_from_gui_review_p1": "prepare_repair",
    "continue_repair_from_pack_loop": "prepare_repair",
    "inspect_repair_coder_failure": "run_repair", "stop_for_user_decision": "status",
    "fix_runtime_and_rerun_stage": "run",
    "manual_gui_confirmation_or_stage_close": "ingest_gui_run",
}
WHY = {
    "run_stage_loop": "the stage's pack loop has not run yet",
    "run_repair": "a repair is prepared but its coder has not run",
    "rerun_and_ingest_gui_run": "the latest repair was patched but no rerun validated it yet: "
                                "rerun the pack or a GUI session and ingest the new run",
    "continue_repair_from_gui_review_p0": "the latest GUI run shows business-wrong answers or "
                                          "missing direct answers (P0)",
    "continue_repair_from_gui_review_p1": "the latest GUI run is usable but noisy, over-broad "
                                          "or poorly layered (P1)",
    "continue_repair_from_pack_loop": "the pack loop stopped without passing the stage gate",
    "inspect_repair_coder_failure": "the coder failed: see repair_coder_result.json and its "
                                    "stderr",
    "stop_for_user_decision": "the next step needs a decision the coder cannot make",
    "fix_runtime_and_rerun_stage": "the assistant runtime gave no answer",
    "manual_gui_confirmation_or_stage_close": "the stage gate holds: confirm visually in the "
                                              "GUI, then close the stage",
}


def _ns() -> int:
    return time.time_ns()


def _progress(state: dict | None) -> tuple | None:
    """What a pack loop has done so far (equal before and after: the run did nothing)."""
    if not state:
        return None
    return (state.get("status"), state.get("stop_reason"),
            tuple((e["iteration"], e["step"]) for e in state.get("iterations", [])))


@contextlib.contextmanager
def stage_lock(stage: Stage):
    """One changing stage command at a time (``status`` only reads: it takes no lock)."""
    with exclusive(stage.artifacts / ".locks" / f"{stage.loop_id}.stage.lock",
                   f"another stage command is running for {stage.m.stage_id}",
                   "wait for it to finish"):
        yield


class Stage:
    """One stage manifest and its folder."""

    def __init__(self, manifest_path: Path, reviewer: Reviewer | None = None):
        self.path = Path(manifest_path)
        self.reviewer = reviewer  # runs the review tasks (the CLI's)
        self.m: StageManifest = load(self.path)
        self.base = self.path.resolve().parent
        self.workspace = (self.base / self.m.workspace).resolve()
        self.pack_path = self.base / self.m.pack
        if not self.pack_path.exists():
            raise UserError(f"$.pack: pack file '{self.m.pack}' not found (relative to the "
                            "manifest's folder)", path=display_path(self.path))
        self.artifacts = self.workspace / "artifacts" / "domain_runs"
        self.dir = self.artifacts / "stage_agent_loops" / self.m.stage_id
        self.loop_dir = self.dir / "pack_loop"
        self.loop_id = f"stage-{self.m.stage_id}"
        self.manifest_arg = display_path(self.path)

    # -- configuration ----------------------------------------------------------------------
    def command(self, name: str, extra: str = "") -> str:
        """The command line of ``stage <name>`` for this manifest."""
        sub = {"ingest_gui_run": "ingest-gui-run", "prepare_repair": "prepare-repair",
               "run_repair_dry_run": "run-repair", "run_repair": "run-repair"}.get(name, name)
        line = f"{PROG} {sub} --manifest {shlex.quote(self.manifest_arg)}"
        if name == "ingest_gui_run":
            line += " --run-id assistant-stage1-<id>"
        if name == "run_repair_dry_run":
            line += " --dry-run"
        return line + extra

    def templates(self) -> dict[str, str]:
        """``next_step_guidance.command_templates``."""
        return {name: self.command(name) for name in COMMANDS}

    def score_spec(self) -> Path | None:
        if not self.m.judge:
            return None
        return self.base / self.m.score_spec if self.m.score_spec else runner.DEFAULT_SCORE_SPEC

    def loop_config(self) -> LoopConfig:
        a = self.m.assistant
        opts = runner.CaptureOptions(workspace=self.workspace, artifacts_dir=self.artifacts,
                                     base_url=a.base_url, start_assistant=a.start_assistant,
                                     timeout=a.timeout_s, retries=a.retries,
                                     reviewer=self.reviewer)
        return LoopConfig(capture=opts, gate=self.m.gate, max_iterations=self.m.max_iterations,
                          max_targets=self.m.max_targets, score_spec=self.score_spec(),
                          coder=self.m.coder, coder_base=self.base,
                          title=self.m.title or f"stage {self.m.stage_id}",
                          rerun_command=[self.command("run")])

    def runs_dir(self) -> Path:
        return (self.base / self.m.gui_runs_dir).resolve() if self.m.gui_runs_dir \
            else self.workspace

    # -- reading the stage's files ------------------------------------------------------------
    def repairs(self) -> list[dict]:
        """Every repair iteration, oldest first: plan, execution summary, coder result."""
        root = self.dir / "repair_iterations"
        out = []
        if root.exists():
            for d in sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()),
                            key=lambda p: int(p.name)):
                plan = read_json_or_none(d / repair.PLAN)
                if not isinstance(plan, dict):
                    continue
                out.append({"iteration": int(d.name), "dir": d, "plan": plan,
                            "execution": read_json_or_none(d / EXECUTION),
                            "result": coder.result_of(d)})
        return out

    def ingests(self) -> list[dict]:
        """Every ingested GUI run, in ingest order."""
        root = self.dir / "gui_run_reviews"
        out = []
        if root.exists():
            for d in root.iterdir():
                rec = read_json_or_none(d / INGEST)
                if isinstance(rec, dict):
                    out.append(rec)
        return sorted(out, key=lambda r: r.get("at_ns", 0))

    def history(self) -> list[dict]:
        """``repair_validation_history``: every validation, oldest first."""
        path = self.dir / HISTORY
        if not path.exists():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a torn last line of a crash: the others stand
        return rows

    # -- the summary --------------------------------------------------------------------------
    def compute(self) -> dict[str, Any]:
        """``stage_loop_summary.json`` as the files say now (writes nothing)."""
        state = read_state(self.loop_dir)
        verdict = latest_verdict(self.loop_dir, state) if state else None
        run_record = read_json_or_none(self.dir / "stage_run_record.json")
        saved = read_json_or_none(self.dir / "saved_autorun.json")
        repairs = self.repairs()
        ingests = self.ingests()
        history = self.history()
        loop_accepted = bool(state and state.get("status") == "accepted" and verdict
                             and verdict.get("accepted"))
        patched = [r for r in repairs if (r["result"] or {}).get("status") == "patched"]
        latest_patched = patched[-1] if patched else None
        pending = None
        if latest_patched:
            mine = [h for h in history if h["repair_iteration"] == latest_patched["iteration"]]
            if not any(h["accepted"] for h in mine):
                pending = latest_patched["iteration"]
        loop_at = (run_record or {}).get("at_ns", 0)
        latest_ingest = ingests[-1] if ingests else None
        gui_after_loop = latest_ingest if latest_ingest and latest_ingest["at_ns"] > loop_at \
            else None
        gui_clean = gui_after_loop is None or (
            gui_after_loop["summary"]["unresolved_p0"] == 0
            and gui_after_loop["summary"]["unresolved_p1"] == 0)
        conditions = [
            {"name": "loop_accepted_gate", "passed": loop_accepted,
             "detail": f"pack loop {state['status'] if state else 'not run'}"
                       + (f", score {verdict['score']:g}" if verdict else "")},
            {"name": "latest_patched_repair_validated", "passed": pending is None,
             "detail": "no patched repair waits for validation" if pending is None else
                       f"repair iteration {pending} was patched; no successful validation "
                       "run yet"},
            {"name": "latest_gui_review_clean", "passed": gui_clean,
             "detail": "no GUI run ingested after the loop" if gui_after_loop is None else
                       f"{gui_after_loop['run_id']}: unresolved P0 "
                       f"{gui_after_loop['summary']['unresolved_p0']}, P1 "
                       f"{gui_after_loop['summary']['unresolved_p1']}"},
        ]
        if pending is not None:
            closing = "blocked_pending_repair_validation"
        elif not gui_clean:
            closing = "blocked_by_gui_review"
        elif state is None:
            closing = "not_run"
        elif not loop_accepted:
            closing = "blocked_loop_not_accepted"
        else:
            closing = "passed"
        next_action = self._next_action(state, verdict, run_record, repairs, ingests, pending)
        latest_repair = repairs[-1] if repairs else None
        coder_row = None
        if latest_repair:
            res, ex = latest_repair["result"], latest_repair["execution"] or {}
            coder_row = {"repair_iteration": latest_repair["iteration"],
                         "status": (res or {}).get("status") or
                         ("dry_run" if ex.get("mode") == "dry_run" else "not_run"),
                         "reason": (res or {}).get("reason"),
                         "changed_files": (res or {}).get("changed_files", []),
                         "command": ex.get("command_line")}
        recommended = NEXT_COMMAND[next_action]
        if next_action == "run_repair" and coder_row and coder_row["status"] == "dry_run":
            recommended = "run_repair"  # the dry run was looked at: now the real one
        summary = {
            "kind": "stage_loop_summary", "stage_id": self.m.stage_id, "title": self.m.title,
            "goal": self.m.goal, "manifest": self.manifest_arg,
            "pack": {"path": display_path(self.pack_path), "pack_id": state.get("pack_id")
                     if state else None},
            "stage_gate": self.m.gate.model_dump(mode="json"),
            "loop": None if state is None else {
                "loop_id": self.loop_id, "dir": display_path(self.loop_dir),
                "status": state["status"], "stop_reason": state.get("stop_reason"),
                "iterations": len(state.get("iterations", [])),
                "score": verdict.get("score") if verdict else None,
                "verdict": verdict.get("verdict") if verdict else None,
                "requires_user_decision": bool(verdict and verdict["requires_user_decision"]),
                "user_decision_reason": verdict.get("user_decision_reason") if verdict else None,
                "gate_conditions": verdict["gate"]["conditions"] if verdict else [],
                "flags": verdict.get("flags") if verdict else {},
                "loop_patches": [e["iteration"] for e in state.get("iterations", [])
                                 if e.get("coder_status") == "patched"],
                "loop_patches_validated_by_rerun": bool(loop_accepted),
            },
            "loop_accepted_gate": loop_accepted,
            "accepted_gate": closing == "passed",
            "stage_closing_gate": {"status": closing, "conditions": conditions,
                                   "pending_repair_iteration": pending},
            "saved_autorun": saved,
            "latest_gui_run": latest_ingest and {
                k: latest_ingest[k] for k in ("run_id", "review_dir", "next_action",
                                              "summary", "ingested_at",
                                              "validates_repair_iteration")},
            "gui_runs": [{"run_id": r["run_id"], "next_action": r["next_action"],
                          "ingested_at": r["ingested_at"]} for r in ingests],
            "repair_iterations": [{
                "iteration": r["iteration"], "dir": display_path(r["dir"]),
                "source": r["plan"].get("source"), "targets": len(r["plan"].get("targets", [])),
                "coder_status": (r["result"] or {}).get("status"),
                "dry_run": (r["execution"] or {}).get("mode") == "dry_run"} for r in repairs],
            "latest_repair_coder": coder_row,
            "latest_repair_validation": history[-1] if history else None,
            "repair_validation_history": history,
            "next_action": next_action,
            "next_step_guidance": {
                "next_action": next_action, "why": WHY[next_action],
                "recommended_command": self.templates()[recommended],
                "command_templates": self.templates(),
            },
        }
        return summary

    def _next_action(self, state: dict | None, verdict: dict | None, run_record: dict | None,
                     repairs: list[dict], ingests: list[dict], pending: int | None) -> str:
        events: list[tuple[int, str, Any]] = []
        if run_record and state:
            events.append((run_record["at_ns"], "loop", state))
        for r in ingests:
            events.append((r["at_ns"], "ingest", r))
        for r in repairs:
            events.append((r["plan"].get("at_ns", 0), "repair_prepared", r))
            if r["result"]:
                events.append((r["result"].get("at_ns", 0), "repair_result", r))
        if not events:
            return "run_stage_loop"
        _, kind, data = max(events, key=lambda e: e[0])
        if kind == "repair_prepared":
            return "run_repair"
        if kind == "repair_result":
            return {"patched": "rerun_and_ingest_gui_run", "no_change": "stop_for_user_decision",
                    "failed": "inspect_repair_coder_failure"}[data["result"]["status"]]
        if kind == "ingest":
            if pending is not None and data.get("validates_repair_iteration") is None:
                return "rerun_and_ingest_gui_run"
            return data["next_action"]
        st = data["status"]
        if pending is not None:
            return "rerun_and_ingest_gui_run"
        if st == "accepted":
            return "manual_gui_confirmation_or_stage_close"
        if st == "requires_user_decision":
            return "stop_for_user_decision"
        if st == "blocked":
            if str(data.get("stop_reason") or "").startswith("coder_failed"):
                return "inspect_repair_coder_failure"
            return "fix_runtime_and_rerun_stage"
        return "continue_repair_from_pack_loop"

    def write_summary(self) -> dict:
        """Recompute and write the summary, the stage handoff and the repair handoff."""
        summary = self.compute()
        summary["updated_at"] = now_iso()
        atomic_write_json(self.dir / SUMMARY, summary)
        atomic_write_text(self.dir / HANDOFF, self.handoff_md(summary))
        self.write_repair_handoff(summary)
        return summary

    # -- handoffs -----------------------------------------------------------------------------
    def repair_source(self, summary: dict) -> tuple[dict, list[dict]] | None:
        """(source, repair targets) of the next repair: the newest review, GUI or loop."""
        run_record = read_json_or_none(self.dir / "stage_run_record.json") or {}
        ingests = self.ingests()
        latest = ingests[-1] if ingests else None
        if latest and latest["at_ns"] > run_record.get("at_ns", 0):
            review_dir = self.dir / "gui_run_reviews" / latest["run_id"]
            data = read_json_or_none(review_dir / "repair_targets.json") or {}
            return ({"kind": "gui_run", "run_id": latest["run_id"],
                     "review": display_path(review_dir / "run_review.md")},
                    list(data.get("targets", [])))
        state = read_state(self.loop_dir)
        verdict = latest_verdict(self.loop_dir, state) if state else None
        if verdict is None:
            return None
        entry = state["iterations"][-1]
        return ({"kind": "pack_loop", "run_id": verdict["run_id"],
                 "review": display_path(iteration_dir(self.loop_dir, entry["iteration"])
                                        / "analyst_verdict.md")},
                list(verdict.get("repair_targets", [])))

    def write_repair_handoff(self, summary: dict) -> dict:
        """``stage_repair_handoff.md/json``: the primary targets and sample failures."""
        found = self.repair_source(summary)
        source, targets = found if found else (None, [])
        primary = [t for t in targets if t.get("priority") in ("P0", "P1")][:self.m.max_targets]
        samples = [{"target_id": t["target_id"], "code": t["code"], **s}
                   for t in primary for s in (t.get("samples") or [])[:1]]
        doc = {"kind": "stage_repair_handoff", "stage_id": self.m.stage_id, "source": source,
               "next_action": summary["next_action"],
               "stage_closing_gate": summary["stage_closing_gate"]["status"],
               "primary_repair_targets": primary,
               "other_targets": [t["target_id"] for t in targets if t not in primary],
               "sample_failures": samples,
               "next_command": self.command("prepare_repair") if primary else
               summary["next_step_guidance"]["recommended_command"]}
        atomic_write_json(self.dir / f"{REPAIR_HANDOFF}.json", doc)
        lines = [f"# Stage repair handoff: {self.m.stage_id}", "",
                 f"Next action: `{summary['next_action']}`; closing gate "
                 f"`{doc['stage_closing_gate']}`.", ""]
        if source:
            lines += [f"Source: {source['kind']} `{source['run_id']}` ({source['review']}).", ""]
        if primary:
            lines += ["## Primary repair targets", ""]
            for t in primary:
                change = f"; suggested `{json.dumps(t['suggested_change'])}`" \
                    if t.get("suggested_change") else ""
                lines.append(f"- {t['target_id']} **{t['priority']}** `{t['code']}` x"
                             f"{t.get('count', 1)}: {t.get('message', '')}{change}")
            lines += ["", "## Sample user-facing failures", ""]
            for s in samples:
                lines += [f"- {s['target_id']} `{s['code']}`: Q: {s.get('question')}",
                          f"  - A (first line): {s.get('first_line')}"]
        else:
            lines.append("No open P0/P1 repair target.")
        lines += ["", f"Next: `{doc['next_command']}`", ""]
        atomic_write_text(self.dir / f"{REPAIR_HANDOFF}.md", "\n".join(lines))
        return doc

    def handoff_md(self, s: dict) -> str:
        """``stage_loop_handoff.md``: what the human confirms, and what comes next."""
        loop = s["loop"] or {}
        gate = s["stage_closing_gate"]
        lines = [f"# Stage {self.m.stage_id}: "
                 f"{'ready for visual confirmation' if s['accepted_gate'] else 'not closed'}",
                 ""]
        if self.m.title or self.m.goal:
            lines += [f"{self.m.title}. {self.m.goal}".strip(". ") + ".", ""]
        lines += [f"- Pack loop: {loop.get('status', 'not run')}, score {loop.get('score')}, "
                  f"{loop.get('iterations', 0)} iteration(s)",
                  f"- loop_accepted_gate: {s['loop_accepted_gate']}; accepted_gate: "
                  f"{s['accepted_gate']}",
                  f"- Closing gate: {gate['status']}"]
        lines += [f"  - [{'x' if c['passed'] else ' '}] {c['name']}: {c['detail']}"
                  for c in gate["conditions"]]
        if s["saved_autorun"]:
            lines.append(f"- Saved autorun: {s['saved_autorun'].get('dest')} (validated "
                         f"{s['saved_autorun'].get('validated')})")
        if s["latest_gui_run"]:
            g = s["latest_gui_run"]
            lines.append(f"- Latest GUI run: {g['run_id']}: {g['next_action']}")
        if s["latest_repair_coder"]:
            c = s["latest_repair_coder"]
            lines.append(f"- Latest repair coder: iteration {c['repair_iteration']}: "
                         f"{c['status']}")
        if s["latest_repair_validation"]:
            v = s["latest_repair_validation"]
            lines.append(f"- Latest repair validation: iteration {v['repair_iteration']} by "
                         f"{v['validation_run_id']}: "
                         f"{'accepted' if v['accepted'] else 'not accepted'}")
        lines += ["", f"**Next action:** `{s['next_action']}`: "
                      f"{s['next_step_guidance']['why']}.", "",
                  f"    {s['next_step_guidance']['recommended_command']}", ""]
        if s["accepted_gate"]:
            lines += ["## Visual confirmation", "",
                      "Open the GUI, ask the stage's questions, and check that each answer "
                      "starts with the answer, states the data date, shows no ids or JSON, "
                      "and stays short. Then ingest that run:", "",
                      f"    {self.command('ingest_gui_run')}", ""]
        return "\n".join(lines)

    # -- commands -------------------------------------------------------------------------------
    def plan(self) -> dict:
        """``plan``: resolve the manifest and its pack; write ``stage_loop_plan.json``."""
        pack = load_pack(self.pack_path)
        plan = {
            "kind": "stage_loop_plan", "stage_id": self.m.stage_id, "title": self.m.title,
            "goal": self.m.goal, "manifest": self.manifest_arg,
            "pack": {"path": display_path(self.pack_path), "pack_id": pack.pack_id,
                     "scenarios": [{"scenario_id": s.scenario_id,  # type: ignore[union-attr]
                                    "steps": len(s.steps)}  # type: ignore[union-attr]
                                   for s in pack.scenarios]},
            "stage_gate": self.m.gate.model_dump(mode="json"),
            "max_iterations": self.m.max_iterations, "max_targets": self.m.max_targets,
            "judge": self.m.judge, "score_spec": str(self.score_spec()) if self.m.judge else None,
            "coder": self.m.coder.model_dump(mode="json", by_alias=True) if self.m.coder
            else None,
            "stage_dir": display_path(self.dir), "loop_dir": display_path(self.loop_dir),
            "gui_runs_dir": display_path(self.runs_dir()),
            "command_templates": self.templates(), "planned_at": now_iso(),
        }
        atomic_write_json(self.dir / "stage_loop_plan.json", plan)
        return plan

    def run(self, restart: bool = False) -> dict:
        """``run``: the pack loop under the stage gate; save an accepted run; summarize."""
        load_pack(self.pack_path)
        if restart and self.loop_dir.exists():
            with runner.run_lock(self.artifacts, self.loop_id):
                dest = loop_restart(self.loop_dir, self.loop_id, self.workspace)
            print(f"restart: previous pack loop moved to {display_path(dest)}")
        self.plan()
        before = _progress(read_state(self.loop_dir))
        state = PackLoop(self.pack_path, self.loop_dir, self.loop_id, self.loop_config()).run()
        record = read_json_or_none(self.dir / "stage_run_record.json")
        if _progress(state) == before and isinstance(record, dict):
            # the loop did nothing new (say, already accepted): a later GUI review or repair
            # stays the newest event, and the run is not saved twice
            return self.write_summary()
        saved = None
        if state["status"] == "accepted" and self.m.save_autorun:
            saved = self._save(state)
        atomic_write_json(self.dir / "stage_run_record.json", {
            "kind": "stage_run_record", "at_ns": _ns(), "ran_at": now_iso(),
            "loop_status": state["status"], "stop_reason": state.get("stop_reason"),
            "iterations": len(state.get("iterations", [])), "saved": saved})
        return self.write_summary()

    def _save(self, state: dict) -> dict:
        """The save gate on the accepted iteration's pack run, then the autoruns store."""
        entry = state["iterations"][-1]
        run_dir = iteration_dir(self.loop_dir, entry["iteration"]) / "pack_run"
        layout = RunLayout.load(run_dir)
        conditions = save_gate.evaluate(load_pack(self.pack_path), layout)
        rows = [c.as_json() for c in conditions]
        store = (self.base / self.m.autoruns_dir).resolve() if self.m.autoruns_dir else \
            self.workspace / "llm_normalizer" / "data" / "autoruns"
        record: dict[str, Any] = {"kind": "saved_autorun", "run_id": layout.run_id,
                                  "conditions": rows, "saved_at": now_iso()}
        if all(c.passed for c in conditions):
            dest = autoruns.save(layout, store, self.pack_path, rows, True, None)
            record.update(validated=True, dest=display_path(dest))
            print(f"saved validated run {layout.run_id} to {display_path(dest)}")
        else:
            failed = [c.name for c in conditions if not c.passed]
            record.update(validated=False, dest=None, refused=failed)
            print(f"not saved: the save gate refused run {layout.run_id} ({', '.join(failed)})")
        atomic_write_json(self.dir / "saved_autorun.json", record)
        return record

    def ingest(self, run_id: str) -> dict:
        """``ingest-gui-run``: review a GUI run under the stage; maybe validate a repair."""
        from pipeline.assistant.sessions import normalize_run_id

        try:
            run_id = normalize_run_id(run_id)
        except ValueError as exc:
            raise UserError(f"--run-id: {exc}") from None
        out_dir = self.dir / "gui_run_reviews" / run_id
        outcome = self.reviewer.review_gui(run_id, self.runs_dir(), out_dir,
                                           f"{self.loop_id}-gui-{run_id}", self.workspace)
        if outcome.failed:
            raise UserError(f"review of {run_id} failed: {outcome.failed[0][1]}")
        review = read_json_or_none(out_dir / "run_review.json")
        if not isinstance(review, dict):
            raise UserError("run_review.json was not written", path=display_path(out_dir))
        s = review["summary"]
        record: dict[str, Any] = {
            "kind": "gui_run_ingest", "run_id": run_id, "at_ns": _ns(),
            "ingested_at": now_iso(), "review_dir": display_path(out_dir),
            "next_action": s["next_action"],
            "summary": {k: s[k] for k in ("sessions", "pairs", "overall_business_status", "p0",
                                          "p1", "p2", "unresolved_p0", "unresolved_p1",
                                          "business_answer_failures", "flags")},
            "validates_repair_iteration": None, "validation": None}
        target = self._validation_target(run_id)
        if target is not None:
            accepted = s["unresolved_p0"] == 0 and s["unresolved_p1"] == 0 and s["pairs"] > 0
            validation = {"repair_iteration": target["iteration"], "validation_run_id": run_id,
                          "remaining_p0": s["unresolved_p0"],
                          "remaining_p1": s["unresolved_p1"],
                          "business_status": s["overall_business_status"],
                          "accepted": accepted, "validated_at": record["ingested_at"],
                          "at_ns": record["at_ns"]}
            record.update(validates_repair_iteration=target["iteration"],
                          validation=validation)
            append_line(self.dir / HISTORY, json.dumps(validation, ensure_ascii=False))
        atomic_write_json(out_dir / INGEST, record)
        self.write_summary()
        return record

    def _validation_target(self, run_id: str) -> dict | None:
        """The patched repair this ingest validates, if any (see the module docstring)."""
        patched = [r for r in self.repairs() if (r["result"] or {}).get("status") == "patched"]
        if not patched:
            return None
        latest = patched[-1]
        if any(h["accepted"] for h in self.history()
               if h["repair_iteration"] == latest["iteration"]):
            return None  # already validated: a later ingest is an ordinary review
        if (latest["plan"].get("source") or {}).get("run_id") == run_id:
            print(f"note: {run_id} is the run repair iteration {latest['iteration']} came "
                  "from; it cannot validate that repair (rerun and ingest a new run)")
            return None
        return latest

    def prepare_repair(self) -> dict | None:
        """``prepare-repair``: the next repair iteration from the newest review (None when
        there is nothing to repair)."""
        summary = self.compute()
        self.write_repair_handoff(summary)
        found = self.repair_source(summary)
        if found is None:
            return None
        source, targets = found
        repairs = self.repairs()
        last = repairs[-1] if repairs else None
        # a prepared repair whose coder never ran is rewritten, not left dangling
        n = last["iteration"] if last and last["result"] is None else \
            (last["iteration"] + 1 if last else 1)
        plan = repair.build_plan(
            targets, iteration=n, source=source, max_targets=self.m.max_targets,
            rerun=[self.command("run_repair"),
                   "rerun the stage pack or a GUI session on the patched assistant",
                   self.command("ingest_gui_run")],
            context={"title": self.m.title or f"stage {self.m.stage_id}",
                     "stage_id": self.m.stage_id, "goal": self.m.goal})
        if not plan["targets"]:
            return None
        plan["at_ns"] = _ns()
        folder = self.dir / "repair_iterations" / str(n)
        for stale in (EXECUTION, coder.COMMAND):
            (folder / stale).unlink(missing_ok=True)
        repair.write(folder, plan)
        self.write_summary()
        return {**plan, "dir": folder}

    def run_repair(self, dry_run: bool) -> dict:
        """``run-repair``: materialise (``--dry-run``) or run the coder of the latest repair."""
        repairs = self.repairs()
        if not repairs:
            raise UserError("no prepared repair", fix=f"run: {self.command('prepare_repair')}")
        last = repairs[-1]
        folder, n = last["dir"], last["iteration"]
        if last["result"] and last["result"]["status"] in ("patched", "no_change"):
            raise UserError(f"repair iteration {n} already ran its coder "
                            f"({last['result']['status']})",
                            fix=f"prepare the next one: {self.command('prepare_repair')}")
        if self.m.coder is None:
            raise UserError("$.coder: the manifest names no coder command",
                            path=self.manifest_arg)
        cwd = coder.resolve_cwd(self.m.coder, self.base)
        command = coder.command_for(self.m.coder, folder, n)
        line = coder.write_command(folder, command, cwd)
        summary: dict[str, Any] = {"kind": "repair_execution_summary", "repair_iteration": n,
                                   "mode": "dry_run" if dry_run else "execute",
                                   "command": command, "command_line": line,
                                   "cwd": display_path(cwd), "at_ns": _ns(),
                                   "recorded_at": now_iso()}
        if dry_run:
            summary.update(coder_status=None, changed_files=[],
                           next_action="run_repair")
        else:
            if last["result"] and last["result"]["status"] == "failed":
                coder.archive_attempt(folder)
                coder.write_command(folder, command, cwd)
            result = coder.run(self.m.coder, self.base, folder, n,
                               last["plan"].get("candidate_files") or [])
            summary.update(coder_status=result["status"], reason=result["reason"],
                           changed_files=result["changed_files"],
                           exit_code=result["exit_code"])
        atomic_write_json(folder / EXECUTION, summary)
        stage = self.write_summary()
        summary["next_action"] = stage["next_action"]
        atomic_write_json(folder / EXECUTION, summary)
        return summary
