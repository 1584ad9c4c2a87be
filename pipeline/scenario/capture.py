"""Capture: ask a scenario's questions in one assistant session and write every artifact.

Each step writes ``turn.json``, ``assistant_response.json``, ``session.json``,
``debug.json`` and ``output.md``, then ``step_state.json`` last: that file is the commit
point of the step. A step whose state says it finished (anything but ``blocked``) with the
same step hash is never asked again, so a crashed or interrupted run resumes where it
stopped. A step hash covers the step's question and every earlier step's, so editing
a question recaptures the scenario from a fresh session instead of mixing conversations.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.clock import now_iso
from pipeline.core.hashing import hash_file, hash_json
from pipeline.core.jsonio import read_json_or_none
from pipeline.core.store import atomic_write_json, atomic_write_text

from . import placeholders
from .client import AssistantAPI, CallResult
from .contracts import Scenario, Step, step_references

# What a step captured from the assistant: hashed when captured (in step_state.json), so a
# later hand edit is reported by the reviews and refused by the save gate.
EVIDENCE = ("assistant_response.json", "session.json", "turn.json")


def evidence_hashes(step_dir: Path) -> dict[str, str]:
    """blake3 of each evidence file of a step, as it is on disk now."""
    return {name: hash_file(str(step_dir / name)) for name in EVIDENCE
            if (step_dir / name).is_file()}


def evidence_edits(step_dir: Path, state: dict | None) -> list[str]:
    """The evidence files of a step that changed since it was captured (edited, removed).

    A step captured before evidence was hashed has no record to compare: nothing to say.
    """
    recorded = (state or {}).get("evidence")
    if not isinstance(recorded, dict):
        return []
    edited = []
    for name, digest in recorded.items():
        path = step_dir / str(name)
        try:
            if hash_file(str(path)) != digest:
                edited.append(str(name))
        except OSError:
            edited.append(f"{name} (removed)")
    return edited


def step_hashes(scenario: Scenario) -> dict[str, str]:
    """step_id -> hash of its question and of every earlier step (a chain)."""
    out: dict[str, str] = {}
    prev = ""
    for step in scenario.steps:
        prev = hash_json({"scenario_id": scenario.scenario_id, "step_id": step.step_id,
                          "question": step.question, "prev": prev})
        out[step.step_id] = prev
    return out


def scenario_manifest(scenario: Scenario, run_id: str, extra: dict) -> dict:
    """The scenario's manifest in its run folder (no timestamps: rewriting it is a no-op)."""
    hashes = step_hashes(scenario)
    problems = step_references(scenario)
    return {
        "kind": "scenario_manifest", "run_id": run_id, "scenario_id": scenario.scenario_id,
        "title": scenario.title, "brief": scenario.brief, **extra,
        "steps": [{"step_id": s.step_id, "title": s.title, "question": s.question,
                   "expect": s.expect.model_dump(mode="json", exclude_unset=True),
                   "step_hash": hashes[s.step_id],
                   "reference_problems": problems.get(s.step_id, [])}
                  for s in scenario.steps],
    }


def scenario_brief(scenario: Scenario, run_id: str) -> str:
    """``scenario_brief.md``: what the scenario asks and why."""
    lines = [f"# Scenario {scenario.scenario_id}", ""]
    if scenario.title:
        lines += [scenario.title, ""]
    if scenario.brief:
        lines += [scenario.brief, ""]
    lines += [f"Run: `{run_id}`; {len(scenario.steps)} step(s) in one assistant session.", ""]
    for i, s in enumerate(scenario.steps, 1):
        lines.append(f"{i}. `{s.step_id}`: {s.question}")
    return "\n".join(lines) + "\n"


@dataclass
class StepOutcome:
    """What capturing (or skipping) one step left behind."""

    state: dict
    response: dict | None
    asked: bool


