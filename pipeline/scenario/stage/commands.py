"""A stage's commands: ``plan``, ``run``, ``ingest-gui-run``, ``prepare-repair``,
``run-repair`` and the summary/handoff writes every one of them ends with."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from pipeline.core.clock import now_iso
from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, read_json_or_none
from pipeline.core.lock import exclusive
from pipeline.core.store import append_line, atomic_write_json, atomic_write_text
from pipeline.scenario import autoruns, coder, repair, runner, save_gate
from pipeline.scenario.contracts import load_pack
from pipeline.scenario.layout import RunLayout
from pipeline.scenario.loop import PackLoop, iteration_dir, read_state
from pipeline.scenario.loop import restart as loop_restart

from . import rendering
from .state import EXECUTION, HANDOFF, HISTORY, INGEST, REPAIR_HANDOFF, SUMMARY, StageState


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


class Stage(StageState):
    """One stage and the commands that change it."""

    def write_summary(self) -> dict:
        """Recompute and write the summary, the stage handoff and the repair handoff."""
        summary = self.compute()
        summary["updated_at"] = now_iso()
        atomic_write_json(self.dir / SUMMARY, summary)
        atomic_write_text(self.dir / HANDOFF, self.handoff_md(summary))
        self.write_repair_handoff(summary)
        return summary

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
        atomic_write_text(self.dir / f"{REPAIR_HANDOFF}.md",
                          rendering.repair_handoff_md(self.m.stage_id, doc, summary))
        return doc

    def handoff_md(self, s: dict) -> str:
        """``stage_loop_handoff.md`` of summary ``s``."""
        return rendering.handoff_md(self, s)

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

    def _refuse_stale_review(self, repair_row: dict) -> None:
        """A repair prepared from a GUI review that an accepted pack loop ran after is stale:
        its findings describe an assistant the loop has since changed and accepted, so its
        coder would patch against old evidence (and end in ``stop_for_user_decision``)."""
        source = repair_row["plan"].get("source") or {}
        if source.get("kind") != "gui_run":
            return
        run_record = read_json_or_none(self.dir / "stage_run_record.json") or {}
        ingest = next((r for r in self.ingests() if r["run_id"] == source.get("run_id")), None)
        if ingest is None or ingest.get("at_ns", 0) >= run_record.get("at_ns", 0):
            return
        if not self.compute()["loop_accepted_gate"]:
            return
        raise UserError(
            f"repair iteration {repair_row['iteration']} comes from the GUI review of "
            f"{source['run_id']}, which is older than the pack loop accepted since "
            f"({self.loop_id}): the review is stale",
            fix=f"make a new GUI run on the current assistant and ingest it: "
                f"{self.command('ingest_gui_run')}; then {self.command('prepare_repair')}")

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
        self._refuse_stale_review(last)
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
