"""Gate-In and Gate-Out: the checks and their reports.

Contract errors (a missing file, bad JSON, a schema violation, a refused policy) never
reach a report: they stop the run before it starts, with one line and exit code 2. The
gates report what is left to judge on valid inputs and outputs; a failed gate writes its
report and makes the run exit with 1.
"""

from __future__ import annotations

from .contracts import OUTPUT_FILES, first_error
from .scoring import has_phrase
from .session import Session

GATE_OUT_DOCS = [f for f in OUTPUT_FILES if f not in
                 ("runtime_log_l7.json", "session_output.json", "gate_out_report.json")]


def _check(cid: str, problems: list[str], ok: str) -> dict:
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        return {"id": cid, "status": "failed", "detail": shown}
    return {"id": cid, "status": "passed", "detail": ok}


def gate_in_checks(session: Session) -> list[dict]:
    """Gate-In: what the load already enforced, recorded, plus the cross-reference checks."""
    p = session.policy
    checks = [{"id": f"schema.{name}", "status": "passed",
               "detail": f"{ref.path} is valid against pipeline/schemas/l7_"
                         f"{'prompt_map_pack' if name == 'base_prompt_map_pack' else name}.json"}
              for name, ref in session.inputs.items()]
    checks.append({"id": "policy.session_ids_match", "status": "passed",
                   "detail": f"session '{session.session_id}', objective "
                             f"'{session.objective_id}' in session_input and session_objective"})
    spec = p.score_spec
    checks.append({"id": "policy.score_spec_ref", "status": "passed",
                   "detail": (f"override of {spec.ref} by {spec.path} in {p.pipeline_env}: "
                              f"{spec.override_reason}") if spec.override
                   else f"{spec.path} is the objective's score_spec_ref"})
    cross = p.cross_session
    checks.append({"id": "policy.cross_session", "status": "passed",
                   "detail": f"scenes_v2 of session '{cross.scenes_v2_session_id}' reused with "
                             "--allow-cross-session" if cross.used
                   else "scenes_v2 is of this session"})
    if p.partial_rerun:
        checks.append({"id": "policy.partial_rerun", "status": "passed",
                       "detail": f"regenerating {', '.join(p.partial_rerun.scene_ids)}; "
                                 f"{len(session.merged)} scene(s) merged from "
                                 f"{p.partial_rerun.base_prompt_map_pack}"})

    unknown, bad_wardrobe, canon_terms = [], [], []
    forbidden = _forbidden_terms(session)
    for scene in session.scenes_v2.scenes:
        for cid in scene.characters:
            if cid not in session.characters:
                unknown.append(f"{scene.scene_id} names '{cid}'")
        for cid in scene.wardrobe:
            if cid not in scene.characters:
                bad_wardrobe.append(f"{scene.scene_id} dresses '{cid}', who is not in it")
        texts = [scene.setting.location, scene.setting.weather, scene.mood]
        texts += [session.characters[c].look for c in scene.characters
                  if c in session.characters]
        texts += [scene.wardrobe.get(c) or session.characters[c].wardrobe
                  for c in scene.characters if c in session.characters]
        for term in forbidden:
            if any(has_phrase(t, term) for t in texts):
                canon_terms.append(f"{scene.scene_id} facts contain '{term}'")
    checks.append(_check("refs.characters_known", unknown,
                         f"every scene's characters are among the "
                         f"{len(session.characters)} of scenes_v2"))
    checks.append(_check("refs.wardrobe_cast", bad_wardrobe,
                         "per-scene wardrobe only for characters in the scene"))
    checks.append(_check("spec.forbidden_terms_not_in_facts", canon_terms,
                         "no scene fact contains a forbidden term (it would fail every "
                         "candidate)"))
    return checks


def _forbidden_terms(session: Session) -> list[str]:
    terms: list[str] = []
    for c in session.spec.criteria:
        if c.kind == "rule" and c.rule == "forbidden_terms" and c.hard:
            terms += list(c.params.get("terms", []))
            if c.params.get("include_style_negative", True):
                terms += session.objective.style_preset.negative
    return list(dict.fromkeys(terms))


def status(checks: list[dict]) -> str:
    return "failed" if any(c["status"] == "failed" for c in checks) else "passed"


def gate_out_checks(session: Session, docs: dict[str, dict],
                    schema_errors: dict[str, tuple[str, str] | None] | None = None
                    ) -> list[dict]:
    """Gate-Out over the exported documents (``docs``: file name -> parsed JSON).

    ``schema_errors``: each document's first schema error (or None) when the caller knows
    them (the kept per-scene checks of ``gate_keep``); by default every document is
    validated whole. The cross-scene checks below are recomputed every time: they are
    list walks over the pack and the audit (under 5 ms at 100 scenes, measured).
    """
    checks = []
    for name in GATE_OUT_DOCS:
        err = (schema_errors[name] if schema_errors is not None
               else first_error(docs[name], OUTPUT_FILES[name]))
        checks.append(_check(f"schema.{name}", [f"{err[0]}: {err[1]}"] if err else [],
                             f"valid against pipeline/schemas/l7_{OUTPUT_FILES[name]}.json"))
    pack = docs["prompt_map_pack.json"]
    scenes_v2 = docs["scenes_v2.json"]
    rejected = [s["scene_id"] for s in pack["scenes"] if s["status"] == "rejected"]
    checks.append(_check("scenes.selected",
                         [f"{sid}: no candidate passed the hard constraints" for sid in rejected],
                         f"all {len(pack['scenes'])} scenes have a selected prompt"))
    remaining = [f for p in docs["continuity_audit_prompt.json"]["pairs"]
                 for f in p["remaining"] if f["severity"] == "error"]
    checks.append(_check("continuity.no_errors",
                         list(dict.fromkeys(f"{f['scene_id']}: {f['message']}"
                                            for f in remaining)),
                         "no continuity error left after revision"))
    order = session.order
    pack_ids = [s["scene_id"] for s in pack["scenes"]]
    mismatch = []
    if pack_ids != order:
        mismatch.append(f"pack scenes {pack_ids} differ from scenes_v2 {order}")
    entries = {s["scene_id"]: s for s in pack["scenes"]}
    for scene in scenes_v2["scenes"]:
        entry, pm = entries.get(scene["scene_id"]), scene.get("prompt_map") or {}
        if entry and pm.get("prompt") != entry["prompt"]:
            mismatch.append(f"{scene['scene_id']}: scenes_v2 prompt differs from the pack")
    checks.append(_check("pack.matches_scenes_v2", mismatch,
                         "the pack and the updated scenes_v2 agree scene by scene"))
    failing = [s["scene_id"] for s in pack["scenes"]
               if s["status"] != "rejected" and not s["hard_constraints_passed"]]
    checks.append(_check("pack.hard_constraints", failing,
                         "every selected prompt passes the hard constraints"))
    spec = pack["score_spec"]
    recorded = [] if not spec["override"] or spec["override_reason"] else [
        "score spec override without a recorded reason"]
    checks.append(_check("policy.override_recorded", recorded,
                         "score spec override and reason recorded" if spec["override"]
                         else "no score spec override"))
    return checks
