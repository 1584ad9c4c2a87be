"""``scenemake-scenario`` (or ``python -m pipeline.scenario``): capture, review, save.

Sub-commands:

- ``run-case --question TEXT | --case FILE``: one question;
- ``run-scenario --scenario FILE``: ordered steps in one assistant session;
- ``run-pack --pack FILE``: several scenarios in one aggregate backlog;
- ``review-run RUN_DIR``: review a captured run again (up-to-date reviews are skipped);
- ``review assistant-stage1-<id> [--print-summary]``: the GUI run review bridge;
- ``save --spec FILE --validated-run-dir DIR``: the save gate into the autoruns store.

Exit codes: 0 accepted / done, 1 not accepted / refused by the gate, 2 bad input,
3 internal error, 130 interrupted (finished steps are kept: rerun to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

from pipeline.book import display_path
from pipeline.errors import UserError
from pipeline.store import atomic_write_json

from . import autoruns, save_gate, status
from .capture import Capturer
from .client import AssistantClient
from .contracts import (
    ID_PATTERN,
    Case,
    Pack,
    Scenario,
    load_case,
    load_pack,
    load_scenario,
    parse,
    read_document,
    scenario_from_case,
    slug,
    spec_hash,
)
from .judge import load_score_spec
from .layout import RunLayout, read_json_or_none
from .managed import ManagedAssistant, healthy

DEFAULT_BASE_URL = "http://127.0.0.1:8765"
DEFAULT_SCORE_SPEC = Path("score_specs/score_spec_answer.json")


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
def _check_run_id(run_id: str) -> str:
    import re

    if not re.match(ID_PATTERN, run_id) or len(run_id) > 120:
        raise UserError(f"--run-id '{run_id}' is not a folder-safe id (letters, digits, '_', "
                        "'.', '-')")
    return run_id


def _check_score_spec(args) -> None:
    """A bad rubric is bad input: refuse it before asking or reviewing anything."""
    if args.no_judge or args.no_review:
        return
    if not args.score_spec.exists():
        raise UserError("score spec not found", path=display_path(args.score_spec),
                        fix="pass --score-spec FILE or --no-judge")
    load_score_spec(args.score_spec)


def _archive(run_dir: Path, artifacts: Path) -> Path:
    dest = artifacts / ".archive" / f"{run_dir.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), str(dest))
    return dest


@contextlib.contextmanager
def _run_lock(artifacts: Path, run_id: str):
    """One capture of a run at a time: a second one would interleave the same files."""
    path = artifacts / ".locks" / f"{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"run {run_id} is being captured by another process",
                            fix="wait for it to finish, or pass another --run-id") from None
        yield


def _capture(args, kind: str, spec: Pack | Scenario, run_id: str, source: str | None) -> int:
    if args.timeout <= 0 or args.retries < 0:
        raise UserError("--timeout must be > 0 and --retries >= 0")
    workspace = args.workspace
    artifacts = (args.artifacts_dir or workspace / "artifacts" / "domain_runs").resolve()
    run_dir = artifacts / _check_run_id(run_id)
    _check_score_spec(args)
    with _run_lock(artifacts, run_id):
        if args.restart and run_dir.exists():
            dest = _archive(run_dir, artifacts)
            _review_db(workspace, run_id).unlink(missing_ok=True)
            print(f"restart: previous run moved to {display_path(dest)}")
        managed = None
        base_url = (args.base_url or DEFAULT_BASE_URL).rstrip("/")
        if (args.base_url is None or args.start_assistant) and not healthy(base_url):
            managed = ManagedAssistant(base_url, workspace)
            print(f"starting the reference assistant on {base_url} (log "
                  f"{display_path(managed.log)})")
            managed.start()
        client = AssistantClient(base_url, timeout_s=args.timeout, retries=args.retries)
        capturer = Capturer(client)
        try:
            layout = _prepare(kind, spec, run_id, run_dir, source, capturer)
            name = f"{kind} {layout.manifest.get('pack_id') or layout.scenarios[0].scenario_id}"
            print(f"{name}: run {run_id} -> {display_path(run_dir)}")
            scenarios = spec.scenarios if isinstance(spec, Pack) else [spec]
            for scenario, ref in zip(scenarios, layout.scenarios, strict=True):
                capturer.capture(scenario, ref.dir, run_id,
                                 _scenario_extra(kind, spec, source),
                                 on_step=lambda: status.write(layout, None))
                status.write(layout, None)
        finally:
            client.close()
            if managed is not None:
                managed.stop()
        return _finish(args, layout, capturer)


def _scenario_extra(kind: str, spec: Pack | Scenario, source: str | None) -> dict:
    if kind == "pack":
        return {"pack_id": spec.pack_id}  # type: ignore[union-attr]
    return {"pack_id": None, "spec_path": source, "spec_hash": spec_hash(spec),
            "acceptance_gate": {}, "business_waivers": []}


def _prepare(kind: str, spec: Pack | Scenario, run_id: str, run_dir: Path, source: str | None,
             capturer: Capturer) -> RunLayout:
    """Write the manifests (the run's layout) before the first question."""
    if kind == "pack":
        assert isinstance(spec, Pack)
        atomic_write_json(run_dir / "pack_manifest.json", {
            "kind": "pack_manifest", "run_id": run_id, "pack_id": spec.pack_id,
            "title": spec.title, "domain": spec.domain, "brief": spec.brief,
            "spec_path": source, "spec_hash": spec_hash(spec),
            "acceptance_gate": spec.acceptance_gate.model_dump(mode="json"),
            "business_waivers": [w.model_dump(mode="json") for w in spec.business_waivers],
            "scenarios": [{"scenario_id": s.scenario_id,  # type: ignore[union-attr]
                           "steps": [st.step_id for st in s.steps]}  # type: ignore[union-attr]
                          for s in spec.scenarios]})
        pairs = [(s, run_dir / "scenarios" / s.scenario_id) for s in spec.scenarios]
    else:
        assert isinstance(spec, Scenario)
        pairs = [(spec, run_dir)]
    for scenario, sdir in pairs:
        capturer.prepare(scenario, sdir, run_id, _scenario_extra(kind, spec, source))
    return RunLayout.load(run_dir)


def _review_db(workspace: Path, run_id: str) -> Path:
    from targets.scenario import db_path

    return db_path(workspace, run_id)


def _reviews(layout: RunLayout, workspace: Path,
             score_spec: Path | None) -> tuple[dict, bool]:
    """Run the review tasks: (the current reviews by name, whether one failed)."""
    from targets.scenario import review_namespace, run_tasks

    outcome = run_tasks(review_namespace(layout, workspace, score_spec),
                        _review_db(workspace, layout.run_id), log_dir=layout.dir)
    for task, message in outcome.failed:
        print(f"  review {task} failed: {message}")
    failed = {t for t, _ in outcome.failed}
    reviews = {}
    for name in ("truth", "business", "judge"):
        task = f"review_{name}:{layout.run_id}"
        if task in failed or task not in outcome.ran + outcome.up_to_date:
            continue
        data = read_json_or_none(layout.dir / f"{name}_review.json")
        if isinstance(data, dict):
            reviews[name] = data
    print(f"  reviews: {len(outcome.ran)} ran, {len(outcome.up_to_date)} up to date")
    return reviews, bool(outcome.failed)


def _finish(args, layout: RunLayout, capturer: Capturer | None) -> int:
    reviews = None
    review_failed = False
    if not args.no_review:
        spec = None if args.no_judge else args.score_spec
        reviews, review_failed = _reviews(layout, args.workspace, spec)
    result = status.write(layout, reviews)
    c = result["counts"]
    print(f"final status: {result['final_status']}")
    print(f"  steps: {c['accepted']} accepted, {c['partial']} partial, {c['blocked']} blocked, "
          f"{c['needs_exact_capability']} needs_exact_capability"
          + (f" (asked {capturer.asked}, resumed {capturer.skipped})" if capturer else ""))
    if reviews is not None:
        r = result["reviews"]
        judged = "skipped" if args.no_judge else r["judge_score"]
        print(f"  truth {r['truth']}, business {r['business']}, judge score {judged}")
    gate = result["acceptance_gate"]
    failed = [cond["name"] for cond in gate["conditions"] if not cond["passed"]]
    print(f"  acceptance gate: {'passed' if gate['passed'] else 'not passed'}"
          + (f" ({', '.join(failed)})" if failed else ""))
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
        from pipeline.hashing import hash_text

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
    return _finish(args, layout, None)


def cmd_review(args) -> int:
    from pipeline.assistant.sessions import normalize_run_id
    from targets.scenario import db_path, gui_namespace, run_tasks

    try:
        run_id = normalize_run_id(args.run_id)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    runs_dir = args.runs_dir or args.workspace
    artifacts = args.artifacts_dir or args.workspace / "artifacts" / "domain_runs"
    out_dir = (artifacts / "gui_run_reviews" / run_id).resolve()
    outcome = run_tasks(gui_namespace(run_id, runs_dir.resolve(), out_dir),
                        db_path(args.workspace, f"gui-{run_id}"), log_dir=out_dir)
    if outcome.failed:
        raise UserError(f"review of {run_id} failed: {outcome.failed[0][1]}")
    review = read_json_or_none(out_dir / "run_review.json")
    if not isinstance(review, dict):
        raise UserError("run_review.json was not written", path=display_path(out_dir))
    if args.print_summary:
        from .bridge import summary_text

        print(summary_text(review, out_dir))
    else:
        print(f"{run_id}: {review['summary']['next_action']} "
              f"({display_path(out_dir / 'run_review.md')})")
    return 0


def _load_spec(path: Path) -> Pack | Scenario:
    data = read_document(path, "spec")
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


COMMANDS = {"run-case": cmd_run_case, "run-scenario": cmd_run_scenario,
            "run-pack": cmd_run_pack, "review-run": cmd_review_run, "review": cmd_review,
            "save": cmd_save}


def _terminate(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line on every error, never a traceback."""
    args = build_parser().parse_args(argv)
    # SIGTERM ends a run like Ctrl-C: finished steps stay, a started assistant is stopped.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished steps are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in a file
        log = Path(getattr(args, "workspace", Path("workspace"))) / ".scenemake" / "scenarios"
        try:
            log.mkdir(parents=True, exist_ok=True)
            (log / "last_error.txt").write_text(traceback.format_exc(), encoding="utf-8")
            where = f" (traceback in {display_path(log / 'last_error.txt')})"
        except OSError:
            where = ""
        print(f"internal error: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
        return 3
