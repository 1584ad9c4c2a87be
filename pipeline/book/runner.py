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
    prompt_update_reason,
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
from pipeline.core.store import atomic_write_many, dump_json
from pipeline.llm import CallContext, LLMClient, LLMRequest, build_client
from pipeline.llm.client import LLMOutputError

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
    """Lint the prose and patch; an error left on them sends them back through the repair
    and state_repair prompts, with the findings, at most ``lint.repair_rounds`` times. The
    outputs hold the final prose and patch (its inputs' when no round was needed), every
    round (rounds.json) and the report. What survives fails the scene in one line."""
    book, scene, inp, files = run.book, run.scene, run.inp, run.files
    rules = book.config.lint
    card, state = inp["scene_card"], inp["state"]
    prose, patch = inp["prose"], inp["state_patch"]
    _record_templates(run)
    report = phases.lint(book, scene.id, card, state, prose, patch)
    rounds: list[dict] = []
    sent: list[list[dict]] = []  # every round's prompts: the phase's prompt hash
    max_tokens = book.config.model.max_tokens
    while _errors(report) and len(rounds) < rules.repair_rounds:
        errors = _errors(report)
        if not all(phases.repairable(f) for f in errors):
            break  # a finding on the scene card: repairing the prose cannot change it
        if any(f.rule == "min_words" for f in errors) \
                and not phases.words_reachable(rules, max_tokens):
            break  # no answer of max_tokens holds that many words: the setting must change
        number = len(rounds) + 1
        entry: dict = {"round": number, "findings": [_finding(f) for f in errors]}
        rounds.append(entry)
        draft = {"scene_card": card, "pack": inp["pack"], "state": state, "prose": prose,
                 "state_patch": patch}
        try:
            repaired, messages, _, _ = _ask(run, "repair", draft, errors, number)
            sent.append(messages)
            entry["repair"] = _llm_record(repaired)
            fix = [f for f in errors if f.field and f.field.startswith("state_patch")]
            checked = {"state": state, "prose": repaired.data.prose,
                       "state_patch": repaired.data.state_patch}
            fixed, messages, _, _ = _ask(run, "state_repair", checked, fix, number)
            sent.append(messages)
            entry["state_repair"] = _llm_record(fixed)
        except LLMOutputError as exc:  # no valid answer within the re-asks: the round ends
            entry["error"] = str(exc)
            break
        prose, patch = repaired.data.prose.strip() + "\n", fixed.data.state_patch
        report = phases.lint(book, scene.id, card, state, prose, patch)
        entry["remaining"] = [_finding(f) for f in _errors(report)]
    _settle_prompt_hash(run.values, hash_json(sent))
    run.values["rounds"] = rounds
    if sent:
        run.values["llm"] = _rounds_total(rounds, book)
    data = {"prose": (prose.strip() + "\n").encode(),
            "state_patch": dump_json(patch.model_dump()).encode(),
            "rounds": dump_json(rounds).encode(),
            "report": (report.model_dump_json(indent=2) + "\n").encode()}
    if not report.passed:
        # the report and the rounds are the user's answer to "why": on disk although the
        # phase fails (lint is their one writer; the next run writes them again)
        write_outputs(run.db, run.task_id, files.outputs, data)
        raise _lint_failure(run, _errors(report), len(rounds))
    return data


def _errors(report) -> list:
    return [f for f in report.findings if f.severity == "error"]


def _finding(f) -> dict:
    return {"rule": f.rule, "field": f.field, "message": f.message}


def _lint_failure(run: PhaseRun, errors: list, rounds: int) -> PhaseFailed:
    """One line: the scene, the first error's field and message, and the command that
    fixes it (a new sample, or a hand edit accepted) or accepts it (the lint setting)."""
    sid, first = run.scene.id, errors[0]
    more = f" (and {len(errors) - 1} more in the report)" if len(errors) > 1 else ""
    after = f", left after {rounds} repair round(s)" if rounds else ""
    draft = run.book.draft.as_posix()
    if phases.repairable(first):
        made = "state_repair" if (first.field or "").startswith("state_patch") else "repair"
        part = "state_patch.json" if made == "state_repair" else "prose.md"
        fix = (f"doit rerun-from {made}:{sid} asks the model again, or edit "
               f"{draft}/scenes/{sid}/{made}/{part} and run doit force_resume=1")
    else:
        fix = (f"doit rerun-from plan:{sid} asks for a new card, or edit "
               f"{draft}/scenes/{sid}/plan/scene_card.json and run doit force_resume=1")
    setting = {"min_words": "lint.min_words", "max_words": "lint.max_words",
               "forbidden": "lint.forbidden"}.get(first.rule)
    if setting:
        fix += f"; or change {setting} in book.json to accept it"
    return PhaseFailed(f"lint failed: scene {sid}: {first.message}{after}{more}",
                       path=run.files.outputs["report"], field=first.field, fix=fix)


def _llm_record(response) -> dict:
    """What the ledger keeps of one answer: where it came from, its tokens, every try."""
    return {"request_hash": response.request_hash, "cache": response.cache,
            "provider": response.provider, "model": response.model,
            "tokens_in": response.tokens_in, "tokens_out": response.tokens_out,
            "cost_usd": response.cost_usd, "latency_ms": round(response.latency_ms, 1),
            "seed": response.seed, "tries": response.history}