class Capturer:
    """Captures scenarios through one assistant connection (:class:`AssistantAPI`)."""

    def __init__(self, client: AssistantAPI, echo: Callable[[str], None] = print):
        self.client = client
        self.echo = echo
        self.asked = 0  # questions sent in this process
        self.skipped = 0  # finished steps not asked again

    def capture(self, scenario: Scenario, sdir: Path, run_id: str, extra: dict | None = None,
                on_step: Callable[[], None] | None = None) -> list[StepOutcome]:
        """Capture (or resume) ``scenario`` into ``sdir``; returns every step's outcome.

        Call :meth:`prepare` first (for a pack: for every scenario before the first one).
        """
        manifest = scenario_manifest(scenario, run_id, extra or {})
        context: dict[str, Any] = {}
        session_id: str | None = None
        outcomes: list[StepOutcome] = []
        for step, entry in zip(scenario.steps, manifest["steps"], strict=True):
            step_dir = sdir / "steps" / step.step_id
            state = read_json_or_none(step_dir / "step_state.json")
            response = read_json_or_none(step_dir / "assistant_response.json")
            if (isinstance(state, dict) and state.get("finished")
                    and state.get("step_hash") == entry["step_hash"]
                    and isinstance(response, dict)):
                self.skipped += 1
                outcome = StepOutcome(state, response, asked=False)
            else:
                outcome = self._step(scenario, step, entry, step_dir, context, session_id)
                if on_step:
                    on_step()
            outcomes.append(outcome)
            context[step.step_id] = outcome.response
            if outcome.response is not None:
                context["semantic_memory"] = outcome.response.get("semantic_memory") or {}
                session_id = outcome.response.get("session_id") or session_id
                context["session_id"] = session_id
        return outcomes

    def prepare(self, scenario: Scenario, sdir: Path, run_id: str, extra: dict) -> None:
        """Write the scenario's manifest and brief; set aside steps of changed questions."""
        manifest = scenario_manifest(scenario, run_id, extra)
        self._discard_stale(manifest, sdir)
        atomic_write_json(sdir / "scenario_manifest.json", manifest)
        atomic_write_text(sdir / "scenario_brief.md", scenario_brief(scenario, run_id))

    def _discard_stale(self, manifest: dict, sdir: Path) -> None:
        """A changed question invalidates the conversation: start the scenario afresh."""
        old = read_json_or_none(sdir / "scenario_manifest.json")
        if not isinstance(old, dict):
            return
        old_hashes = [s.get("step_hash") for s in old.get("steps", [])]
        new_hashes = [s["step_hash"] for s in manifest["steps"]]
        if old_hashes == new_hashes or not (sdir / "steps").exists():
            return
        dest = sdir / ".stale" / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        dest.mkdir(parents=True, exist_ok=True)
        shutil.move(str(sdir / "steps"), str(dest / "steps"))
        self.echo(f"  {manifest['scenario_id']}: questions changed since the last capture; "
                  f"previous steps moved to {dest.relative_to(sdir)}, capturing afresh")

    # -- one step -------------------------------------------------------------------------
    def _step(self, scenario: Scenario, step: Step, entry: dict, step_dir: Path,
              context: dict, session_id: str | None) -> StepOutcome:
        base = {"kind": "step_state", "scenario_id": scenario.scenario_id,
                "step_id": step.step_id, "step_hash": entry["step_hash"],
                "question_template": step.question}
        label = f"{scenario.scenario_id}/{step.step_id}"
        if entry["reference_problems"]:
            return self._blocked(step_dir, base, None, "unknown_step_reference",
                                 "; ".join(entry["reference_problems"]), label)
        try:
            question, values = placeholders.resolve(step.question, context)
        except placeholders.Unresolved as exc:
            return self._blocked(step_dir, base, None, "unresolved_placeholder", str(exc),
                                 label)
        turn = {"kind": "turn", "scenario_id": scenario.scenario_id, "step_id": step.step_id,
                "question_template": step.question, "question": question,
                "placeholders": values, "session_id_sent": session_id,
                "base_url": self.client.base_url, "started_at": now_iso()}
        self.asked += 1
        result = self.client.send(session_id, question)
        turn.update(finished_at=now_iso(), http=result.summary())
        if not result.ok:
            kind = result.error_kind or "error"
            message = result.error or "no answer"
            if result.status == 404 and session_id:
                kind = "session_lost"
                message = (f"the assistant no longer knows session {session_id} ({message}); "
                           "rerun with --restart to capture this scenario afresh")
            return self._blocked(step_dir, base, turn, kind, message, label, result)
        response: dict = result.data
        status, reasons = capture_status(step, response)
        session = self.client.session(response["session_id"])
        debug = {"kind": "debug", "assistant_debug": response.get("debug") or {},
                 "capability": response.get("capability"), "http": result.summary(),
                 "session_fetch": session.summary()}
        if not session.ok:
            reasons.append(f"note: session snapshot unavailable: {session.error}")
        atomic_write_json(step_dir / "turn.json", turn)
        atomic_write_json(step_dir / "assistant_response.json", response)
        atomic_write_json(step_dir / "session.json", session.data if session.ok else
                          {"session_id": response["session_id"], "error": session.error})
        atomic_write_json(step_dir / "debug.json", debug)
        atomic_write_text(step_dir / "output.md", step_output(step.step_id, question, response,
                                                              status, reasons))
        state = {**base, "status": status, "reasons": reasons, "finished": True,
                 "question": question, "session_id": response["session_id"],
                 "turn": response.get("turn"), "attempts": result.attempts, "error": None,
                 "captured_at": now_iso(), "evidence": evidence_hashes(step_dir)}
        atomic_write_json(step_dir / "step_state.json", state)  # last: the commit point
        self.echo(f"  {label}: {status}" + (f" ({reasons[0]})" if reasons else ""))
        return StepOutcome(state, response, asked=True)

    def _blocked(self, step_dir: Path, base: dict, turn: dict | None, kind: str, message: str,
                 label: str, result: CallResult | None = None) -> StepOutcome:
        # A blocked step has no answer: an older one from a previous try is stale.
        (step_dir / "assistant_response.json").unlink(missing_ok=True)
        reason = f"{kind}: {message}"
        if turn is None:  # nothing was sent: the question could not even be written
            turn = {"kind": "turn", "scenario_id": base["scenario_id"],
                    "step_id": base["step_id"], "question_template": base["question_template"],
                    "question": None, "placeholders": {}, "session_id_sent": None,
                    "started_at": now_iso(), "finished_at": now_iso(), "http": None}
        turn["error"] = {"kind": kind, "message": message}
        atomic_write_json(step_dir / "turn.json", turn)
        atomic_write_json(step_dir / "session.json",
                          {"session_id": turn.get("session_id_sent"),
                           "error": "no answer captured for this step"})
        atomic_write_json(step_dir / "debug.json", {
            "kind": "debug", "error": {"kind": kind, "message": message},
            "http": result.summary() if result else None})
        atomic_write_text(step_dir / "output.md",
                          f"# {base['step_id']}\n\n**Question:** "
                          f"{(turn or {}).get('question') or base['question_template']}\n\n"
                          f"**Status:** blocked\n\n{reason}\n")
        state = {**base, "status": "blocked", "reasons": [reason], "finished": False,
                 "question": (turn or {}).get("question"), "session_id": None, "turn": None,
                 "attempts": result.attempts if result else 0,
                 "error": {"kind": kind, "message": message}, "captured_at": now_iso()}
        atomic_write_json(step_dir / "step_state.json", state)
        self.echo(f"  {label}: blocked ({reason})")
        return StepOutcome(state, None, asked=result is not None)


