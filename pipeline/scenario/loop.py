"""``run-pack-loop``: run the pack, let the analyst judge it, repair, rerun, until done.

One loop lives in ``<artifacts>/<loop_id>/`` (default id ``loop-<pack_id>``)::

    loop_manifest.json      what the loop runs (pack, gate, limits, coder)
    loop_state.json         where it is: iteration, step, status (rewritten atomically at
                            every step boundary)
    loop_summary.md, final_status.md
    iterations/<n>/pack_run/        the captured and reviewed pack (run id <loop_id>-it<n>)
                  analyst_verdict.json/md
                  repair_iteration_plan.json, repair_prompt.md, repair_checklist.md
                  repair_coder.command.txt, repair_coder.stdout.txt/.stderr.txt,
                  repair_coder_result.json

An iteration goes through the steps ``started`` -> ``captured`` -> ``reviewed`` ->
``verdict`` -> ``repair_prepared`` -> ``coder_done``. A loop that is killed resumes at the
step it was in: a finished capture is never redone (an unfinished one resumes step by
step), up-to-date reviews are skipped, and a coder that reported is not run again.

The loop stops with a status: ``accepted`` (the analyst's gate passed),
``requires_user_decision``, ``blocked`` (the assistant runtime gave no answer, or the coder
failed), ``max_iterations``, or ``awaiting_coder`` (no coder configured: the repair is
prepared for a person; rerunning the loop goes on with the next iteration). ``partial`` and
``needs_exact_capability`` pack statuses are never terminal. Rerunning a stopped loop:
``accepted`` stays; ``requires_user_decision`` goes on only once the pack spec changed (the
user decided); ``max_iterations`` goes on when ``--max-iterations`` is raised; ``blocked``
retries the step that blocked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.clock import now_iso
from pipeline.core.jsonio import display_path, read_json_or_none
from pipeline.core.store import atomic_write_json, atomic_write_text

from . import analyst, coder, repair, runner, status
from .contracts import Pack, load_pack, spec_hash
from .layout import RunLayout

STEPS = ("started", "captured", "reviewed", "verdict", "repair_prepared", "coder_done")
TERMINAL = ("accepted", "requires_user_decision", "blocked", "max_iterations",
            "awaiting_coder")
DEFAULT_MAX_ITERATIONS = 5


@dataclass
class LoopConfig:
    """Everything a loop needs besides the pack."""

    capture: runner.CaptureOptions
    gate: analyst.AnalystGate = field(default_factory=analyst.AnalystGate)
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    max_targets: int = repair.DEFAULT_MAX_TARGETS
    score_spec: Path | None = runner.DEFAULT_SCORE_SPEC
    coder: coder.CoderConfig | None = None
    coder_base: Path | None = None
    title: str = ""
    rerun_command: list[str] = field(default_factory=list)


def iteration_dir(loop_dir: Path, n: int) -> Path:
    """The folder of iteration ``n``."""
    return loop_dir / "iterations" / str(n)


def read_state(loop_dir: Path) -> dict | None:
    """``loop_state.json`` of a loop (None when it has not started)."""
    data = read_json_or_none(loop_dir / "loop_state.json")
    return data if isinstance(data, dict) and data.get("kind") == "pack_loop_state" else None


def latest_verdict(loop_dir: Path, state: dict | None = None) -> dict | None:
    """The newest analyst verdict of a loop."""
    state = state or read_state(loop_dir)
    for entry in reversed((state or {}).get("iterations", [])):
        v = read_json_or_none(iteration_dir(loop_dir, entry["iteration"]) /
                              "analyst_verdict.json")
        if isinstance(v, dict):
            return v
    return None


class PackLoop:
    """The autonomous analyst/coder loop over one pack."""

    def __init__(self, pack_path: Path, loop_dir: Path, loop_id: str, config: LoopConfig,
                 echo: Callable[[str], None] = print):
        self.pack_path = Path(pack_path)
        self.dir = Path(loop_dir)
        self.loop_id = loop_id
        self.config = config
        self.echo = echo
        self.pack: Pack = load_pack(self.pack_path)
        self.state: dict[str, Any] = {}

    # -- state ----------------------------------------------------------------------------
    def _new_state(self) -> dict:
        return {"kind": "pack_loop_state", "loop_id": self.loop_id,
                "pack_id": self.pack.pack_id, "status": "running", "terminal": False,
                "stop_reason": None, "iteration": 0, "step": None,
                "max_iterations": self.config.max_iterations,
                "target_score": self.config.gate.target_score, "iterations": [],
                "started_at": now_iso()}

    def _save(self) -> None:
        it = self._entry()
        self.state.update(iteration=it["iteration"] if it else 0,
                          step=it["step"] if it else None,
                          max_iterations=self.config.max_iterations,
                          target_score=self.config.gate.target_score,
                          updated_at=now_iso())
        atomic_write_json(self.dir / "loop_state.json", self.state)

    def _entry(self) -> dict | None:
        its = self.state.get("iterations") or []
        return its[-1] if its else None

    def _set_step(self, entry: dict, step: str, **fields) -> None:
        entry.update(step=step, **fields)
        self._save()

    def _stop(self, status_: str, reason: str) -> None:
        self.state.update(status=status_, terminal=True, stop_reason=reason)
        self._save()

    def _write_manifest(self) -> None:
        c = self.config
        atomic_write_json(self.dir / "loop_manifest.json", {
            "kind": "pack_loop_manifest", "loop_id": self.loop_id,
            "pack_id": self.pack.pack_id, "pack": display_path(self.pack_path),
            "spec_hash": spec_hash(self.pack), "gate": c.gate.model_dump(mode="json"),
            "max_iterations": c.max_iterations, "max_targets": c.max_targets,
            "score_spec": str(c.score_spec) if c.score_spec else None,
            "coder": c.coder.model_dump(mode="json", by_alias=True) if c.coder else None,
            "base_url": c.capture.base_url})

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        """Run (or resume) the loop until it stops; returns ``loop_state.json``."""
        runner.check_score_spec(self.config.score_spec)
        artifacts = self.config.capture.artifacts
        with runner.run_lock(artifacts, self.loop_id):
            self.dir.mkdir(parents=True, exist_ok=True)
            self.state = read_state(self.dir) or self._new_state()
            self._write_manifest()
            if not self._reopen():
                self._write_reports()
                return self.state
            self.state.update(status="running", terminal=False, stop_reason=None)
            self._save()
            try:
                self._iterate()
            finally:
                self._write_reports()
        return self.state

    def _reopen(self) -> bool:
        """Whether a stopped loop goes on now (and from which step); see the docstring."""
        if not self.state.get("terminal"):
            return True
        st = self.state["status"]
        entry = self._entry()
        if st == "accepted":
            self.echo(f"loop {self.loop_id}: already accepted at iteration "
                      f"{entry['iteration']} (pass --restart to start over)")
            return False
        if st == "requires_user_decision":
            if entry and entry.get("spec_hash") == spec_hash(self.pack):
                self.echo(f"loop {self.loop_id}: still waiting for a user decision: "
                          f"{self.state['stop_reason']} (edit the pack, or --restart)")
                return False
            self.echo(f"loop {self.loop_id}: the pack changed since the decision was asked "
                      "for; going on with a new iteration")
            entry["step"] = "coder_done"
            entry.setdefault("coder_status", "user_decision")
            return True
        if st == "max_iterations":
            if entry and entry["iteration"] >= self.config.max_iterations:
                self.echo(f"loop {self.loop_id}: stopped at max_iterations "
                          f"({self.config.max_iterations}); raise --max-iterations to go on")
                return False
            return True
        if st == "blocked" and entry:
            if entry.get("coder_status") == "failed":
                coder.archive_attempt(iteration_dir(self.dir, entry["iteration"]))
                entry.pop("coder_status", None)
                entry["step"] = "repair_prepared"
            else:
                entry["step"] = "started"  # the capture resumes: only blocked steps again
            return True
        if st == "awaiting_coder" and entry:
            if self.config.coder is None:
                entry["step"] = "coder_done"
                entry["coder_status"] = "manual"
                self.echo(f"iteration {entry['iteration']}: no coder configured; taking the "
                          "repair as done by hand")
            return True
        return True

    def _iterate(self) -> None:
        while True:
            entry = self._entry()
            if entry is None or entry["step"] == "coder_done":
                n = entry["iteration"] + 1 if entry else 1
                if entry and n > self.config.max_iterations:
                    self._stop("max_iterations", f"{self.config.max_iterations} iteration(s) "
                                                 "without passing the gate")
                    return
                entry = {"iteration": n, "run_id": f"{self.loop_id}-it{n}",
                         "dir": f"iterations/{n}", "step": "started",
                         "started_at": now_iso()}
                self.state["iterations"].append(entry)
                self._save()
                self.echo(f"iteration {n}/{self.config.max_iterations}")
            if self._advance(entry):
                return

    def _advance(self, entry: dict) -> bool:
        """Run the next step of ``entry``; True when the loop stops."""
        n = entry["iteration"]
        folder = iteration_dir(self.dir, n)
        run_dir = folder / "pack_run"
        step = entry["step"]
        if step == "started":
            self.pack = load_pack(self.pack_path)  # an edit of the pack counts from now on
            layout, _ = runner.capture(self.config.capture, "pack", self.pack, entry["run_id"],
                                       run_dir, display_path(self.pack_path))
            result = status.evaluate(layout, None)
            self._set_step(entry, "captured", spec_hash=spec_hash(self.pack),
                           capture_status=result["final_status"])
            return False
        layout = RunLayout.load(run_dir)
        if step == "captured":
            reviews, failed = runner.reviews(self.config.capture.reviewer, layout,
                                             self.config.capture.workspace,
                                             self.config.score_spec)
            result = status.write(layout, reviews)
            atomic_write_json(folder / "reviews_index.json", {
                "reviews": sorted(reviews), "review_failed": failed,
                "pack_final_status": result["final_status"]})
            self._set_step(entry, "reviewed", pack_final_status=result["final_status"],
                           review_failed=failed)
            return False
        if step == "reviewed":
            index = read_json_or_none(folder / "reviews_index.json") or {}
            # only the reviews that ran for this capture (a failed one may have left an old file)
            names = [n for n in index.get("reviews", []) if n in ("truth", "business", "judge")]
            reviews = {name: data for name in names
                       if isinstance(data := read_json_or_none(run_dir / f"{name}_review.json"),
                                     dict)}
            result = status.evaluate(layout, reviews)
            v = analyst.verdict(layout, result, reviews, self.config.gate, n,
                                bool(entry.get("review_failed")))
            atomic_write_json(folder / "analyst_verdict.json", v)
            atomic_write_text(folder / "analyst_verdict.md", analyst.render_md(v))
            self._set_step(entry, "verdict", score=v["score"], verdict=v["verdict"],
                           accepted=v["accepted"],
                           requires_user_decision=v["requires_user_decision"])
            self.echo(f"  analyst: {v['verdict']}, score {v['score']:g} (target "
                      f"{v['target_score']:g}); open P0 {v['unresolved']['p0']}, "
                      f"P1 {v['unresolved']['p1']}")
            return False
        if step == "verdict":
            v = read_json_or_none(folder / "analyst_verdict.json") or {}
            if v.get("accepted"):
                self._stop("accepted", f"score {v['score']:g} >= {v['target_score']:g} and "
                                       f"every gate condition holds (iteration {n})")
                return True
            if v.get("blocked"):
                self._stop("blocked", f"the assistant runtime gave no answer: "
                                      f"{v.get('blocked_reason')}")
                return True
            if v.get("requires_user_decision"):
                self._stop("requires_user_decision", v.get("user_decision_reason") or "")
                return True
            plan = repair.build_plan(
                v.get("repair_targets", []), iteration=n,
                source={"kind": "pack_loop", "run_id": entry["run_id"],
                        "review": display_path(folder / "analyst_verdict.md")},
                max_targets=self.config.max_targets,
                rerun=self.config.rerun_command
                or [f"rerun the pack {display_path(self.pack_path)}"],
                context={"title": self.config.title or f"pack {self.pack.pack_id}",
                         "loop_id": self.loop_id, "score": v.get("score"),
                         "target_score": v.get("target_score")})
            repair.write(folder, plan)
            self._set_step(entry, "repair_prepared", repair_targets=len(plan["targets"]))
            self.echo(f"  repair prepared: {len(plan['targets'])} target(s) "
                      f"({', '.join(t['code'] for t in plan['targets'])}); "
                      f"{display_path(folder / repair.PROMPT)}")
            return False
        if step == "repair_prepared":
            if n >= self.config.max_iterations:
                self._stop("max_iterations", f"{n} iteration(s) without passing the gate; the "
                                             f"next repair is prepared in iterations/{n}/")
                return True
            result = coder.result_of(folder)
            if result is None:
                if self.config.coder is None:
                    self._stop("awaiting_coder", f"no coder configured: apply "
                                                 f"iterations/{n}/{repair.PROMPT} and rerun")
                    return True
                plan = read_json_or_none(folder / repair.PLAN) or {}
                self.echo("  running the coder")
                result = coder.run(self.config.coder, self.config.coder_base, folder, n,
                                   plan.get("candidate_files") or [])
            self._set_step(entry, "coder_done", coder_status=result["status"],
                           coder_reason=result["reason"])
            self.echo(f"  coder: {result['status']} ({result['reason']})")
            if result["status"] == "failed":
                self._stop("blocked", f"coder_failed: {result['reason']} (see "
                                      f"iterations/{n}/{coder.STDERR})")
                return True
            return False
        raise AssertionError(f"unknown loop step {step!r}")

    # -- reports --------------------------------------------------------------------------
    def _write_reports(self) -> None:
        atomic_write_text(self.dir / "loop_summary.md", summary_md(self.state))
        entry = self._entry()
        lines = [f"# Final status: {self.state['status']}", "",
                 f"Pack loop `{self.loop_id}` (pack {self.state['pack_id']}).", ""]
        if self.state.get("stop_reason"):
            lines += [f"Stopped: {self.state['stop_reason']}", ""]
        if entry:
            lines += [f"Last iteration {entry['iteration']}: step {entry['step']}, score "
                      f"{entry.get('score')}, verdict {entry.get('verdict')}.", ""]
        atomic_write_text(self.dir / "final_status.md", "\n".join(lines))


def summary_md(state: dict) -> str:
    """``loop_summary.md``: one line per iteration."""
    lines = [f"# Pack loop {state['loop_id']}: {state['status']}", "",
             f"Target score {state['target_score']:g}, at most {state['max_iterations']} "
             "iteration(s)." + (f" Stopped: {state['stop_reason']}" if state.get("stop_reason")
                                else ""), "",
             "| iteration | step | pack status | score | verdict | repair targets | coder |",
             "|---|---|---|---|---|---|---|"]
    for e in state.get("iterations", []):
        lines.append(f"| {e['iteration']} | {e['step']} | {e.get('pack_final_status', '-')} | "
                     f"{e.get('score', '-')} | {e.get('verdict', '-')} | "
                     f"{e.get('repair_targets', '-')} | {e.get('coder_status', '-')} |")
    return "\n".join(lines) + "\n"


def restart(loop_dir: Path, loop_id: str, workspace: Path) -> Path:
    """``--restart``: move the loop folder aside and forget its iterations' review DBs."""
    dest = runner.archive(loop_dir, loop_dir.parent)
    for db in runner.review_db(workspace, f"{loop_id}-it1").parent.glob(
            f"{loop_id}-it*.sqlite*"):
        db.unlink(missing_ok=True)
    return dest
