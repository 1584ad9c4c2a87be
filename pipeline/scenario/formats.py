"""The scenario family's input files and their published schemas (pipeline/schemas/): a case,
a scenario, a pack, a coder config, the judge's score spec and the stage manifest. Each file
is checked against its schema and then its model (pipeline/core/schemas.py); a test keeps the
schema files current, ``python -m pipeline.scenario.formats`` rewrites them."""

from __future__ import annotations

from pydantic import BaseModel

from pipeline.core import schemas

from .coder import CoderConfig
from .contracts import Case, Pack, Scenario
from .judge import ScoreSpec
from .stage_manifest import SCHEMA_PATH, StageManifest

SCHEMAS: dict[str, type[BaseModel]] = {
    "scenario_case": Case,
    "scenario_scenario": Scenario,
    "scenario_pack": Pack,
    "scenario_coder": CoderConfig,
    "judge_score_spec": ScoreSpec,
    SCHEMA_PATH.stem: StageManifest,
}

if __name__ == "__main__":  # pragma: no cover - a maintenance command
    for written in schemas.write(SCHEMAS):
        print(written)