def capture_status(step: Step, response: dict) -> tuple[str, list[str]]:
    """The capture-level status of an answered step and why."""
    expect = step.expect
    capability = (response.get("capability") or {}).get("status", "answered")
    detail = (response.get("capability") or {}).get("detail") or ""
    route = (response.get("debug") or {}).get("route")
    reasons: list[str] = []
    if capability != expect.capability:
        if capability == "unsupported":
            return "needs_exact_capability", [
                f"needs exact capability: the assistant has no route for this question"
                f"{': ' + detail if detail else ''}"]
        if capability == "clarification":
            reasons.append(f"route hardening: the assistant asked for clarification"
                           f"{': ' + detail if detail else ''}")
        else:
            reasons.append(f"route hardening: expected capability '{expect.capability}', "
                           f"got '{capability}'")
    if expect.route and route != expect.route:
        reasons.append(f"route hardening: expected route '{expect.route}', got '{route}'")
    n = len(response.get("entries") or [])
    if expect.min_entries is not None and n < expect.min_entries:
        reasons.append(f"evidence hardening: {n} entries, expected at least "
                       f"{expect.min_entries}")
    return ("partial" if reasons else "accepted"), reasons


def step_output(step_id: str, question: str, response: dict, status: str,
                reasons: list[str]) -> str:
    """``output.md``: the question and the visible answer first, then the structured part."""
    lines = [f"# {step_id}", "", f"**Question:** {question}", "", "**Answer:**", "",
             response.get("reply", ""), "", f"**Status:** {status}"]
    lines += [f"- {r}" for r in reasons]
    entries = response.get("entries") or []
    if entries:
        cols = list(dict.fromkeys(k for e in entries[:20] if isinstance(e, dict) for k in e))
        lines += ["", f"**Entries ({len(entries)}):**", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for e in entries[:20]:
            lines.append("| " + " | ".join(_cell(e.get(c)) for c in cols) + " |")
        if len(entries) > 20:
            lines.append(f"\n... {len(entries) - 20} more in assistant_response.json")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return str("" if value is None else value).replace("|", "\\|").replace("\n", " ")
