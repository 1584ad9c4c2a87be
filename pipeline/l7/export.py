"""Stage 8, export: the spec's output documents, the runtime log, and publishing the set.

The out-dir is replaced as a whole: the full set is written to a hidden sibling folder,
then the folders are swapped with two renames. A run cut short while writing leaves the
old set untouched; one cut between the renames leaves the old set beside it, which the
next run puts back before it starts. Readers never see a mix of old and new files.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_bytes, hash_file
from pipeline.core.jsonio import display_path, load_json
from pipeline.core.store import atomic_write_bytes, dump_json, sync_dir

from . import continuity, selection
from .contracts import OUTPUT_FILES, check_schema
from .files import load
from .session import Session

STAGE_OF = {"l7_gate_in": "gate_in", "l7_context": "context", "l7_candidates": "candidates",
            "l7_judge": "scoring", "l7_score": "scoring", "l7_select": "selection",
            "l7_base": "merge_base", "l7_audit": "continuity_audit", "l7_revise": "revision",
            "l7_export": "export", "l7_gate_out": "gate_out"}
STAGES = list(dict.fromkeys(STAGE_OF.values()))


# -- documents -------------------------------------------------------------------------
def final_views(session: Session) -> dict[str, dict | None]:
    """The prompt each scene ends with: after revision, or as merged from the base pack."""
    lay = session.layout
    views = {}
    for sid in session.order:
        if sid in session.active:
            views[sid] = load(lay.scene(sid, "revision"))["final"]
        else:
            views[sid] = load(lay.scene(sid, "base_selection"))["view"]
    return views


def documents(session: Session) -> dict[str, dict]:
    """The six exported documents, from the work files of this session."""
    lay, sid_order = session.layout, session.order
    head = {"session_id": session.session_id, "objective_id": session.objective_id}
    ctxs = {sid: load(lay.scene(sid, "context")) for sid in sid_order}
    cand_scenes, eval_scenes, traces = [], [], []
    revisions = {}
    for sid in session.active:
        cands = load(lay.scene(sid, "candidates"))["candidates"]
        evals = load(lay.scene(sid, "scores"))["evaluations"]
        initial = load(lay.scene(sid, "selection"))["round"]
        rev = revisions[sid] = load(lay.scene(sid, "revision"))
        rounds = [initial]
        if rev["revised"]:
            cands = [*cands, rev["candidate"]]
            evals = [*evals, rev["evaluation"]]
            rounds.append(rev["round"])
        cand_scenes.append({"scene_id": sid, "candidates": cands})
        eval_scenes.append({"scene_id": sid, "evaluations": evals})
        final = rev["final"]
        traces.append({"scene_id": sid, "status": rev["status"],
                       "winner": final["candidate_id"] if final else None, "rounds": rounds})

    views = final_views(session)
    pairs = []
    for a, b in session.pairs():
        initial = load(lay.pair(a, b))
        remaining = continuity.audit_pair(ctxs[a], views[a], ctxs[b], views[b])
        pairs.append({"pair": [a, b], "findings": initial["findings"],
                      "remaining": remaining["findings"]})
    with_findings = sorted({f["scene_id"] for p in pairs for f in p["findings"]},
                           key=sid_order.index)

    pack_scenes = []
    for sid in sid_order:
        if sid in session.active:
            view, status = views[sid], revisions[sid]["status"]
            pack_scenes.append({
                "scene_id": sid, "title": ctxs[sid]["scene"]["title"], "source": "generated",
                "generation": session.generations[sid], "status": status,
                "candidate_id": view["candidate_id"] if view else None,
                "prompt": view["prompt"] if view else None,
                "negative_prompt": view["negative_prompt"] if view else None,
                "draft": view["draft"] if view else None,
                "weighted_score": view["weighted_score"] if view else None,
                "hard_constraints_passed": bool(view and view["hard_constraints_passed"]),
                "context_blake3": hash_file(str(lay.scene(sid, "context")))})
        else:
            pack_scenes.append(load(lay.scene(sid, "base_selection"))["entry"])
    policy = session.policy
    pack = {"schema_version": "l7.prompt_map_pack.v1", **head,
            "style_preset": session.objective.style_preset.model_dump(),
            "score_spec": policy.score_spec.model_dump(), "pipeline_env": policy.pipeline_env,
            "scenes": pack_scenes}

    scenes_v2 = copy.deepcopy(session.scenes_raw)
    entries = {s["scene_id"]: s for s in pack_scenes}
    for scene in scenes_v2["scenes"]:
        e = entries[scene["scene_id"]]
        scene["prompt_map"] = {"candidate_id": e["candidate_id"], "prompt": e["prompt"],
                               "negative_prompt": e["negative_prompt"], "status": e["status"],
                               "weighted_score": e["weighted_score"], "source": e["source"],
                               "generation": e["generation"]}
    scenes_v2["session_id"] = session.session_id
    scenes_v2["l7"] = {**head, "source_session_id": session.scenes_v2.session_id,
                       "prompt_map_pack": "prompt_map_pack.json",
                       "pack_blake3": hash_bytes(dump_json(pack).encode("utf-8"))}
    merged = session.merged
    return {
        "candidates_prompt.json": {"schema_version": "l7.candidates_prompt.v1", **head,
                                   "merged_from_base": merged, "scenes": cand_scenes},
        "evaluation_report_prompt.json": {
            "schema_version": "l7.evaluation_report_prompt.v1", **head,
            "score_spec": policy.score_spec.model_dump(),
            "min_weighted_score": session.spec.min_weighted_score, "scenes": eval_scenes},
        "selection_trace_prompt.json": {"schema_version": "l7.selection_trace_prompt.v1",
                                        **head, "tie_break": selection.TIE_BREAK,
                                        "merged_from_base": merged, "scenes": traces},
        "continuity_audit_prompt.json": {
            "schema_version": "l7.continuity_audit_prompt.v1", **head, "pairs": pairs,
            "scenes_with_findings": with_findings,
            "revised_scenes": [s for s in session.active if revisions[s]["revised"]],
            "remaining_errors": sum(1 for p in pairs for f in p["remaining"]
                                    if f["severity"] == "error")},
        "prompt_map_pack.json": pack,
        "scenes_v2.json": scenes_v2,
    }


# -- runtime log -----------------------------------------------------------------------
def _zero(stage: str) -> dict:
    return {"stage": stage, "tasks": 0, "elapsed_s": 0.0, "llm_calls": 0, "cache_hits": 0,
            "cache_misses": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}


def runtime_log(session: Session, task_names: list[str], values_of: Callable[[str], dict],
                calls: list[dict]) -> dict:
    """Per stage: time, LLM calls, cache hits, tokens and cost of the tasks that built
    these outputs, from their recorded timings and the call log lines inside them."""
    mine: dict[str, list[dict]] = {}
    for c in calls:
        if c.get("book") == session.session_id:
            mine.setdefault(c.get("task", ""), []).append(c)
    stages = {s: _zero(s) for s in STAGES}
    tasks = []
    for name in task_names:
        stage = STAGE_OF.get(name.partition(":")[0])
        if stage is None:
            continue
        v = values_of(name) or {}
        start, end = v.get("started_at"), v.get("finished_at")
        lines = [c for c in mine.get(name, [])
                 if start and end and start <= c.get("timestamp", "") <= end]
        row = {"task": name, "stage": stage, "started_at": start, "finished_at": end,
               "elapsed_s": float(v.get("elapsed_s", 0.0)), "llm_calls": len(lines),
               "cache_hits": sum(1 for c in lines if c.get("cache") == "hit"),
               "tokens_in": sum(int(c.get("tokens_in", 0)) for c in lines),
               "tokens_out": sum(int(c.get("tokens_out", 0)) for c in lines),
               "cost_usd": round(sum(float(c.get("cost_usd", 0.0)) for c in lines), 6)}
        tasks.append(row)
        agg = stages[stage]
        agg["tasks"] += 1
        for key in ("elapsed_s", "llm_calls", "cache_hits", "tokens_in", "tokens_out",
                    "cost_usd"):
            agg[key] += row[key]
        agg["cache_misses"] = agg["llm_calls"] - agg["cache_hits"]
    total = _zero("total")
    for agg in stages.values():
        agg["elapsed_s"] = round(agg["elapsed_s"], 4)
        agg["cost_usd"] = round(agg["cost_usd"], 6)
        for key in total:
            if key != "stage":
                total[key] += agg[key]
    total["elapsed_s"] = round(total["elapsed_s"], 4)
    total["cost_usd"] = round(total["cost_usd"], 6)
    return {"schema_version": "l7.runtime_log.v1", "session_id": session.session_id,
            "objective_id": session.objective_id,
            "note": "per task, its latest execution as of when this output set was "
                    "published; a task that was up to date keeps the figures of the run "
                    "that built it",
            "stages": list(stages.values()), "totals": total, "tasks": tasks}


def session_output(session: Session, failed_gate: str | None, files: dict[str, bytes],
                   counts: dict[str, int]) -> dict:
    """``session_output.json``: the run's outcome, its policy record and its outputs."""
    return {"schema_version": "l7.session_output.v1", "session_id": session.session_id,
            "objective_id": session.objective_id,
            "status": "gate_failed" if failed_gate else "success",
            "exit_code": 1 if failed_gate else 0, "failed_gate": failed_gate,
            "mode": "partial" if session.cfg.partial else "full",
            "policy": session.policy.model_dump(), "counts": counts,
            "outputs": {name: {"blake3": hash_bytes(data)} for name, data in files.items()}}


