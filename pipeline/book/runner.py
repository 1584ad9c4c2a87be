"""Runs one phase of one scene: checks the rules, reads inputs, calls the LLM or the
pure logic, writes artifacts atomically, and returns the values doit records.

The returned values are what the phase ledger is rebuilt from.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.book import phases
from pipeline.book.models import OutlineScene
from pipeline.book.phase_table import PHASE, Phase
from pipeline.book.rules import (
    PolicyError,
    changed_templates,
    current_templates,
    edit_report,
    require_prompt_change_allowed,
    stale_state_acceptable,
)
from pipeline.book.runvars import RunVars
from pipeline.book.workspace import Book
from pipeline.core import cpu_turn
from pipeline.core.builddb import SceneDB
from pipeline.core.clock import now_iso
from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_bytes, hash_file, hash_json, remember
from pipeline.core.store import atomic_write_many
from pipeline.llm import CallContext, LLMClient, LLMRequest, build_client

_clients: dict[str, LLMClient] = {}
_clients_lock = threading.Lock()


class PhaseFailed(UserError):
    """The phase ran and its result says no (e.g. lint errors)."""


def llm_client(book: Book, rv: RunVars | None = None) -> LLMClient:
    """The one LLM client of this process for the book's workspace (and this run's budget)."""
    ws = book.workspace
    key = str(ws.root.resolve())
    with _clients_lock:
        if key not in _clients:
            cap = rv.budget if rv and rv.budget is not None else book.config.max_cost_usd
            _clients[key] = build_client(ws.state_dir, book.config.endpoint.model_dump(),
                                         {m: p.model_dump() for m, p in
                                          book.config.prices.items()}, cap)
        return _clients[key]


def _check_inputs_not_edited(db: SceneDB, inputs: dict[str, str], outputs: dict[str, str],
                             rv: RunVars) -> None:
    """Never build on, nor overwrite, a hand-edited artifact without force_resume."""
    if rv.force_resume:
        return
    from pipeline.book.rules import find_edits

    edits = find_edits(db, sorted(set(inputs.values()) | set(outputs.values())))
    if edits:
        raise PolicyError(edit_report(edits) + " (accept with force_resume=1, or "
                          f"regenerate with doit rerun-from {edits[0].task_id})")


def write_outputs(db: SceneDB, task_id: str, paths: dict[str, str], data: dict[str, bytes]
                  ) -> dict[str, list]:
    """Announce, then atomically write, a phase's artifacts; returns their recorded states."""
    hashes = {paths[name]: hash_bytes(blob) for name, blob in data.items()}
    db.announce_outputs(task_id, hashes)
    changed = {}
    for name, blob in data.items():
        path = paths[name]
        try:
            same = hash_file(path) == hashes[path]
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            same = False  # the write says what is in the way, if anything
        if not same:  # an identical file keeps its mtime, so nothing downstream re-hashes
            changed[path] = blob
    atomic_write_many(changed)
    states = {}
    for name in data:
        path = paths[name]
        st = os.stat(path)
        remember(path, st, hashes[path])
        states[path] = [st.st_mtime_ns, st.st_size, hashes[path]]
    return states


@dataclass
class PhaseRun:
    """One run of one phase of one scene: everything its step reads."""

    book: Book
    scene: OutlineScene
    spec: Phase
    task_id: str
    files: phases.PhaseFiles
    inp: dict  # input name -> the loaded artifact
    prev: dict  # the values doit saved at the phase's last success
    templates_now: dict
    rv: RunVars
    db: SceneDB
    values: dict  # what doit will save; a step adds its own records

    @property
    def phase(self) -> str:
        return self.spec.name


def run_phase(book: Book, sid: str, phase: str, changed: list[str], rv: RunVars,
              db: SceneDB) -> dict:
    """Run ``phase`` of scene ``sid`` (recorded in build DB ``db``) and return the values
    doit saves for it."""
    task_id = f"{phase}:{sid}"
    spec = PHASE[phase]
    scene = book.scene(sid)
    files = phases.layout(book, sid)[phase]
    prev = db.values(task_id)
    ihash = phases.inputs_hash(book, scene, phase)
    templates_now = current_templates(files.templates)
    state_path = files.inputs.get(files.state_input) if files.state_input else None

    _check_inputs_not_edited(db, files.inputs, files.outputs, rv)

    inp = {name: phases.load_input(path, phases.INPUT_MODELS[name])
           for name, path in files.inputs.items()}

    # Only phases that cost an LLM call keep a stale result, and only while it still
    # fits the new pre-state; plain code just reruns.
    if (rv.force_resume and spec.llm
            and stale_state_acceptable(prev, changed, state_path, ihash, templates_now,
                                       files.outputs, db, task_id)
            and phases.stale_output_error(phase, scene, inp, files.outputs) is None):
        new_hash = hash_file(state_path)
        db.add_event(task_id, "pre_state_accepted", {
            "path": state_path, "hash_prev": prev.get("pre_state_hash"), "hash_new": new_hash})
        values = dict(prev)
        values.update(timestamp=now_iso(), pre_state_hash=new_hash)
        return values

    values: dict = {"scene_id": sid, "phase": phase, "status": "success",
                    "inputs_hash": ihash, "artifacts": dict(files.outputs)}
    if state_path:
        values["pre_state_path"] = state_path
        values["pre_state_hash"] = hash_file(state_path)

    run = PhaseRun(book, scene, spec, task_id, files, inp, prev, templates_now, rv, db, values)
    data = STEPS[spec.run](run)

    cpu_turn.done()  # the rest is writing and fsyncing: let the next task's work start
    values["artifact_states"] = write_outputs(db, task_id, files.outputs, data)
    values["timestamp"] = now_iso()
    return values


