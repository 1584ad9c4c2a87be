"""Capture and review a run: the pieces ``run-case``/``run-scenario``/``run-pack`` and the
loops (``run-pack-loop``, the stage loop) share.

:func:`capture` asks a spec's questions into a run folder (starting the reference assistant
for the capture when asked to and only if there is a question left to ask, one capture of
a run id at a time) and returns the run's
:class:`RunLayout`; :func:`reviews` runs the review tasks (doit targets) of a run. The
callers decide what to print and which exit code it makes.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, read_json_or_none
from pipeline.core.lock import exclusive
from pipeline.core.store import atomic_write_json

from . import status
from .capture import Capturer
from .contracts import ID_PATTERN, Pack, Scenario, spec_hash
from .judge import load_score_spec
from .layout import RunLayout
from .managed import OnDemandAssistant
from .reviewing import Reviewer, db_path

DEFAULT_BASE_URL = "http://127.0.0.1:8765"
DEFAULT_SCORE_SPEC = Path("score_specs/score_spec_answer.json")


@dataclass
class CaptureOptions:
    """How to reach the assistant and where runs go (the capture flags of the CLI)."""

    workspace: Path = Path("workspace")
    artifacts_dir: Path | None = None
    base_url: str | None = None
    start_assistant: bool = False
    timeout: float = 30.0
    retries: int = 2
    reviewer: Reviewer | None = None  # what runs the review tasks (the CLI's)

    @classmethod
    def from_args(cls, args, reviewer: Reviewer | None = None) -> CaptureOptions:
        """The options of an argparse namespace made by ``_add_capture_options``."""
        return cls(workspace=args.workspace, artifacts_dir=args.artifacts_dir,
                   base_url=args.base_url, start_assistant=args.start_assistant,
                   timeout=args.timeout, retries=args.retries, reviewer=reviewer)

    @property
    def artifacts(self) -> Path:
        """Where runs go (absolute)."""
        return (self.artifacts_dir or self.workspace / "artifacts" / "domain_runs").resolve()

    def check(self) -> None:
        """UserError for values no capture can use."""
        if self.timeout <= 0 or self.retries < 0:
            raise UserError("--timeout must be > 0 and --retries >= 0")


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is a folder-safe id; UserError otherwise."""
    if not re.match(ID_PATTERN, run_id) or len(run_id) > 120:
        raise UserError(f"--run-id '{run_id}' is not a folder-safe id (letters, digits, '_', "
                        "'.', '-')")
    return run_id


def check_score_spec(score_spec: Path | None) -> None:
    """A bad rubric is bad input: refuse it before asking or reviewing anything."""
    if score_spec is None:
        return
    if not score_spec.exists():
        raise UserError("score spec not found", path=display_path(score_spec),
                        fix="pass --score-spec FILE or --no-judge")
    load_score_spec(score_spec)


def archive(run_dir: Path, artifacts: Path) -> Path:
    """Move a run folder to ``<artifacts>/.archive/`` (``--restart``); returns where."""
    dest = artifacts / ".archive" / f"{run_dir.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), str(dest))
    return dest


@contextlib.contextmanager
def run_lock(artifacts: Path, run_id: str):
    """One capture of a run at a time: a second one would interleave the same files."""
    with exclusive(artifacts / ".locks" / f"{run_id}.lock",
                   f"run {run_id} is being captured by another process",
                   "wait for it to finish, or pass another --run-id"):
        yield


def review_db(workspace: Path, run_id: str) -> Path:
    """The build DB of a run's reviews."""
    return db_path(workspace, run_id)


def scenario_extra(kind: str, spec: Pack | Scenario, source: str | None) -> dict:
    """What a scenario manifest records about the spec it came from."""
    if kind == "pack":
        return {"pack_id": spec.pack_id}  # type: ignore[union-attr]
    return {"pack_id": None, "spec_path": source, "spec_hash": spec_hash(spec),
            "acceptance_gate": {}, "business_waivers": []}


def prepare(kind: str, spec: Pack | Scenario, run_id: str, run_dir: Path, source: str | None,
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
        capturer.prepare(scenario, sdir, run_id, scenario_extra(kind, spec, source))
    return RunLayout.load(run_dir)


def capture(opts: CaptureOptions, kind: str, spec: Pack | Scenario, run_id: str,
            run_dir: Path, source: str | None, restart: bool = False,
            locked: bool = False) -> tuple[RunLayout, Capturer]:
    """Capture (or resume) ``spec`` into ``run_dir``; the run's layout and the capturer.

    ``locked``: the caller already holds the run's lock. A started reference assistant is
    stopped again when the capture ends, however it ends.
    """
    opts.check()
    artifacts = opts.artifacts
    lock = contextlib.nullcontext() if locked else run_lock(artifacts, run_id)
    with lock:
        if restart and run_dir.exists():
            dest = archive(run_dir, artifacts)
            review_db(opts.workspace, run_id).unlink(missing_ok=True)
            print(f"restart: previous run moved to {display_path(dest)}")
        # Reached (and started) at the first question only: a resume whose steps are all
        # captured starts nothing and goes straight to the reviews.
        client = OnDemandAssistant(opts.base_url or DEFAULT_BASE_URL, opts.workspace,
                                   may_start=opts.base_url is None or opts.start_assistant,
                                   timeout_s=opts.timeout, retries=opts.retries)
        capturer = Capturer(client)
        try:
            layout = prepare(kind, spec, run_id, run_dir, source, capturer)
            ident = layout.manifest.get("pack_id") or layout.scenarios[0].scenario_id
            name = kind if ident == kind else f"{kind} {ident}"  # a --question case: "case"
            print(f"{name}: run {run_id} -> {display_path(run_dir)}")
            # A state before the first question: a run killed at any point has one to report.
            status.write(layout, None)
            scenarios = spec.scenarios if isinstance(spec, Pack) else [spec]
            for scenario, ref in zip(scenarios, layout.scenarios, strict=True):
                capturer.capture(scenario, ref.dir, run_id,
                                 scenario_extra(kind, spec, source),
                                 on_step=lambda: status.write(layout, None))
                status.write(layout, None)
            if not client.opened:
                print(f"  nothing to ask: {client.base_url} was not contacted")
        finally:
            client.close()
    return layout, capturer


def reviews(reviewer: Reviewer, layout: RunLayout, workspace: Path,
            score_spec: Path | None) -> tuple[dict, bool]:
    """Run the review tasks: (the current reviews by name, whether one failed)."""
    outcome = reviewer.review_run(layout, workspace, score_spec)
    for task, message, _kind in outcome.failed:
        print(f"  review {task} failed: {message}")
    failed = {f.task for f in outcome.failed}
    found = {}
    for name in ("truth", "business", "judge"):
        task = f"review_{name}:{layout.run_id}"
        if task in failed or task not in outcome.ran + outcome.up_to_date:
            continue
        data = read_json_or_none(layout.dir / f"{name}_review.json")
        if isinstance(data, dict):
            found[name] = data
    print(f"  reviews: {len(outcome.ran)} ran, {len(outcome.up_to_date)} up to date")
    return found, bool(outcome.failed)