def finish_set(session: Session, files: dict[str, bytes], failed_gate: str | None,
               counts: dict[str, int], runtime: dict) -> dict[str, bytes]:
    """Add the runtime log and the session output to ``files`` (checked against schemas)."""
    files = dict(files)
    check_schema(runtime, "runtime_log", "runtime_log_l7.json")
    files["runtime_log_l7.json"] = dump_json(runtime).encode("utf-8")
    out = session_output(session, failed_gate, files, counts)
    check_schema(out, "session_output", "session_output.json")
    files["session_output.json"] = dump_json(out).encode("utf-8")
    return files


# -- publishing ------------------------------------------------------------------------
def _siblings(out_dir: Path) -> tuple[Path, Path]:
    return (out_dir.parent / f".{out_dir.name}.l7-staging",
            out_dir.parent / f".{out_dir.name}.l7-old")


def _remove(path: Path) -> None:
    # A link left by an older version (an out-dir that was a link) goes, not its target.
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def recover(out_dir: Path) -> None:
    """Finish or undo a publication cut short: never leave the out-dir missing or mixed."""
    staging, old = _siblings(out_dir)
    if not os.path.lexists(out_dir) and old.is_dir():
        os.rename(old, out_dir)  # cut between the two renames: the old set comes back
    for leftover in (staging, old):
        if os.path.lexists(leftover):
            try:
                _remove(leftover)
            except OSError as exc:
                raise UserError(f"cannot remove what an earlier run left ({exc.strerror or exc})",
                                path=display_path(leftover),
                                fix="remove it by hand, then run again") from None


