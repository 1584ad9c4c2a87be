"""doit tasks of the L7 scene prompt map runner, one basename per stage.

``l7_tasks(cfg)`` builds them for one run (the CLI runs them in-process on the session's
own build DB); ``task_l7`` builds them for the example session in ``workspace/l7`` so that
``doit list`` shows the stages and ``doit l7`` builds the example. Task loading runs on
every doit command, books included, so it never raises: inputs that do not load give a
single ``l7_gate_in`` task whose action fails with the one-line error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from doit.exceptions import TaskFailed

import pipeline.l7

if TYPE_CHECKING:  # the L7 stack loads when its tasks are built, not on a book's no-op
    from pipeline.l7.session import RunConfig, Session

EXAMPLE = {
    "session_input": "workspace/l7/sample_session_input_l7.json",
    "session_objective": "workspace/l7/sample_session_objective_l7_prompt_map.json",
    "scenes_v2": "workspace/l7/l6_run_output/scenes_v2.json",
    "out_dir": "workspace/l7/l7_run_output",
}

DOCS = {
    "l7": "L7 prompt map of the session: every stage below, then the export",
    "l7_gate_in": "Gate-In: schemas, policies, cross-references -> gate_in_report.json",
    "l7_slices": "each scene's slice of scenes_v2.json (its entry, cast, neighbours), "
                 "rewritten only where it changed",
    "l7_context": "scene context packaging: scene, cast looks and wardrobe, style, neighbours",
    "l7_candidates": "N prompt candidates per scene (LLM); not keyed by the score spec",
    "l7_judge": "LLM judge of the rubric criteria, per candidate",
    "l7_score": "weighted scores, thresholds, hard constraints, with reasons",
    "l7_select": "selection: best eligible weighted score, deterministic tie-break",
    "l7_base": "partial rerun: the other scenes, unchanged from the base pack",
    "l7_audit": "continuity audit of adjacent scenes: names, looks, wardrobe, setting, "
                "time, style",
    "l7_revise": "selective revision (LLM) of scenes with findings, rescored and reselected",
    "l7_export": "prompt_map_pack.json, scenes_v2.json and the reports",
    "l7_gate_out": "Gate-Out: output schemas, selections, continuity -> gate_out_report.json",
    "l7_publish": "the output set, swapped into --out-dir as a whole",
}


_PKG = Path(pipeline.l7.__file__).parent
# The code of a stage is part of its recipe: editing it reruns the stage (LLM answers
# still come from the response cache when the requests are unchanged).
CODE = {
    "gate_in": ["gates.py", "session.py", "policies.py", "contracts.py"],
    "slices": ["context.py", "session.py"],
    "context": ["context.py"],
    "candidates": ["candidates.py", "llm.py"],
    "judge": ["scoring.py", "llm.py"],
    "score": ["scoring.py"],
    "select": ["selection.py"],
    "base": ["stages.py"],
    "audit": ["continuity.py"],
    "revise": ["revision.py", "candidates.py", "continuity.py", "scoring.py", "selection.py"],
    "export": ["export.py"],
    "gate_out": ["gates.py", "gate_keep.py"],
    "publish": ["export.py"],
}


def _action(cfg: RunConfig, stage: str, task: str, *args: str) -> tuple:
    from pipeline.l7 import stages

    return (stages.run, [cfg, stage, task, *args])


def _fail(message: str) -> TaskFailed:
    return TaskFailed(message)  # reaches the L7 runner through the run's result


def _broken(message: str) -> Iterator[dict]:
    yield {"basename": "l7_gate_in", "doc": DOCS["l7_gate_in"], "verbosity": 2,
           "actions": [(_fail, [message])], "uptodate": [False]}
    yield {"basename": "l7", "doc": DOCS["l7"], "actions": None, "task_dep": ["l7_gate_in"]}


def _group(name: str) -> dict:
    return {"basename": name, "name": None, "doc": DOCS[name]}


def l7_tasks(cfg: RunConfig) -> Iterator[dict]:
    """Every task of one L7 run (never raises; see the module docstring)."""
    from pipeline.core.errors import UserError
    from pipeline.l7.session import session_for

    try:
        session = session_for(cfg)
    except UserError as exc:
        yield from _broken(str(exc))
        return
    yield from _tasks(cfg, session, session.model.model_dump())


def _tasks(cfg: RunConfig, s: Session, model: dict) -> Iterator[dict]:
    from doit.tools import config_changed

    from pipeline.l7 import llm
    from pipeline.l7.contracts import OUTPUT_FILES

    lay = s.layout
    inputs = [cfg.session_input, cfg.session_objective, cfg.scenes_v2, s.spec_path]
    if cfg.base_prompt_map_pack:
        inputs.append(cfg.base_prompt_map_pack)
    tmpl = {n: llm.template(n) for n in ("system", "candidate", "judge", "revise")}
    run_config = {k: v for k, v in cfg.as_dict().items() if k != "out_dir"}
    names: list[str] = []

    def task(basename: str, name: str | None, stage: str, *args: str, **fields) -> dict:
        full = f"{basename}:{name}" if name else basename
        names.append(full)
        fields["file_dep"] = fields.get("file_dep", []) + [str(_PKG / f) for f in CODE[stage]]
        spec = {"basename": basename, "actions": [_action(cfg, stage, full, *args)],
                "verbosity": 2, "doc": DOCS[basename], **fields}
        if name:
            spec["name"] = name
        return spec

    def sel(sid: str) -> str:
        return str(lay.scene(sid, "selection" if sid in s.active else "base_selection"))

    def ctx(sid: str) -> str:
        return str(lay.scene(sid, "context"))

    yield task("l7_gate_in", None, "gate_in", file_dep=inputs,
               targets=[str(p) for p in (lay.gate_in_report, lay.generation, lay.score_spec,
                                         lay.rubric)],
               # the flags and the model (SCENEMAKE_MODEL can change it) are inputs too
               uptodate=[config_changed({"run": run_config, "model": model,
                                         "out_dir": cfg.out_dir})])
    # One task reads the whole scenes_v2.json and writes each scene's slice (only those
    # that changed); a scene's context depends on its own slice, so editing one scene of
    # a long session reruns one context, not all of them.
    yield task("l7_slices", None, "slices", file_dep=[cfg.scenes_v2], task_dep=["l7_gate_in"],
               targets=[str(lay.scene(sid, "slice")) for sid in s.order])
    yield _group("l7_context")
    for sid in s.order:
        yield task("l7_context", sid, "context", sid,
                   file_dep=[cfg.session_input, cfg.session_objective,
                             str(lay.scene(sid, "slice"))],
                   task_dep=["l7_slices"], targets=[ctx(sid), str(lay.scene(sid, "neighbours"))])
    for basename in ("l7_candidates", "l7_judge", "l7_score", "l7_select"):
        yield _group(basename)
    for sid in s.active:
        f = {n: str(lay.scene(sid, n)) for n in ("candidates", "judgements", "scores",
                                                  "selection", "revision")}
        gen = config_changed({"generation": s.generations[sid]})
        yield task("l7_candidates", sid, "candidates", sid,
                   file_dep=[ctx(sid), str(lay.generation), tmpl["system"], tmpl["candidate"]],
                   targets=[f["candidates"]], uptodate=[gen])
        yield task("l7_judge", sid, "judge", sid,
                   file_dep=[f["candidates"], ctx(sid), str(lay.rubric), str(lay.generation),
                             tmpl["system"], tmpl["judge"]], targets=[f["judgements"]])
        yield task("l7_score", sid, "score", sid,
                   file_dep=[f["candidates"], f["judgements"], ctx(sid), str(lay.score_spec)],
                   targets=[f["scores"]])
        yield task("l7_select", sid, "select", sid, file_dep=[f["scores"], f["candidates"]],
                   targets=[f["selection"]])
    if s.merged:
        yield task("l7_base", None, "base", file_dep=[cfg.base_prompt_map_pack],
                   task_dep=["l7_gate_in"],
                   targets=[str(lay.scene(sid, "base_selection")) for sid in s.merged])
    yield _group("l7_audit")
    pairs = s.pairs()
    for a, b in pairs:
        yield task("l7_audit", f"{a}+{b}", "audit", a, b,
                   file_dep=[sel(a), sel(b), ctx(a), ctx(b)], targets=[str(lay.pair(a, b))])
    yield _group("l7_revise")
    order = s.order
    for sid in s.active:
        i = order.index(sid)
        near = [n for n in (order[i - 1] if i else None,
                            order[i + 1] if i + 1 < len(order) else None) if n]
        own_pairs = [str(lay.pair(a, b)) for a, b in pairs if sid in (a, b)]
        yield task("l7_revise", sid, "revise", sid,
                   file_dep=[str(lay.scene(sid, n)) for n in
                             ("selection", "scores", "candidates", "neighbours")]
                   + [ctx(sid), *own_pairs, *[ctx(n) for n in near],
                      str(lay.score_spec), str(lay.rubric), str(lay.generation),
                      tmpl["system"], tmpl["revise"], tmpl["judge"]],
                   targets=[str(lay.scene(sid, "revision"))],
                   uptodate=[config_changed({"generation": s.generations[sid]})])
    docs = [n for n in OUTPUT_FILES if n not in ("gate_in_report.json", "runtime_log_l7.json",
                                                 "session_output.json", "gate_out_report.json")]
    export_deps = [ctx(sid) for sid in order] + [sel(sid) for sid in order]
    export_deps += [str(lay.scene(sid, n)) for sid in s.active
                    for n in ("candidates", "scores", "revision")]
    export_deps += [str(lay.pair(a, b)) for a, b in pairs] + inputs
    yield task("l7_export", None, "export", file_dep=export_deps,
               targets=[str(lay.out(n)) for n in docs],
               uptodate=[config_changed({"run": run_config})])
    yield task("l7_gate_out", None, "gate_out",
               file_dep=[str(lay.out(n)) for n in docs] + [str(lay.gate_in_report)],
               targets=[str(lay.out("gate_out_report.json"))])
    out_files = [str(lay.out(n)) for n in docs] + [str(lay.out("gate_out_report.json")),
                                                    str(lay.gate_in_report)]
    stage_names = list(names)
    yield task("l7_publish", None, "publish", *stage_names, file_dep=out_files,
               targets=[f"{cfg.out_dir}/{n}" for n in OUTPUT_FILES],
               uptodate=[config_changed({"out_dir": cfg.out_dir})])
    yield {"basename": "l7", "doc": DOCS["l7"], "actions": None, "task_dep": ["l7_publish"]}


def task_l7():
    """The L7 prompt map runner on the example session (workspace/l7); the task loader
    leaves it out when a command names only book tasks (targets/loader.py)."""
    from pipeline.l7.session import RunConfig

    yield from l7_tasks(RunConfig(**EXAMPLE))
