"""The stage manifest of the stage-level AGENT loop, and its JSON Schema.

The schema, ``pipeline/schemas/stage_agent_loop_manifest.schema.json``, is generated from
:class:`StageManifest` (``python -m pipeline.scenario.stage_manifest`` rewrites it; a test
checks that it is current). Relative paths in a manifest are relative to the manifest's
folder (manifests live in ``<workspace>/orchestration/``, so ``workspace`` defaults to
``..``). A bad manifest is refused with one line naming the file and the JSON path.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import ConfigDict, Field

from pipeline.core import schemas
from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, read_json
from pipeline.core.models import StrictModel
from pipeline.core.store import atomic_write_text, dump_json

from .analyst import AnalystGate, Flag
from .coder import CoderConfig
from .contracts import ID_PATTERN, parse

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / \
    "stage_agent_loop_manifest.schema.json"
STAGE_FLAGS: list[Flag] = ["business_usefulness", "direct_answer", "temporal_honesty",
                           "field_truth", "answer_layering"]


class StageGate(AnalystGate):
    """The stage gate: the analyst gate with the stricter stage defaults."""

    target_score: float = Field(88, ge=0, le=100)
    max_unresolved_p0: int = Field(0, ge=0)
    max_unresolved_p1: int | None = Field(0, ge=0)
    required_flags: list[Flag] = Field(default_factory=lambda: list(STAGE_FLAGS))


class StageAssistant(StrictModel):
    """How the stage's pack runs reach the assistant."""


    base_url: str | None = Field(None, description="assistant API root (default: the "
                                 "reference assistant on http://127.0.0.1:8765, started "
                                 "for each capture if nothing answers)")
    start_assistant: bool = Field(False, description="start the reference assistant at "
                                  "base_url if nothing answers there")
    timeout_s: float = Field(30, gt=0, description="seconds to wait for one answer")
    retries: int = Field(2, ge=0, description="extra tries on transient errors")


class StageManifest(StrictModel):
    """One development stage: its question pack, its gate, its coder."""

    model_config = ConfigDict(populate_by_name=True,
                              json_schema_extra={"$id": "stage_agent_loop_manifest.schema.json"})

    comment: str | list[str] = Field("", alias="$comment")
    stage_id: str = Field(pattern=ID_PATTERN, max_length=80,
                          description="names the stage's folder under "
                                      "artifacts/domain_runs/stage_agent_loops/")
    title: str = ""
    goal: str = Field("", description="what the stage delivers, for the handoffs")
    pack: str = Field(min_length=1, description="the stage's pack manifest (relative to "
                                                "this file)")
    workspace: str = Field("..", description="workspace root (relative to this file)")
    gate: StageGate = StageGate()
    max_iterations: int = Field(3, ge=1, le=100, description="pack runs of one `run`")
    max_targets: int = Field(5, ge=1, le=50, description="repair targets per repair")
    judge: bool = Field(True, description="score answers with the LLM judge")
    score_spec: str | None = Field(None, description="judge rubric (relative to this file; "
                                   "default score_specs/score_spec_answer.json in the "
                                   "current folder)")
    assistant: StageAssistant = StageAssistant()
    coder: CoderConfig | None = Field(None, description="the coder command; its cwd is "
                                      "relative to this file (default: the current folder)")
    gui_runs_dir: str | None = Field(None, description="root of llm_normalizer/ holding "
                                     "the GUI runs (relative to this file; default: the "
                                     "workspace)")
    save_autorun: bool = Field(True, description="save an accepted pack run to the "
                                                 "autoruns store")
    autoruns_dir: str | None = Field(None, description="default <workspace>/llm_normalizer/"
                                     "data/autoruns")


# What a scenemake workspace holds (one of them is enough: a fresh one may have little).
_WORKSPACE_MARKS = (".scenemake", "scenarios", "orchestration", "books", "artifacts",
                    "llm_normalizer")


def load(path: Path) -> StageManifest:
    """The manifest at ``path``; UserError naming the file and JSON path when invalid.

    Its ``workspace`` must be a scenemake workspace (a stage writes its runs, reviews and
    autoruns there): ``"/"``, a missing folder or an unrelated one is refused.
    """
    manifest = parse(StageManifest, read_json(path, "stage manifest"), path,
                     schema=SCHEMA_PATH.stem)
    root = (Path(path).parent / manifest.workspace).resolve()
    problem = None
    if root == Path(root.anchor):
        problem = "is the filesystem root"
    elif not root.is_dir():
        problem = "is not a folder"
    elif not any((root / mark).exists() for mark in _WORKSPACE_MARKS):
        problem = "is not a scenemake workspace (it has none of " + \
            ", ".join(_WORKSPACE_MARKS) + ")"
    if problem:
        raise UserError(f"workspace {manifest.workspace!r} ({root}) {problem}",
                        path=display_path(path), field="workspace",
                        fix="name the workspace folder, relative to this file (default '..')")
    return manifest


def schema() -> dict:
    """The JSON Schema of a stage manifest."""
    return schemas.generate(StageManifest, SCHEMA_PATH.name)


def schema_text() -> str:
    """The schema file's exact text."""
    return dump_json(schema())


if __name__ == "__main__":
    atomic_write_text(SCHEMA_PATH, schema_text())
    print(f"wrote {SCHEMA_PATH}")
    sys.exit(0)