def check_out_dir(out_dir: str | os.PathLike, inputs: list[str] | tuple = ()) -> None:
    """The out-dir is a folder (or absent) holding nothing but L7 outputs, and none of
    this run's ``inputs`` (replacing the folder would replace them)."""
    path = Path(out_dir)
    for inp in inputs:
        if os.path.realpath(os.path.dirname(os.path.abspath(inp))) == os.path.realpath(path):
            raise UserError(f"--out-dir holds {display_path(inp)}, an input of this run; "
                            "the folder is replaced as a whole", path=display_path(path),
                            fix="write the outputs to another folder (e.g. l7_rerun_output)")
    if path.is_symlink():
        # the folder is replaced as a whole by renames: they would replace the link, and the
        # folder it points to would keep the old set
        raise UserError("--out-dir is a symbolic link; the out-dir is replaced as a whole",
                        path=display_path(path),
                        fix=f"pass the folder it points to ({display_path(path.resolve())})")
    if path.exists() and not path.is_dir():
        raise UserError("--out-dir is a file, not a folder", path=display_path(path),
                        fix="choose a folder for the outputs")
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in OUTPUT_FILES)
        if foreign:
            raise UserError(f"--out-dir holds files that are not L7 outputs "
                            f"({', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); "
                            "it is replaced as a whole", path=display_path(path),
                            fix="choose an empty folder or an earlier L7 output folder")


def check_no_hand_edits(out_dir: Path) -> None:
    """Refuse to replace an output that changed since the run that wrote it.

    ``session_output.json`` holds the blake3 of every other output of its set: a file that
    no longer matches was edited by hand, and replacing the set would silently lose it.
    """
    try:
        recorded = load_json(out_dir / "session_output.json")
        outputs = recorded["outputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no set of ours to protect
    for name, ref in outputs.items():
        path = out_dir / name
        if name in OUTPUT_FILES and path.is_file() and hash_file(str(path)) != ref.get("blake3"):
            raise UserError(f"{name} was changed since the run that wrote it, and the "
                            "out-dir is replaced as a whole", path=display_path(path),
                            fix="move the edited file elsewhere (or delete it) and run again")


def publish_set(out_dir: str | os.PathLike, files: dict[str, bytes]) -> None:
    """Replace the out-dir by exactly ``files`` (name -> content), all or nothing."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out)
    check_out_dir(out)
    check_no_hand_edits(out)
    staging, old = _siblings(out)
    staging.mkdir()
    for name, data in files.items():
        atomic_write_bytes(staging / name, data)
    if out.exists():
        os.rename(out, old)
        os.rename(staging, out)
        _remove(old)
    else:
        os.rename(staging, out)
    sync_dir(out.parent)
