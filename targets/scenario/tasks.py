"""doit tasks of the scenario loop: every review artifact is a target of the run it reviews.

For a captured run ``<run_id>``:

- ``review_truth:<run_id>`` -> ``truth_review.json/md``
- ``review_business:<run_id>`` -> ``business_review.json/md``
- ``review_judge:<run_id>`` -> ``judge_review.json/md`` (LLM calls, through the one client)

and for a saved GUI run, ``review_gui:<run_id>`` -> the five bridge files. Their
``file_dep`` are the captured step files (and the manifests holding the facts, the score
spec), checked with blake3 and recorded in a per-run ``scenemake`` DB under
``workspace/.scenemake/scenarios/``, so reviewing an unchanged run again runs nothing and
calls no LLM. The tasks run in-process through the one runner (``targets/runner.py``);
nothing here is loaded by ``dodo.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed
from doit.tools import config_changed

from pipeline.core.errors import UserError
from pipeline.core.store import atomic_write_json, atomic_write_text
from pipeline.llm import build_client
from pipeline.scenario import bridge, business_review, judge, truth_review
from pipeline.scenario.layout import RunLayout
from pipeline.scenario.reviewing import TaskRun, db_path
from targets.runner import run_tasks

# Bump when a review's logic changes: its tasks then rerun on every run reviewed again.
VERSIONS = {"truth": 1, "business": 1, "judge": 1, "gui": 1}


def _step_deps(layout: RunLayout) -> list[str]:
    deps = [str(p) for p in layout.manifest_files() if p.exists()]
    for step in layout.steps():
        for name in ("step_state.json", "assistant_response.json"):
            path = step.file(name)
            if path.exists():
                deps.append(str(path))
    return deps


def _write(json_path: Path, review: dict, md: str) -> None:
    atomic_write_json(json_path, review)
    atomic_write_text(json_path.with_suffix(".md"), md)


def _truth(run_dir: str) -> dict:
    layout = RunLayout.load(Path(run_dir))
    review = truth_review.build(layout)
    _write(layout.dir / "truth_review.json", review, truth_review.render_md(review))
    return {"overall_status": review["summary"]["overall_status"]}


def _business(run_dir: str) -> dict:
    layout = RunLayout.load(Path(run_dir))
    review = business_review.build(layout)
    _write(layout.dir / "business_review.json", review, business_review.render_md(review))
    return {"overall_business_status": review["overall_business_status"]}


def _judge(run_dir: str, workspace: str, spec_path: str) -> dict | TaskFailed:
    try:
        layout = RunLayout.load(Path(run_dir))
        spec = judge.load_score_spec(Path(spec_path))
        client = build_client(Path(workspace) / ".scenemake",
                              spec.endpoint.model_dump(), {}, None)
        review = judge.build(layout, client, spec, spec_path)
    except UserError as exc:
        return TaskFailed(str(exc))
    _write(layout.dir / "judge_review.json", review, judge.render_md(review))
    return {"score": review["score"]}


def _gui(run_id: str, runs_dir: str, out_dir: str) -> dict | TaskFailed:
    try:
        review = bridge.build(run_id, Path(runs_dir), Path(out_dir))
    except UserError as exc:
        return TaskFailed(str(exc))
    return {"next_action": review["summary"]["next_action"]}


def review_namespace(layout: RunLayout, workspace: Path, score_spec: Path | None) -> dict:
    """The doit namespace (task generators) reviewing one captured run."""
    run_dir = str(layout.dir)
    deps = _step_deps(layout)
    rid = layout.run_id

    def task_review_truth():
        """Truth review: expected facts against the captured answers."""
        yield {"name": rid, "actions": [(_truth, [run_dir])], "file_dep": deps,
               "targets": [str(layout.dir / "truth_review.json"),
                           str(layout.dir / "truth_review.md")],
               "uptodate": [config_changed({"version": VERSIONS["truth"]})]}

    def task_review_business():
        """Business review: the visible answers, business-first."""
        yield {"name": rid, "actions": [(_business, [run_dir])], "file_dep": deps,
               "targets": [str(layout.dir / "business_review.json"),
                           str(layout.dir / "business_review.md")],
               "uptodate": [config_changed({"version": VERSIONS["business"]})]}

    namespace: dict[str, Any] = {"task_review_truth": task_review_truth,
                                 "task_review_business": task_review_business}
    if score_spec is not None:
        def task_review_judge():
            """LLM judge score (0-100) against the score spec's rubric."""
            yield {"name": rid,
                   "actions": [(_judge, [run_dir, str(workspace), str(score_spec)])],
                   "file_dep": deps + [str(score_spec)],
                   "targets": [str(layout.dir / "judge_review.json"),
                               str(layout.dir / "judge_review.md")],
                   "uptodate": [config_changed({"version": VERSIONS["judge"]})]}

        namespace["task_review_judge"] = task_review_judge
    return namespace


def gui_namespace(run_id: str, runs_dir: Path, out_dir: Path) -> dict:
    """The doit namespace of the GUI run review bridge for one saved run."""
    report, sessions = bridge.sources(runs_dir, run_id)
    deps = [str(p) for p in ([report] if report else []) + sessions]

    def task_review_gui():
        """GUI run review: run_review, pairs, question quality, repair targets."""
        yield {"name": run_id, "actions": [(_gui, [run_id, str(runs_dir), str(out_dir)])],
               "file_dep": deps,
               "targets": [str(out_dir / name) for name in bridge.OUTPUTS],
               "uptodate": [config_changed({"version": VERSIONS["gui"]})]}

    return {"task_review_gui": task_review_gui}


class DoitReviewer:
    """The scenario loop's ``Reviewer``: its review tasks as in-process doit runs."""

    def review_run(self, layout: RunLayout, workspace: Path,
                   score_spec: Path | None) -> TaskRun:
        """Truth, business and judge reviews of a captured run."""
        return run_tasks(review_namespace(layout, workspace, score_spec),
                         db_path(workspace, layout.run_id),
                         error_log=layout.dir / "review_errors.log")

    def review_gui(self, run_id: str, runs_dir: Path, out_dir: Path, db_name: str,
                   workspace: Path) -> TaskRun:
        """The GUI run review bridge of ``run_id``."""
        return run_tasks(gui_namespace(run_id, runs_dir, out_dir), db_path(workspace, db_name),
                         error_log=out_dir / "review_errors.log")
