"""``scenemake-scenario`` (or ``python -m pipeline.scenario``): capture, review, save.

Sub-commands:

- ``run-case --question TEXT | --case FILE``: one question;
- ``run-scenario --scenario FILE``: ordered steps in one assistant session;
- ``run-pack --pack FILE``: several scenarios in one aggregate backlog;
- ``run-pack-loop --pack FILE``: the autonomous analyst/coder loop over a pack
  (:mod:`pipeline.scenario.loop`);
- ``stage plan|run|ingest-gui-run|prepare-repair|run-repair|status|summarize --manifest M``:
  the stage-level AGENT loop (:mod:`pipeline.scenario.stage`);
- ``review-run RUN_DIR``: review a captured run again (up-to-date reviews are skipped);
- ``review assistant-stage1-<id> [--print-summary]``: the GUI run review bridge;
- ``save --spec FILE --validated-run-dir DIR``: the save gate into the autoruns store.

Exit codes: 0 accepted / done, 1 not accepted / refused by the gate, 2 bad input,
3 internal error, 130 interrupted (finished steps are kept: rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.core.cli import Cli
from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, read_json, read_json_or_none
from pipeline.scenario import autoruns, runner, save_gate, status
from pipeline.scenario.analyst import AnalystGate
from pipeline.scenario.capture import Capturer
from pipeline.scenario.contracts import (
    Case,
    Pack,
    Scenario,
    load_case,
    load_pack,
    load_scenario,
    parse,
    scenario_from_case,
    slug,
)
from pipeline.scenario.layout import RunLayout
from pipeline.scenario.loop import DEFAULT_MAX_ITERATIONS
from pipeline.scenario.repair import DEFAULT_MAX_TARGETS
from pipeline.scenario.runner import DEFAULT_BASE_URL, DEFAULT_SCORE_SPEC
from targets.scenario.tasks import DoitReviewer


def _add_capture_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default=None,
                   help=f"assistant API root (default {DEFAULT_BASE_URL}: the reference "
                        "assistant, started for the run if nothing answers there)")
    p.add_argument("--start-assistant", action="store_true",
                   help="start the reference assistant at --base-url if nothing answers")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for one answer (default 30)")
    p.add_argument("--retries", type=int, default=2,
                   help="extra tries on connection errors, timeouts, 5xx, non-JSON (default 2)")
    p.add_argument("--run-id", default=None, help="run folder name (default from the spec)")
    p.add_argument("--restart", action="store_true",
                   help="start over: archive the run folder instead of resuming it")
    p.add_argument("--workspace", type=Path, default=Path("workspace"),
                   help="workspace root (default workspace)")
    p.add_argument("--artifacts-dir", type=Path, default=None,
                   help="where runs go (default <workspace>/artifacts/domain_runs)")
    _add_review_options(p)


def _add_review_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--score-spec", type=Path, default=DEFAULT_SCORE_SPEC,
                   help=f"judge rubric (default {DEFAULT_SCORE_SPEC})")
    p.add_argument("--no-judge", action="store_true", help="skip the LLM judge")
    p.add_argument("--no-review", action="store_true", help="capture only, no reviews")


STAGE_STEPS = {
    "plan": "check the manifest and its pack; write stage_loop_plan.json",
    "run": "run the pack loop under the stage gate; save an accepted run; summarize",
    "ingest-gui-run": "review a GUI run under the stage and set the next action",
    "prepare-repair": "write the next repair iteration (plan, prompt, checklist)",
    "run-repair": "run (or with --dry-run, only write) the coder command of the repair",
    "status": "print where the stage is (writes only stage_repair_handoff.md/json)",
    "summarize": "rewrite stage_loop_summary.json and stage_loop_handoff.md",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scenemake-scenario",
                                description="Scenario capture against an assistant HTTP API.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    case = sub.add_parser("run-case", help="capture one question")
    group = case.add_mutually_exclusive_group(required=True)
    group.add_argument("--question", help="the question")
    group.add_argument("--case", type=Path, help="a case file (question + expectations)")
    _add_capture_options(case)
    scen = sub.add_parser("run-scenario", help="capture ordered steps in one session")
    scen.add_argument("--scenario", type=Path, required=True, help="scenario file")
    _add_capture_options(scen)
    pack = sub.add_parser("run-pack", help="capture several scenarios into one backlog")
    pack.add_argument("--pack", type=Path, required=True, help="pack manifest")
    _add_capture_options(pack)
    loop = sub.add_parser("run-pack-loop",
                          help="autonomous loop: run the pack, analyst verdict, repair, coder, "
                               "rerun, until the gate passes or a stop condition")
    loop.add_argument("--pack", type=Path, required=True, help="pack manifest")
    loop.add_argument("--max-iterations", type=int, default=DEFAULT_MAX_ITERATIONS,
                      help=f"stop after this many pack runs (default {DEFAULT_MAX_ITERATIONS})")
    loop.add_argument("--target-score", type=float, default=80.0,
                      help="analyst score the gate needs, 0-100 (default 80)")
    loop.add_argument("--max-targets", type=int, default=DEFAULT_MAX_TARGETS,
                      help=f"repair targets handed to the coder per iteration (default "
                           f"{DEFAULT_MAX_TARGETS})")
    loop.add_argument("--coder-config", type=Path, default=None,
                      help="coder command config (JSON); without it the loop stops with the "
                           "repair prepared (awaiting_coder)")
    _add_capture_options(loop)
    stage = sub.add_parser("stage", help="the stage-level AGENT loop (plan, run, "
                                         "ingest-gui-run, prepare-repair, run-repair, status, "
                                         "summarize)")
    stage_sub = stage.add_subparsers(dest="stage_command", required=True, metavar="STEP")
    for name, text in STAGE_STEPS.items():
        sp = stage_sub.add_parser(name, help=text)
        sp.add_argument("--manifest", type=Path, required=True, help="the stage manifest")
        if name == "ingest-gui-run":
            sp.add_argument("--run-id", required=True, help="assistant-stage1-<id>")
        if name == "run-repair":
            sp.add_argument("--dry-run", action="store_true",
                            help="write and print the coder command without running it")
        if name == "run":
            sp.add_argument("--restart", action="store_true",
                            help="archive the stage's pack loop and start it over")
    rr = sub.add_parser("review-run", help="review a captured run (again)")
    rr.add_argument("run_dir", type=Path, help="the run folder")
    rr.add_argument("--workspace", type=Path, default=Path("workspace"))
    _add_review_options(rr)
    rev = sub.add_parser("review", help="GUI run review bridge for assistant-stage1-<id>")
    rev.add_argument("run_id", help="assistant-stage1-<id>")
    rev.add_argument("--print-summary", action="store_true", help="print the review summary")
    rev.add_argument("--workspace", type=Path, default=Path("workspace"))
    rev.add_argument("--runs-dir", type=Path, default=None,
                     help="root of llm_normalizer/ (default: the workspace)")
    rev.add_argument("--artifacts-dir", type=Path, default=None,
                     help="default <workspace>/artifacts/domain_runs")
    save = sub.add_parser("save", help="save a validated run to the autoruns store")
    save.add_argument("--spec", type=Path, required=True, help="the pack/scenario/case spec")
    save.add_argument("--validated-run-dir", type=Path, required=True, help="the run folder")
    save.add_argument("--allow-unvalidated", action="store_true",
                      help="save even if the gate fails, marked unvalidated")
    save.add_argument("--unvalidated-reason", default=None,
                      help="why (required with --allow-unvalidated)")
    save.add_argument("--workspace", type=Path, default=Path("workspace"))
    save.add_argument("--autoruns-dir", type=Path, default=None,
                      help="default <workspace>/llm_normalizer/data/autoruns")
    return p


# -- capture --------------------------------------------------------------------------------
def _check_score_spec(args) -> None:
    """A bad rubric is bad input: refuse it before asking or reviewing anything."""
    if args.no_judge or args.no_review:
        return
    runner.check_score_spec(args.score_spec)


def _capture(args, kind: str, spec: Pack | Scenario, run_id: str, source: str | None) -> int:
    opts = runner.CaptureOptions.from_args(args, DoitReviewer())
    opts.check()
    run_dir = opts.artifacts / runner.check_run_id(run_id)
    _check_score_spec(args)
    layout, capturer = runner.capture(opts, kind, spec, run_id, run_dir, source,
                                      restart=args.restart)
    return _finish(args, layout, capturer, kind)


def _finish(args, layout: RunLayout, capturer: Capturer | None, noun: str) -> int:
    reviews = None
    review_failed = False
    if not args.no_review:
        spec = None if args.no_judge else args.score_spec
        reviews, review_failed = runner.reviews(DoitReviewer(), layout, args.workspace, spec)
    result = status.write(layout, reviews, noun)
    c = result["counts"]
    print(f"final status: {status.verdict_line(result, noun)}")
    for sc in result["scenarios"]:  # the same step statuses final_status.md lists
        for st in sc["steps"]:
            print(f"  {sc['scenario_id']}/{st['step_id']}: {st['status']}")
    print(f"  steps: {c['accepted']} accepted, {c['partial']} partial, {c['blocked']} blocked, "
          f"{c['needs_exact_capability']} needs_exact_capability"
          + (f" (asked {capturer.asked}, resumed {capturer.skipped})" if capturer else ""))
    if reviews is not None:
        r = result["reviews"]
        judged = "skipped" if args.no_judge else r["judge_score"]
        print(f"  truth {r['truth']}, business {r['business']}, judge score {judged}")
    gate = result["acceptance_gate"]
    failed = [cond["name"] for cond in gate["conditions"] if not cond["passed"]]
    if failed:  # the condition names, as final_status.md and the save gate use them
        print(f"  acceptance gate conditions not met: {', '.join(failed)}")
    for reason in result["reasons"][:10]:
        print(f"  - {reason}")
    if len(result["reasons"]) > 10:
        print(f"  - ... {len(result['reasons']) - 10} more in final_status.md")
    print(f"  see {display_path(layout.dir / 'final_status.md')}")
    if review_failed:
        print("  a review failed: the run is not fully reviewed (fix it and rerun)")
        return 1
    return 0 if result["final_status"] == "accepted" else 1


def cmd_run_case(args) -> int:
    if args.case is not None:
        case = load_case(args.case)
        source = display_path(args.case)
        run_id = args.run_id or f"case-{case.case_id}"
    else:
        from pipeline.core.hashing import hash_text

        question = args.question.strip()
        if not question:
            raise UserError("--question is empty")
        case = parse(Case, {"case_id": "case", "question": question}, Path("--question"))
        source = None
        run_id = args.run_id or f"case-{slug(question, 30)}-{hash_text(question)[:8]}"
    return _capture(args, "case", scenario_from_case(case), run_id, source)


def cmd_run_scenario(args) -> int:
    scenario = load_scenario(args.scenario)
    run_id = args.run_id or f"scenario-{scenario.scenario_id}"
    return _capture(args, "scenario", scenario, run_id, display_path(args.scenario))


def cmd_run_pack(args) -> int:
    pack = load_pack(args.pack)
    run_id = args.run_id or f"pack-{pack.pack_id}"
    return _capture(args, "pack", pack, run_id, display_path(args.pack))


def cmd_review_run(args) -> int:
    if not args.run_dir.is_dir():
        raise UserError("run folder not found", path=display_path(args.run_dir))
    layout = RunLayout.load(args.run_dir.resolve())
    _check_score_spec(args)
    print(f"review {layout.kind} run {layout.run_id}")
    # what the run was captured from: its run id says it unless the user renamed it
    noun = "case" if layout.kind == "scenario" and layout.run_id.startswith("case-") \
        else layout.kind
    return _finish(args, layout, None, noun)


def cmd_review(args) -> int:
    from pipeline.assistant.sessions import normalize_run_id

    try:
        run_id = normalize_run_id(args.run_id)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    runs_dir = args.runs_dir or args.workspace
    artifacts = args.artifacts_dir or args.workspace / "artifacts" / "domain_runs"
    out_dir = (artifacts / "gui_run_reviews" / run_id).resolve()
    outcome = DoitReviewer().review_gui(run_id, runs_dir.resolve(), out_dir, f"gui-{run_id}",
                                        args.workspace)
    if outcome.failed:
        raise UserError(f"review of {run_id} failed: {outcome.failed[0][1]}")
    review = read_json_or_none(out_dir / "run_review.json")
    if not isinstance(review, dict):
        raise UserError("run_review.json was not written", path=display_path(out_dir))
    if args.print_summary:
        from pipeline.scenario.bridge import summary_text

        print(summary_text(review, out_dir))
    else:
        print(f"{run_id}: {review['summary']['next_action']} "
              f"({display_path(out_dir / 'run_review.md')})")
    return 0


def _load_spec(path: Path) -> Pack | Scenario:
    data = read_json(path, "spec")
    if isinstance(data, dict) and "pack_id" in data:
        return load_pack(path)
    if isinstance(data, dict) and "scenario_id" in data:
        return load_scenario(path)
    if isinstance(data, dict) and "question" in data:
        return scenario_from_case(load_case(path))
    raise UserError("not a pack, scenario or case spec (no pack_id, scenario_id or question)",
                    path=display_path(path))


def cmd_save(args) -> int:
    reason = save_gate.check_reason(args.allow_unvalidated, args.unvalidated_reason)
    spec = _load_spec(args.spec)
    layout = save_gate.load_run(args.validated_run_dir.resolve())
    conditions = save_gate.evaluate(spec, layout)
    failed = [c for c in conditions if not c.passed]
    for c in conditions:
        print(f"  [{'x' if c.passed else ' '}] {c.name}: {c.actual}"
              + ("" if c.passed else f" (needs {c.expected})"))
    store = args.autoruns_dir or args.workspace / "llm_normalizer" / "data" / "autoruns"
    rows = [c.as_json() for c in conditions]
    if not failed:
        dest = autoruns.save(layout, store, args.spec, rows, True, None)
        print(f"saved validated run {layout.run_id} to {display_path(dest)}")
        return 0
    if reason is None:
        print(f"refused: {len(failed)} save-gate condition(s) failed: "
              f"{', '.join(c.name for c in failed)}; nothing saved "
              "(use --allow-unvalidated --unvalidated-reason \"...\" for a marked draft)",
              file=sys.stderr)
        return 1
    dest = autoruns.save(layout, store, args.spec, rows, False, reason)
    print(f"saved UNVALIDATED run {layout.run_id} to {display_path(dest)} "
          f"(failed: {', '.join(c.name for c in failed)}; reason: {reason})")
    return 0


def cmd_run_pack_loop(args) -> int:
    from pipeline.scenario.coder import load_config
    from pipeline.scenario.loop import LoopConfig, PackLoop, restart

    if args.no_review:
        raise UserError("--no-review: the loop judges every run by its reviews")
    if args.max_iterations < 1 or args.max_targets < 1:
        raise UserError("--max-iterations and --max-targets must be >= 1")
    if not 0 <= args.target_score <= 100:
        raise UserError("--target-score must be between 0 and 100")
    pack = load_pack(args.pack)
    coder_config, coder_base = (load_config(args.coder_config) if args.coder_config
                                else (None, None))
    opts = runner.CaptureOptions.from_args(args, DoitReviewer())
    opts.check()
    loop_id = runner.check_run_id(args.run_id or f"loop-{pack.pack_id}")
    loop_dir = opts.artifacts / loop_id
    if args.restart and loop_dir.exists():
        with runner.run_lock(opts.artifacts, loop_id):
            dest = restart(loop_dir, loop_id, args.workspace)
        print(f"restart: previous loop moved to {display_path(dest)}")
    gate = AnalystGate(target_score=args.target_score)
    rerun = (f"python -m pipeline.scenario run-pack-loop --pack {display_path(args.pack)} "
             f"--run-id {loop_id}")
    config = LoopConfig(capture=opts, gate=gate, max_iterations=args.max_iterations,
                        max_targets=args.max_targets,
                        score_spec=None if args.no_judge else args.score_spec,
                        coder=coder_config, coder_base=coder_base, rerun_command=[rerun])
    print(f"pack loop {loop_id}: pack {pack.pack_id} -> {display_path(loop_dir)}")
    state = PackLoop(args.pack, loop_dir, loop_id, config).run()
    last = (state.get("iterations") or [{}])[-1]
    print(f"loop {loop_id}: {state['status']} after {len(state.get('iterations', []))} "
          f"iteration(s) (last score {last.get('score')})")
    if state.get("stop_reason"):
        print(f"  {state['stop_reason']}")
    if last.get("iteration"):
        _print_pack_run(loop_dir / "iterations" / str(last["iteration"]) / "pack_run")
    print(f"  see {display_path(loop_dir / 'loop_summary.md')}")
    return 0 if state["status"] == "accepted" else 1


def _print_pack_run(run_dir: Path) -> None:
    """The last pack run of a loop as its final_status.md gives it: the verdict line, then
    each step's status (nothing when the run was not captured yet)."""
    state = read_json_or_none(run_dir / "pack_state.json")
    if not isinstance(state, dict) or "acceptance_gate" not in state:
        return
    print(f"  last pack run: {status.verdict_line(state, 'pack')}")
    for sc in RunLayout.load(run_dir).scenarios:
        sc_state = read_json_or_none(sc.dir / "scenario_state.json") or {}
        for st in sc_state.get("steps", []):
            print(f"    {sc.scenario_id}/{st['step_id']}: {st['status']}")


