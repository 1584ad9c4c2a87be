"""A stage's state: its manifest and folder, the files its commands wrote, and the summary
derived from them (``compute`` writes nothing; see the package docstring for the gate)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, read_json_or_none
from pipeline.scenario import coder, repair, runner
from pipeline.scenario.loop import LoopConfig, iteration_dir, latest_verdict, read_state
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


class StageState:
    """One stage manifest, its folder, and what its files say."""

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
