"""The save gate: a run goes to the autoruns store only once it is proven.

Every condition must hold (``save --spec ... --validated-run-dir ...``):

- ``run_matches_spec``: the run was captured from this spec (same content address);
- ``final_status_accepted``: ``pack_state.final_status = accepted``;
- ``acceptance_gate_passed``: ``pack_state.acceptance_gate_passed = true``;
- ``truth_pass``: ``truth_review.summary.overall_status = pass``;
- ``business_pass``: ``business_review.overall_business_status = pass``;
- ``zero_unresolved_p0``: no unresolved P0 business finding;
- ``zero_business_answer_failures``: no step whose visible answer failed the business review;
- ``evidence_unchanged``: every step's captured answer, session and turn are the files the
  capture wrote (their blake3 is recorded in ``step_state.json``): a hand edit is refused
  even when the reviews were not run again.

For a run-case/run-scenario run, ``scenario_state.json`` stands in for ``pack_state.json``.
``--allow-unvalidated --unvalidated-reason "..."`` saves a run that fails the gate as an
explicitly unvalidated draft; it is never semantic proof.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, read_json_or_none

from .capture import evidence_edits
from .contracts import Pack, Scenario, spec_hash
from .layout import RunLayout


@dataclass
class Condition:
    """One condition of the gate and what was found."""

    name: str
    passed: bool
    expected: str
    actual: Any

    def as_json(self) -> dict:
        return {"name": self.name, "passed": self.passed, "expected": self.expected,
                "actual": self.actual}


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return "missing"
        doc = doc[key]
    return doc


def evaluate(spec: Pack | Scenario, layout: RunLayout) -> list[Condition]:
    """Every condition of the gate for ``layout`` captured from ``spec``."""
    state = read_json_or_none(layout.state_path)
    truth = read_json_or_none(layout.dir / "truth_review.json")
    business = read_json_or_none(layout.dir / "business_review.json")
    run_spec = layout.manifest.get("spec_hash")
    want = spec_hash(spec)
    unresolved = _get(business, "summary", "unresolved_p0")
    failures = _get(business, "summary", "business_answer_failures")
    state_name = layout.state_path.name
    edited = [f"{step.key}: {name}" for step in layout.steps()
              for name in evidence_edits(step.dir, step.state())]
    return [
        Condition("run_matches_spec", run_spec == want,
                  "the run was captured from this spec",
                  "same spec" if run_spec == want else
                  f"captured from spec {str(run_spec)[:12]}, this spec is {want[:12]}"),
        Condition("final_status_accepted", _get(state, "final_status") == "accepted",
                  f"{state_name} final_status = accepted", _get(state, "final_status")),
        Condition("acceptance_gate_passed", _get(state, "acceptance_gate_passed") is True,
                  f"{state_name} acceptance_gate_passed = true",
                  _get(state, "acceptance_gate_passed")),
        Condition("truth_pass", _get(truth, "summary", "overall_status") == "pass",
                  "truth_review summary.overall_status = pass",
                  _get(truth, "summary", "overall_status")),
        Condition("business_pass", _get(business, "overall_business_status") == "pass",
                  "business_review overall_business_status = pass",
                  _get(business, "overall_business_status")),
        Condition("zero_unresolved_p0", unresolved == 0, "0 unresolved P0 findings", unresolved),
        Condition("zero_business_answer_failures", failures == 0,
                  "0 business-answer failures", failures),
        Condition("evidence_unchanged", not edited,
                  "every captured answer as the capture wrote it",
                  "unchanged" if not edited else
                  f"edited after capture: {', '.join(edited[:3])}"
                  + (" ..." if len(edited) > 3 else "")),
    ]


def check_reason(allow_unvalidated: bool, reason: str | None) -> str | None:
    """The validated unvalidated-reason; UserError when the flags do not fit together."""
    if reason is not None and not allow_unvalidated:
        raise UserError("--unvalidated-reason is only for --allow-unvalidated")
    if allow_unvalidated:
        if reason is None or not reason.strip():
            raise UserError("--allow-unvalidated needs a non-empty --unvalidated-reason",
                            fix='say why this run is saved without validation, e.g. '
                                '--unvalidated-reason "manual draft before live acceptance"')
        return reason.strip()
    return None


def load_run(run_dir: Path) -> RunLayout:
    """The validated run folder; UserError when it is not a captured run."""
    if not Path(run_dir).is_dir():
        raise UserError("run folder not found", path=display_path(run_dir),
                        fix="pass the folder run-pack (or run-scenario/run-case) wrote")
    return RunLayout.load(Path(run_dir))