# -- the steps: how a phase runs (the table's ``run``), each returning the phase's files --
def _run_preflight(run: PhaseRun) -> dict[str, bytes]:
    return phases.preflight(run.book, run.scene, run.inp["scene_card"], run.inp["pre_state"],
                            run.files.inputs["pre_state"])


def _run_lint(run: PhaseRun) -> dict[str, bytes]:
    inp, files = run.inp, run.files
    report = phases.lint(run.book, run.scene.id, inp["scene_card"], inp["state"], inp["prose"],
                         inp["state_patch"])
    data = {"report": (report.model_dump_json(indent=2) + "\n").encode()}
    if not report.passed:
        # the report is the user's answer to "why": on disk even though the phase fails
        write_outputs(run.db, run.task_id, files.outputs, data)
        errors = [f.message + (f" ({f.field})" if f.field else "")
                  for f in report.findings if f.severity == "error"]
        raise PhaseFailed(f"lint failed: {'; '.join(errors)}", path=files.outputs["report"],
                          fix="fix the prose/patch (force_resume=1) or the lint settings")
    return data


def _run_commit(run: PhaseRun) -> dict[str, bytes]:
    if not run.inp["lint_report"].passed:
        raise PhaseFailed("lint did not pass", path=run.files.inputs["lint_report"])
    return phases.commit(run.inp["state"], run.inp["state_patch"], run.scene.id)


def _run_llm(run: PhaseRun) -> dict[str, bytes]:
    """Every LLM phase: render its templates, ask the model for its answer model, split."""
    from pipeline.core.rendering import render_messages

    book, scene, phase, task_id = run.book, run.scene, run.phase, run.task_id
    inp, files, values, rv = run.inp, run.files, run.values, run.rv
    ctx = phases.prompt_context(book, scene, phase, inp)
    messages = render_messages(files.templates["system"], files.templates["phase"], ctx)
    prompt_hash = hash_json(messages)
    changes = changed_templates(run.prev.get("template_set"), run.templates_now)
    if changes:
        for ch in changes:
            ch.tasks.append(task_id)
        require_prompt_change_allowed(changes, rv)
        values["prompt_update"] = {
            "prompt_hash_prev": run.prev.get("prompt_hash"), "prompt_hash_new": prompt_hash,
            "prompt_update_reason": rv.reason, "timestamp": now_iso(),
            "templates": [{"path": c.path, "hash_prev": c.old_hash, "hash_new": c.new_hash}
                          for c in changes]}
    elif run.prev.get("prompt_update"):
        values["prompt_update"] = run.prev["prompt_update"]

    model = book.config.model
    params = {"temperature": model.temperature, "max_tokens": model.max_tokens,
              "seed": model.seed}
    schema = phases.schema_for(phase, scene, inp, model.max_tokens)
    attempt = run.db.attempt(task_id)
    request = LLMRequest(provider=model.provider, model=model.model, messages=tuple(messages),
                         params=params, output_schema=schema, attempt=attempt)
    response = llm_client(book, rv).complete(
        request, CallContext(run=book.name, task=task_id, unit=scene.id, step=phase),
        validate=phases.output_validator(phase, inp))
    values.update(
        prompt_hash=prompt_hash, attempt=attempt,
        template_set={role: {"path": t["path"], "hash": t["hash"]}
                      for role, t in run.templates_now.items()},
        llm={"request_hash": response.request_hash, "cache": response.cache,
             "provider": response.provider, "model": response.model,
             "tokens_in": response.tokens_in, "tokens_out": response.tokens_out,
             "cost_usd": response.cost_usd, "latency_ms": round(response.latency_ms, 1),
             "seed": response.seed})
    data = phases.split_output(phase, response.data)
    data["prompt"] = phases.prompt_artifact(messages, params, schema, attempt)
    data["response"] = phases.response_artifact(response.request_hash, response.provider,
                                                response.model, response.text)
    return data


# The table's ``run`` -> its step (tests/book/test_phase_table.py checks every one exists).
STEPS: dict[str, Callable[[PhaseRun], dict[str, bytes]]] = {
    "llm": _run_llm, "preflight": _run_preflight, "lint": _run_lint, "commit": _run_commit,
}


def llm_stats() -> dict:
    """Totals of this process's LLM calls, plus requests now waiting in backoff."""
    total = {"calls": 0, "hits": 0, "misses": 0, "tokens_in": 0, "tokens_out": 0,
             "cost_usd": 0.0, "cost_avoided_usd": 0.0, "waiting_backoff": 0}
    with _clients_lock:
        clients = list(_clients.values())
    for client in clients:
        for key, value in client.stats.items():
            total[key] += value
        for provider in client.providers.values():
            limiter = getattr(provider, "limiter", None)
            if limiter is not None:
                total["waiting_backoff"] += limiter.waiting_backoff
    return total
