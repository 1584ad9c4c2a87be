"""The actions of the L7 doit tasks: one function per stage, run through :func:`run`.

Each stage reads its inputs from work files (or the validated session), writes its
outputs with :func:`files.write_if_changed`, and returns the values doit records
(timings, which the runtime log reads back). Every error is one line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from doit.exceptions import TaskFailed

from pipeline.core import builddb
from pipeline.core.clock import now_iso_ms as utc_timestamp
from pipeline.core.errors import UserError
from pipeline.core.store import dump_json
from pipeline.llm import CallContext, read_calls

from . import (
    candidates,
    continuity,
    export,
    gate_keep,
    gates,
    llm,
    revision,
    scoring,
    selection,
)
from .context import neighbours, scene_context, write_slices
from .contracts import OUTPUT_FILES, ScoreSpec
from .files import load, write_if_changed
from .session import RunConfig, Session, session_for


class GateFailed(UserError):
    """A gate's checks failed; its report is written (exit code 1)."""


def run(cfg: RunConfig, stage: str, task: str, *args: str):
    """doit action: run ``stage`` for this config; values on success, TaskFailed if not."""
    started, t0 = utc_timestamp(), time.perf_counter()
    try:
        session = session_for(cfg)
        extra = STAGES[stage](session, task, *args) or {}
    except UserError as exc:
        failed = TaskFailed(str(exc))
        # the runner's result carries the kind: a failed gate is exit 1, the rest exit 2
        failed.kind = "gate" if isinstance(exc, GateFailed) else "error"
        return failed
    return {"started_at": started, "finished_at": utc_timestamp(),
            "elapsed_s": round(time.perf_counter() - t0, 4), **extra}


def _call(session: Session, task: str, sid: str, phase: str) -> CallContext:
    return CallContext(run=session.session_id, task=task, unit=sid, step=phase)


def _client(session: Session):
    return llm.client(session.cfg.state_dir, session.objective, session.cfg.session_objective)


def _spec(session: Session) -> ScoreSpec:
    return ScoreSpec.model_validate(load(session.layout.score_spec))


def _view(session: Session, sid: str) -> dict | None:
    lay = session.layout
    if sid in session.active:
        return load(lay.scene(sid, "selection"))["view"]
    return load(lay.scene(sid, "base_selection"))["view"]


# -- stages ----------------------------------------------------------------------------
def gate_in(session: Session, task: str) -> None:
    lay = session.layout
    checks = gates.gate_in_checks(session)
    report = {"schema_version": "l7.gate_in_report.v1", "session_id": session.session_id,
              "objective_id": session.objective_id, "status": gates.status(checks),
              "inputs": {k: v.model_dump() for k, v in session.inputs.items()},
              "policy": session.policy.model_dump(), "checks": checks}
    write_if_changed(lay.gate_in_report, report)
    if report["status"] == "failed":
        _publish_gate_in_failure(session, task, report)
        first = next(c for c in checks if c["status"] == "failed")
        raise GateFailed(f"Gate-In failed: {first['id']}: {first['detail']}",
                         path=str(Path(session.cfg.out_dir) / "gate_in_report.json"))
    model = session.model
    write_if_changed(lay.generation, {
        "model": {"provider": model.provider, "model": model.model,
                  "temperature": model.temperature, "max_tokens": model.max_tokens,
                  "seed": model.seed},
        "candidates_per_scene": session.candidates_per_scene})
    write_if_changed(lay.score_spec, session.spec.model_dump())
    write_if_changed(lay.rubric, scoring.rubric(session.spec))


def _publish_gate_in_failure(session: Session, task: str, report: dict) -> None:
    now = utc_timestamp()
    runtime = export.runtime_log(session, [task], lambda _: {
        "started_at": now, "finished_at": now, "elapsed_s": 0.0}, [])
    files = {"gate_in_report.json": dump_json(report).encode("utf-8")}
    files = export.finish_set(session, files, "gate_in", {"scenes": len(session.order)},
                              runtime)
    export.publish_set(session.cfg.out_dir, files)