def _rounds_total(rounds: list[dict], book: Book) -> dict:
    """Lint's LLM totals over its repair rounds (the ledger's and the report's view)."""
    asked = [r[k] for r in rounds for k in ("repair", "state_repair") if k in r]
    model = book.config.model
    return {"provider": model.provider, "model": model.model,
            "cache": "hit" if all(a["cache"] == "hit" for a in asked) else "miss",
            "calls": len(asked),
            "tokens_in": sum(a["tokens_in"] for a in asked),
            "tokens_out": sum(a["tokens_out"] for a in asked),
            "cost_usd": sum(a["cost_usd"] for a in asked),
            "latency_ms": round(sum(a["latency_ms"] for a in asked), 1)}


def _run_commit(run: PhaseRun) -> dict[str, bytes]:
    if not run.inp["lint_report"].passed:
        raise PhaseFailed("lint did not pass", path=run.files.inputs["lint_report"])
    return phases.commit(run.inp["state"], run.inp["state_patch"], run.scene.id)


def _record_templates(run: PhaseRun) -> None:
    """Record the templates the phase renders, refusing changed ones unless allowed (the
    guard stopped the run before any call; a named task's chain is checked here too)."""
    changes = changed_templates(run.prev.get("template_set"), run.templates_now)
    values = run.values
    if changes:
        for ch in changes:
            ch.tasks.append(run.task_id)
        require_prompt_change_allowed(changes, run.rv)
        values["prompt_update"] = {
            "prompt_hash_prev": run.prev.get("prompt_hash"), "prompt_hash_new": None,
            "prompt_update_reason": prompt_update_reason(changes, run.rv),
            "timestamp": now_iso(),
            "templates": [{"path": c.path, "hash_prev": c.old_hash, "hash_new": c.new_hash}
                          for c in changes]}
    elif run.prev.get("prompt_update"):
        values["prompt_update"] = run.prev["prompt_update"]
    values["attempt"] = run.db.attempt(run.task_id)
    values["template_set"] = {role: {"path": t["path"], "hash": t["hash"]}
                              for role, t in run.templates_now.items()}


# A lint round's requests get seeds of their own (and of each other): a deterministic
# server would otherwise give the same answer the phase it repeats gave.
_ROUND_SEED_SALT = {"repair": 1, "state_repair": 2}


def phase_request(book: Book, scene: OutlineScene, phase: str, inp: dict,
                  templates: dict[str, str], attempt: int, *, role: str = "phase",
                  findings: list | None = None, round_number: int = 0) -> LLMRequest:
    """The request an LLM phase sends for its loaded inputs ``inp``: its templates rendered
    (``templates``: role -> file, ``role`` the phase's own; lint asks ``repair`` and
    ``state_repair`` under their names), the book's model settings, its answer's schema.
    A lint round's ``findings`` go to the model as a last message, with a seed of its own."""
    from pipeline.core.rendering import render_messages
    from pipeline.llm.request import derive_seed

    ctx = phases.prompt_context(book, scene, phase, inp)
    messages = render_messages(templates["system"], templates[role], ctx)
    if findings:
        messages.append(phases.findings_message(findings))
    model = book.config.model
    seed = model.seed
    if round_number:
        seed = derive_seed(model.seed, 0, 1000 * round_number + _ROUND_SEED_SALT[phase])
    params = {"temperature": model.temperature, "max_tokens": model.max_tokens, "seed": seed}
    schema = phases.schema_for(phase, scene, inp, model.max_tokens, book.config.lint)
    return LLMRequest(provider=model.provider, model=model.model, messages=tuple(messages),
                      params=params, output_schema=schema, attempt=attempt)


def _ask(run: PhaseRun, phase: str, inp: dict, findings: list | None = None,
         round_number: int = 0):
    """Ask ``phase``'s prompt (the run's own phase, or one a code phase ``asks`` again) for
    ``inp``. Returns the validated response and what was sent: messages, parameters,
    output schema."""
    book, scene = run.book, run.scene
    request = phase_request(book, scene, phase, inp, run.files.templates,
                            run.values.get("attempt", 0),
                            role="phase" if run.spec.name == phase else phase,
                            findings=findings, round_number=round_number)
    model = book.config.model
    response = llm_client(book, run.rv).complete(
        request, CallContext(run=book.name, task=call_task(book, run.task_id), unit=scene.id,
                             step=run.phase),
        validate=phases.output_validator(phase, inp, book.config.lint, model.max_tokens))
    return response, list(request.messages), request.params, request.output_schema


def _settle_prompt_hash(values: dict, prompt_hash: str) -> None:
    """The phase's prompt hash, and the new one of a prompt change it accepted."""
    values["prompt_hash"] = prompt_hash
    update = values.get("prompt_update")
    if update and update.get("prompt_hash_new") is None:
        update["prompt_hash_new"] = prompt_hash


def _run_llm(run: PhaseRun) -> dict[str, bytes]:
    """Every LLM phase: render its templates, ask the model for its answer model, split."""
    _record_templates(run)
    response, messages, params, schema = _ask(run, run.phase, run.inp)
    values = run.values
    _settle_prompt_hash(values, hash_json(messages))
    values["llm"] = _llm_record(response)
    data = phases.split_output(run.phase, response.data)
    data["prompt"] = phases.prompt_artifact(messages, params, schema, values["attempt"])
    data["response"] = phases.response_artifact(response.request_hash, response.provider,
                                                response.model, response.text)
    return data


def call_task(book: Book, task_id: str) -> str:
    """A phase's task as the call log names it: a try's calls are ``try:NAME/PHASE:SCENE``
    (its answers serve the book as well: the request is the same)."""
    return f"try:{book.side}/{task_id}" if book.side else task_id


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
