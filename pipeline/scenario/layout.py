"""Where a captured run lives on disk, read back from its manifests.

A scenario run (``run-case``, ``run-scenario``)::

    <artifacts>/<run_id>/scenario_manifest.json, scenario_state.json, ..., steps/<step_id>/...

A pack run (``run-pack``)::

    <artifacts>/<run_id>/pack_manifest.json, pack_state.json, ...,
                         scenarios/<scenario_id>/scenario_manifest.json, steps/<step_id>/...

Reviews, final status and the save gate only read what is on disk, so a run can be
reviewed, resumed or saved by a later process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, loads

STEP_FILES = ("output.md", "debug.json", "turn.json", "session.json", "assistant_response.json",
              "step_state.json")
STATUSES = ("accepted", "partial", "blocked", "needs_exact_capability")
# worst first: a blocked runtime outranks a missing capability, which outranks hardening
_RANK = {"blocked": 0, "needs_exact_capability": 1, "partial": 2, "accepted": 3}


def rollup(statuses: list[str]) -> str:
    """The status of a whole made of parts with ``statuses`` (the worst one wins)."""
    if not statuses:
        return "blocked"
    return min(statuses, key=lambda s: _RANK.get(s, 0))


def read_json_or_none(path: Path) -> Any:
    """The JSON in ``path``, or None when absent or unreadable (never raises)."""
    try:
        return loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # JSONTooDeep is a ValueError
        return None


@dataclass
class StepRef:
    """One step of a run: its scenario, id, spec (question, expect) and folder."""

    scenario_id: str
    step_id: str
    spec: dict
    dir: Path

    @property
    def key(self) -> str:
        return f"{self.scenario_id}/{self.step_id}"

    def file(self, name: str) -> Path:
        return self.dir / name

    def state(self) -> dict | None:
        return read_json_or_none(self.dir / "step_state.json")

    def response(self) -> dict | None:
        return read_json_or_none(self.dir / "assistant_response.json")


@dataclass
class ScenarioRef:
    """A scenario of a run and its folder."""

    scenario_id: str
    dir: Path
    manifest: dict
    steps: list[StepRef] = field(default_factory=list)


@dataclass
class RunLayout:
    """A run folder read back from its manifest(s)."""

    run_id: str
    dir: Path
    kind: str  # pack | scenario
    manifest: dict
    scenarios: list[ScenarioRef]

    @property
    def manifest_path(self) -> Path:
        return self.dir / ("pack_manifest.json" if self.kind == "pack"
                           else "scenario_manifest.json")

    @property
    def state_path(self) -> Path:
        return self.dir / ("pack_state.json" if self.kind == "pack" else "scenario_state.json")

    def steps(self) -> list[StepRef]:
        return [st for sc in self.scenarios for st in sc.steps]

    def manifest_files(self) -> list[Path]:
        """Every manifest of the run (a review depends on them: they hold the facts)."""
        files = [self.manifest_path]
        if self.kind == "pack":
            files += [sc.dir / "scenario_manifest.json" for sc in self.scenarios]
        return files

    @property
    def waivers(self) -> list[dict]:
        return list(self.manifest.get("business_waivers") or [])

    @property
    def acceptance_gate(self) -> dict:
        return dict(self.manifest.get("acceptance_gate") or {})

    @classmethod
    def load(cls, run_dir: Path) -> RunLayout:
        """Read a run folder; UserError when it is not one."""
        run_dir = Path(run_dir)
        pack = read_json_or_none(run_dir / "pack_manifest.json")
        if isinstance(pack, dict):
            scenarios = []
            for entry in pack.get("scenarios", []):
                sdir = run_dir / "scenarios" / entry["scenario_id"]
                scenarios.append(_scenario(sdir, entry["scenario_id"]))
            return cls(pack["run_id"], run_dir, "pack", pack, scenarios)
        scen = read_json_or_none(run_dir / "scenario_manifest.json")
        if isinstance(scen, dict):
            return cls(scen["run_id"], run_dir, "scenario", scen,
                       [_scenario(run_dir, scen["scenario_id"])])
        raise UserError("not a captured run (no readable pack_manifest.json or "
                        "scenario_manifest.json)", path=display_path(run_dir),
                        fix="pass the folder a run-case/run-scenario/run-pack wrote")


def _scenario(sdir: Path, scenario_id: str) -> ScenarioRef:
    manifest = read_json_or_none(sdir / "scenario_manifest.json")
    if not isinstance(manifest, dict):
        raise UserError("scenario manifest missing or unreadable",
                        path=display_path(sdir / "scenario_manifest.json"),
                        fix="rerun the capture to rewrite it")
    ref = ScenarioRef(scenario_id, sdir, manifest)
    for step in manifest.get("steps", []):
        ref.steps.append(StepRef(scenario_id, step["step_id"], step,
                                 sdir / "steps" / step["step_id"]))
    return ref