def _print_stage(summary: dict) -> None:
    gate = summary["stage_closing_gate"]
    g = summary["next_step_guidance"]
    print(f"next action: {summary['next_action']} ({g['why']})")
    print(f"closing gate: {gate['status']} (accepted_gate {str(summary['accepted_gate']).lower()}"
          f", loop_accepted_gate {str(summary['loop_accepted_gate']).lower()})")
    gui = summary["latest_gui_run"]
    print("latest GUI run: " + (f"{gui['run_id']} ({gui['next_action']}; unresolved P0 "
                                f"{gui['summary']['unresolved_p0']}, P1 "
                                f"{gui['summary']['unresolved_p1']})" if gui else "none"))
    c = summary["latest_repair_coder"]
    print("latest repair coder: " + (f"iteration {c['repair_iteration']}: {c['status']}"
                                     + (f" ({c['reason']})" if c.get("reason") else "")
                                     if c else "none"))
    v = summary["latest_repair_validation"]
    print("latest repair validation: " + (
        f"iteration {v['repair_iteration']} by {v['validation_run_id']}: "
        f"{'accepted' if v['accepted'] else 'not accepted'} (remaining P0 {v['remaining_p0']}, "
        f"P1 {v['remaining_p1']})" if v else "none"))
    print(f"next: {g['recommended_command']}")