def context(session: Session, task: str, sid: str) -> None:
    write_if_changed(session.layout.scene(sid, "context"), scene_context(session, sid))
    write_if_changed(session.layout.scene(sid, "neighbours"), neighbours(session, sid))


def generate(session: Session, task: str, sid: str) -> None:
    lay = session.layout
    ctx, gen = load(lay.scene(sid, "context")), load(lay.generation)
    generation = session.generations[sid]
    cands = candidates.generate(ctx, gen["model"], gen["candidates_per_scene"], generation,
                                _client(session), _call(session, task, sid, "candidates"))
    write_if_changed(lay.scene(sid, "candidates"),
                     {"scene_id": sid, "generation": generation, "candidates": cands})


def judge(session: Session, task: str, sid: str) -> None:
    lay = session.layout
    ctx, gen = load(lay.scene(sid, "context")), load(lay.generation)
    criteria = load(lay.rubric)
    client, call = _client(session), _call(session, task, sid, "judge")
    out = {c["candidate_id"]: scoring.judge(ctx, c, criteria, gen["model"], client, call)
           for c in load(lay.scene(sid, "candidates"))["candidates"]}
    write_if_changed(lay.scene(sid, "judgements"), {"scene_id": sid, "judgements": out})


def score(session: Session, task: str, sid: str) -> None:
    lay = session.layout
    ctx, spec = load(lay.scene(sid, "context")), _spec(session)
    judgements = load(lay.scene(sid, "judgements"))["judgements"]
    evals = [scoring.evaluate(spec, ctx, c, judgements.get(c["candidate_id"], {}))
             for c in load(lay.scene(sid, "candidates"))["candidates"]]
    write_if_changed(lay.scene(sid, "scores"), {"scene_id": sid, "evaluations": evals})


def select(session: Session, task: str, sid: str) -> None:
    lay = session.layout
    cands = {c["candidate_id"]: c for c in load(lay.scene(sid, "candidates"))["candidates"]}
    evals = load(lay.scene(sid, "scores"))["evaluations"]
    rnd = selection.select(evals)
    by_id = {e["candidate_id"]: e for e in evals}
    view = selection.view(cands.get(rnd["winner"]), by_id.get(rnd["winner"]))
    write_if_changed(lay.scene(sid, "selection"), {"scene_id": sid, "round": rnd, "view": view})


def base(session: Session, task: str) -> None:
    assert session.base_pack is not None
    entries = {s.scene_id: s.model_dump() for s in session.base_pack.scenes}
    for sid in session.merged:
        e = entries[sid]
        view = None if e["prompt"] is None else {
            "candidate_id": e["candidate_id"], "draft": e["draft"], "prompt": e["prompt"],
            "negative_prompt": e["negative_prompt"], "generation": e["generation"],
            "weighted_score": e["weighted_score"],
            "hard_constraints_passed": e["hard_constraints_passed"]}
        write_if_changed(session.layout.scene(sid, "base_selection"),
                         {"scene_id": sid, "source": "base_pack", "entry": e, "view": view})


def audit(session: Session, task: str, a: str, b: str) -> None:
    lay = session.layout
    result = continuity.audit_pair(load(lay.scene(a, "context")), _view(session, a),
                                   load(lay.scene(b, "context")), _view(session, b))
    write_if_changed(lay.pair(a, b), result)


def revise(session: Session, task: str, sid: str) -> None:
    lay = session.layout
    sel = load(lay.scene(sid, "selection"))
    near = load(lay.scene(sid, "neighbours"))
    around = [(rel, near[key]) for rel, key in (("previous", "prev"), ("next", "next"))
              if near[key]]
    pairs = [load(lay.pair(*sorted_pair(session, sid, n))) for _, n in around]
    findings = continuity.scene_findings(pairs, sid)
    result = {"scene_id": sid, "revised": False, "findings": findings, "candidate": None,
              "evaluation": None, "round": None, "status": sel["round"]["status"],
              "final": sel["view"]}
    if findings and sel["view"] is not None:
        ctx, gen, spec = load(lay.scene(sid, "context")), load(lay.generation), _spec(session)
        client, call = _client(session), _call(session, task, sid, "revision")
        cand = revision.revise(ctx, sel["view"], findings, gen["model"],
                               session.generations[sid], client, call)
        ev = revision.rescore(spec, ctx, cand, load(lay.rubric), gen["model"], client, call)
        cands = load(lay.scene(sid, "candidates"))["candidates"]
        evals = load(lay.scene(sid, "scores"))["evaluations"]
        others = [load(lay.scene(n, "context")) for _, n in around]
        rnd = revision.reselect(ctx, cands, evals, cand, ev, others)
        by_id = {c["candidate_id"]: c for c in [*cands, cand]}
        ev_by_id = {e["candidate_id"]: e for e in [*evals, ev]}
        final = sel["view"]
        if rnd["winner"]:
            final = selection.view(by_id[rnd["winner"]], ev_by_id[rnd["winner"]])
        result.update(revised=True, candidate=cand, evaluation=ev, round=rnd,
                      status="revised" if rnd["winner"] else "selected", final=final)
    write_if_changed(lay.scene(sid, "revision"), result)


def sorted_pair(session: Session, a: str, b: str) -> tuple[str, str]:
    """(earlier, later) in session order."""
    order = session.order
    return (a, b) if order.index(a) < order.index(b) else (b, a)


def export_docs(session: Session, task: str) -> None:
    for name, doc in export.documents(session).items():
        write_if_changed(session.layout.out(name), doc)


def gate_out(session: Session, task: str) -> dict:
    docs = {name: load(session.layout.out(name)) for name in gates.GATE_OUT_DOCS
            if name != "gate_in_report.json"}
    docs["gate_in_report.json"] = load(session.layout.gate_in_report)
    # only the scenes whose outputs moved are validated again (gate_keep.py says why)
    errors, kept = gate_keep.schema_errors(docs, session.layout.gate_out_keep)
    checks = gates.gate_out_checks(session, docs, errors)
    write_if_changed(session.layout.out("gate_out_report.json"), {
        "schema_version": "l7.gate_out_report.v1", "session_id": session.session_id,
        "objective_id": session.objective_id, "status": gates.status(checks),
        "checks": checks})
    return {"gate_out": kept.as_values()}


def publish(session: Session, task: str, *task_names: str) -> None:
    lay = session.layout
    files: dict[str, bytes] = {}
    for name in OUTPUT_FILES:
        if name == "gate_in_report.json":
            files[name] = lay.gate_in_report.read_bytes()
        elif name not in ("runtime_log_l7.json", "session_output.json"):
            files[name] = lay.out(name).read_bytes()
    report = json.loads(files["gate_out_report.json"])
    cont = json.loads(files["continuity_audit_prompt.json"])
    pack = json.loads(files["prompt_map_pack.json"])
    cands = json.loads(files["candidates_prompt.json"])
    counts = {"scenes": len(pack["scenes"]), "generated_scenes": len(session.active),
              "merged_scenes": len(session.merged),
              "candidates": sum(len(s["candidates"]) for s in cands["scenes"]),
              "revised_scenes": len(cont["revised_scenes"]),
              "rejected_scenes": sum(1 for s in pack["scenes"] if s["status"] == "rejected"),
              "continuity_errors_remaining": cont["remaining_errors"]}
    failed = report["status"] == "failed"
    runtime = export.runtime_log(session, list(task_names), builddb.current().values,
                                 read_calls(Path(session.cfg.state_dir) / "llm_calls.jsonl"))
    files = export.finish_set(session, files, "gate_out" if failed else None, counts, runtime)
    export.publish_set(session.cfg.out_dir, files)
    if failed:
        first = next(c for c in report["checks"] if c["status"] == "failed")
        raise GateFailed(f"Gate-Out failed: {first['id']}: {first['detail']}",
                         path=str(Path(session.cfg.out_dir) / "gate_out_report.json"))


STAGES = {"gate_in": gate_in, "slices": write_slices, "context": context,
          "candidates": generate, "judge": judge, "score": score, "select": select,
          "base": base, "audit": audit, "revise": revise, "export": export_docs,
          "gate_out": gate_out, "publish": publish}