def cmd_stage(args) -> int:
    from pipeline.scenario.stage import Stage, stage_lock

    st = Stage(args.manifest, DoitReviewer())
    if args.stage_command == "status":  # read-only: no lock, nothing but the handoff written
        return _stage_step(st, args)
    with stage_lock(st):
        return _stage_step(st, args)


def _stage_step(st, args) -> int:
    from pipeline.scenario.stage import SUMMARY

    step = args.stage_command
    print(f"stage {st.m.stage_id}" + (f": {st.m.title}" if st.m.title else ""))
    if step == "plan":
        plan = st.plan()
        summary = st.write_summary()
        steps = sum(s["steps"] for s in plan["pack"]["scenarios"])
        print(f"pack {plan['pack']['pack_id']}: {len(plan['pack']['scenarios'])} scenario(s), "
              f"{steps} step(s); gate: score >= {plan['stage_gate']['target_score']:g}, "
              f"flags {', '.join(plan['stage_gate']['required_flags']) or 'none'}; "
              f"at most {plan['max_iterations']} iteration(s); coder "
              + (" ".join(plan["coder"]["command"]) if plan["coder"] else "none"))
        print(f"plan: {display_path(st.dir / 'stage_loop_plan.json')}")
        _print_stage(summary)
        return 0
    if step == "run":
        summary = st.run(restart=args.restart)
        loop = summary["loop"] or {}
        print(f"pack loop: {loop.get('status')} after {loop.get('iterations')} iteration(s), "
              f"score {loop.get('score')}")
        _print_stage(summary)
        print(f"see {display_path(st.dir / SUMMARY)}")
        return 0 if summary["accepted_gate"] else 1
    if step == "ingest-gui-run":
        record = st.ingest(args.run_id)
        s = record["summary"]
        print(f"{record['run_id']}: {s['pairs']} answers; business "
              f"{s['overall_business_status']} (unresolved P0 {s['unresolved_p0']}, "
              f"P1 {s['unresolved_p1']}); review {record['review_dir']}")
        if record["validation"]:
            v = record["validation"]
            print(f"validation of repair iteration {v['repair_iteration']}: "
                  f"{'accepted' if v['accepted'] else 'not accepted'}")
        _print_stage(st.compute())
        return 0
    if step == "prepare-repair":
        plan = st.prepare_repair()
        if plan is None:
            summary = st.compute()
            print(f"nothing to repair: no open P0/P1 target in the newest review "
                  f"(next action {summary['next_action']})")
            return 1
        print(f"repair iteration {plan['repair_iteration']} from {plan['source']['kind']} "
              f"{plan['source']['run_id']}: {len(plan['targets'])} target(s) "
              f"({', '.join(t['code'] for t in plan['targets'])}), "
              f"{len(plan['deferred_targets'])} deferred")
        print(f"prompt: {display_path(plan['dir'] / 'repair_prompt.md')}")
        _print_stage(st.compute())
        return 0
    if step == "run-repair":
        ex = st.run_repair(args.dry_run)
        if args.dry_run:
            print(f"dry run of repair iteration {ex['repair_iteration']} (nothing executed):")
            print(f"  cd {ex['cwd']} && {ex['command_line']}")
        else:
            print(f"coder of repair iteration {ex['repair_iteration']}: {ex['coder_status']} "
                  f"({ex['reason']})")
        _print_stage(st.compute())
        return 0 if args.dry_run or ex["coder_status"] == "patched" else 1
    if step == "status":
        summary = st.compute()
        st.write_repair_handoff(summary)
        _print_stage(summary)
        return 0
    summary = st.write_summary()
    _print_stage(summary)
    print(f"summary: {display_path(st.dir / SUMMARY)}")
    return 0


COMMANDS = {"run-case": cmd_run_case, "run-scenario": cmd_run_scenario,
            "run-pack": cmd_run_pack, "run-pack-loop": cmd_run_pack_loop,
            "review-run": cmd_review_run, "review": cmd_review, "save": cmd_save,
            "stage": cmd_stage}


CLI = Cli(interrupted_message="interrupted: finished steps are kept; rerun the same command "
                              "to resume")


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line on every error, never a traceback (codes in the docstring)."""
    # a bug's traceback goes beside the runs of the workspace the command was given
    return CLI.main(lambda: build_parser().parse_args(argv),
                    lambda args: COMMANDS[args.command](args),
                    traceback_dir=lambda args: Path(getattr(args, "workspace", Path(
                        "workspace"))) / ".scenemake" / "scenarios")


def stage_main(argv: list[str] | None = None) -> int:
    """Entry point of ``scenemake-stage`` / ``python -m pipeline.scenario.stage_cli``: the same
    as ``scenemake-scenario stage STEP --manifest M``."""
    return main(["stage", *(sys.argv[1:] if argv is None else argv)])
