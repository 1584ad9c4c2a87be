"""The L7 contract: pydantic models of every input and output, and their JSON Schemas.

The models are the one definition; ``pipeline/schemas/l7_*.json`` are generated from
them (``python -m pipeline.l7.contracts``, a test keeps them in sync) and are what the
gates validate files against, so an error names the JSON path of the first violation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.core import schemas, score_spec
from pipeline.core.errors import UserError
from pipeline.core.models import StrictModel
from pipeline.llm.settings import Endpoint, ModelSettings, Price

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
# Ids become file and task names: no dots, slashes or colons, ever.
ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
PipelineEnv = Literal["dev", "staging", "prod"]
TimeOfDay = Literal["dawn", "morning", "midday", "afternoon", "dusk", "evening", "night"]
TIMES: tuple[str, ...] = get_args(TimeOfDay)
SHOTS = ("wide establishing shot", "medium shot", "medium close-up", "close-up",
         "over-the-shoulder shot", "low-angle shot", "high-angle shot")
RuleName = Literal["word_count", "style_keywords", "forbidden_terms", "character_names",
                   "setting_named", "time_of_day"]
RULES: tuple[str, ...] = get_args(RuleName)


class Open(BaseModel):
    """Layer data we pass through: fields we do not know are kept, not refused."""

    model_config = ConfigDict(extra="allow")


# -- inputs ------------------------------------------------------------------------------
class SessionInput(StrictModel):
    """``session_input``: who this L7 session is."""

    schema_version: Literal["l7.session_input.v1"]
    session_id: str = Field(pattern=ID)
    objective_id: str = Field(pattern=ID)
    title: str = Field(min_length=1)
    language: str = "en"
    upstream_layer: str = "L6"
    notes: str = ""


class StylePreset(StrictModel):
    """The look every prompt of the session shares."""

    id: str = Field(pattern=ID)
    description: str = ""
    keywords: list[str] = Field(min_length=1)
    core_keywords: list[str] = Field(
        default=[], description="keywords every scene must carry (checked between neighbours)")
    negative: list[str] = []
    aspect_ratio: str = "16:9"

    @model_validator(mode="after")
    def _core_in_keywords(self) -> StylePreset:
        if len(set(self.keywords)) != len(self.keywords):
            raise ValueError("keywords must be unique")
        unknown = [k for k in self.core_keywords if k not in self.keywords]
        if unknown:
            raise ValueError(f"core keyword '{unknown[0]}' is not one of the keywords")
        return self


class SessionObjective(StrictModel):
    """``session_objective``: what this session must produce and how."""

    schema_version: Literal["l7.session_objective.v1"]
    session_id: str = Field(pattern=ID)
    objective_id: str = Field(pattern=ID)
    objective_type: Literal["scene_prompt_map"] = "scene_prompt_map"
    description: str = ""
    score_spec_ref: str = Field(min_length=1, description="path of the score spec, from the "
                                "folder the runner is started in")
    style_preset: StylePreset
    candidates_per_scene: int | None = Field(
        None, ge=1, le=8, description="overrides the score spec's candidates_per_scene")
    model: ModelSettings = ModelSettings()
    endpoint: Endpoint = Endpoint()
    prices: dict[str, Price] = {}
    max_cost_usd: float | None = Field(None, ge=0)


class Character(Open):
    id: str = Field(pattern=ID)
    name: str = Field(min_length=1)
    look: str = Field(min_length=1, description="what never changes: face, hair, build")
    wardrobe: str = Field(min_length=1, description="default clothing")


class Setting(Open):
    location: str = Field(min_length=1)
    time_of_day: TimeOfDay
    weather: str = ""


class ScenePromptMap(StrictModel):
    """What L7 wrote into a scene of the updated ``scenes_v2.json``."""

    candidate_id: str | None
    prompt: str | None
    negative_prompt: str | None
    status: Literal["selected", "revised", "rejected"]
    weighted_score: float | None
    source: Literal["generated", "base_pack"]
    generation: int = Field(ge=0)


class Scene(Open):
    scene_id: str = Field(pattern=ID)
    title: str = Field(min_length=1)
    characters: list[str] = Field(default=[], description="character ids")
    setting: Setting
    action: str = Field(min_length=1)
    mood: str = Field(min_length=1)
    wardrobe: dict[str, str] = Field(default={}, description="per-scene clothing by id")
    prompt_map: ScenePromptMap | None = None


class L7Stamp(StrictModel):
    session_id: str
    objective_id: str
    source_session_id: str
    prompt_map_pack: str
    pack_blake3: str


class ScenesV2(Open):
    """``scenes_v2.json`` as layer L6 writes it (and as L7 updates it)."""

    schema_version: Literal["scenes_v2"]
    session_id: str = Field(pattern=ID)
    source_layer: str = "L6"
    characters: list[Character] = []
    scenes: list[Scene] = Field(min_length=1)
    l7: L7Stamp | None = None


class Criterion(score_spec.Criterion):  # no docstring: it would enter the JSON Schema
    id: str = Field(pattern=ID)
    kind: Literal["rule", "judge"]
    rule: RuleName | None = Field(None, description="for kind 'rule'")
    params: dict[str, Any] = {}
    rubric: str = Field("", description="for kind 'judge': what 1..5 means")
    weight: float = Field(gt=0)
    threshold: float = Field(0.0, ge=0, le=1)
    hard: bool = Field(False, description="a candidate below the threshold is never selected")
    description: str = ""

    @model_validator(mode="after")
    def _kind_fields(self) -> Criterion:
        if self.kind == "rule" and self.rule is None:
            raise ValueError(f"criterion '{self.id}' is a rule and needs 'rule' "
                             f"(one of {', '.join(RULES)})")
        if self.kind == "judge" and not self.rubric.strip():
            raise ValueError(f"criterion '{self.id}' is judged and needs a 'rubric'")
        return self


class ScoreSpec(score_spec.ScoreSpec):
    """``score_spec_prompt.json``: weighted criteria, thresholds, hard constraints."""

    schema_version: Literal["l7.score_spec.v1"]
    spec_id: str = Field(pattern=ID)
    version: str = Field(min_length=1)
    candidates_per_scene: int = Field(3, ge=1, le=8)
    min_weighted_score: float = Field(0.0, ge=0, le=1, description="a hard constraint too")
    criteria: list[Criterion] = Field(min_length=1)


# -- the prompt itself -------------------------------------------------------------------
class CastEntry(StrictModel):
    action: str = Field(min_length=1)
    wardrobe: str = Field(min_length=1)


class PromptDraft(StrictModel):
    """What the model writes for one candidate; the prompt text is rendered from it."""

    shot: str = Field(min_length=1)
    description: str = Field(min_length=1)
    cast: dict[str, CastEntry] = {}
    environment: str = Field(min_length=1)
    time_of_day: TimeOfDay
    lighting: str = Field(min_length=1)
    style_keywords: list[str] = Field(min_length=1)


class Candidate(StrictModel):
    candidate_id: str
    scene_id: str
    kind: Literal["initial", "revision"]
    index: int = Field(ge=1)
    generation: int = Field(ge=0)
    angle: str
    draft: PromptDraft
    prompt: str
    negative_prompt: str
    request_hash: str
    model: str


# -- outputs -----------------------------------------------------------------------------
class Check(StrictModel):
    id: str
    status: Literal["passed", "failed"]
    detail: str


class InputRef(StrictModel):
    path: str
    blake3: str


class ScoreSpecUse(StrictModel):
    path: str
    ref: str
    spec_id: str
    version: str
    blake3: str
    override: bool
    override_reason: str | None


class CrossSession(StrictModel):
    allowed: bool
    used: bool
    scenes_v2_session_id: str


class PartialRerun(StrictModel):
    scene_ids: list[str]
    base_prompt_map_pack: str
    base_pack_blake3: str
    generations: dict[str, int]


class PolicyRecord(StrictModel):
    pipeline_env: PipelineEnv
    score_spec: ScoreSpecUse
    cross_session: CrossSession
    partial_rerun: PartialRerun | None


class GateInReport(StrictModel):
    schema_version: Literal["l7.gate_in_report.v1"]
    session_id: str
    objective_id: str
    status: Literal["passed", "failed"]
    inputs: dict[str, InputRef]
    policy: PolicyRecord
    checks: list[Check]


class SceneCandidates(StrictModel):
    scene_id: str
    candidates: list[Candidate]


class CandidatesDoc(StrictModel):
    schema_version: Literal["l7.candidates_prompt.v1"]
    session_id: str
    objective_id: str
    merged_from_base: list[str]
    scenes: list[SceneCandidates]


class CriterionScore(StrictModel):
    criterion_id: str
    kind: Literal["rule", "judge"]
    weight: float
    score: float = Field(ge=0, le=1)
    threshold: float
    hard: bool
    passed: bool
    reason: str


class Evaluation(StrictModel):
    candidate_id: str
    scene_id: str
    criteria: list[CriterionScore]
    weighted_score: float = Field(ge=0, le=1)
    hard_constraints_passed: bool
    failed_hard_constraints: list[str]
    soft_thresholds_met: int
    eligible: bool


class SceneEvaluations(StrictModel):
    scene_id: str
    evaluations: list[Evaluation]


class EvaluationDoc(StrictModel):
    schema_version: Literal["l7.evaluation_report_prompt.v1"]
    session_id: str
    objective_id: str
    score_spec: ScoreSpecUse
    min_weighted_score: float
    scenes: list[SceneEvaluations]


class RankEntry(StrictModel):
    candidate_id: str
    rank: int = Field(ge=1)
    weighted_score: float
    eligible: bool
    outcome: Literal["won", "lost"]
    reason: str


class SelectionRound(StrictModel):
    round: Literal["initial", "revision"]
    status: Literal["selected", "rejected"]
    winner: str | None
    ranking: list[RankEntry]


class SceneTrace(StrictModel):
    scene_id: str
    status: Literal["selected", "revised", "rejected"]
    winner: str | None
    rounds: list[SelectionRound]


class SelectionTraceDoc(StrictModel):
    schema_version: Literal["l7.selection_trace_prompt.v1"]
    session_id: str
    objective_id: str
    tie_break: str
    merged_from_base: list[str]
    scenes: list[SceneTrace]


FindingCategory = Literal["character_name", "character_look", "wardrobe", "setting",
                          "time_of_day", "style"]


class Finding(StrictModel):
    finding_id: str
    scene_id: str
    category: FindingCategory
    severity: Literal["error", "warning"]
    message: str
    expected: str | None = None
    found: str | None = None


class PairAudit(StrictModel):
    pair: list[str] = Field(min_length=2, max_length=2)
    findings: list[Finding]
    remaining: list[Finding]


class ContinuityDoc(StrictModel):
    schema_version: Literal["l7.continuity_audit_prompt.v1"]
    session_id: str
    objective_id: str
    pairs: list[PairAudit]
    scenes_with_findings: list[str]
    revised_scenes: list[str]
    remaining_errors: int


class PackScene(StrictModel):
    scene_id: str
    title: str
    source: Literal["generated", "base_pack"]
    generation: int = Field(ge=0)
    status: Literal["selected", "revised", "rejected"]
    candidate_id: str | None
    prompt: str | None
    negative_prompt: str | None
    draft: PromptDraft | None
    weighted_score: float | None
    hard_constraints_passed: bool
    context_blake3: str


class PromptMapPack(StrictModel):
    """``prompt_map_pack.json``: the selected prompt of every scene."""

    schema_version: Literal["l7.prompt_map_pack.v1"]
    session_id: str = Field(pattern=ID)
    objective_id: str = Field(pattern=ID)
    style_preset: StylePreset
    score_spec: ScoreSpecUse
    pipeline_env: PipelineEnv
    scenes: list[PackScene] = Field(min_length=1)


class GateOutReport(StrictModel):
    schema_version: Literal["l7.gate_out_report.v1"]
    session_id: str
    objective_id: str
    status: Literal["passed", "failed"]
    checks: list[Check]


class StageRuntime(StrictModel):
    stage: str
    tasks: int
    elapsed_s: float
    llm_calls: int
    cache_hits: int
    cache_misses: int
    tokens_in: int
    tokens_out: int
    cost_usd: float


class TaskRuntime(StrictModel):
    task: str
    stage: str
    started_at: str | None
    finished_at: str | None
    elapsed_s: float
    llm_calls: int
    cache_hits: int
    tokens_in: int
    tokens_out: int
    cost_usd: float


class RuntimeLog(StrictModel):
    schema_version: Literal["l7.runtime_log.v1"]
    session_id: str
    objective_id: str
    note: str
    stages: list[StageRuntime]
    totals: StageRuntime
    tasks: list[TaskRuntime]


class OutputRef(StrictModel):
    blake3: str


class SessionOutput(StrictModel):
    schema_version: Literal["l7.session_output.v1"]
    session_id: str
    objective_id: str
    status: Literal["success", "gate_failed"]
    exit_code: Literal[0, 1]
    failed_gate: Literal["gate_in", "gate_out"] | None
    mode: Literal["full", "partial"]
    policy: PolicyRecord
    counts: dict[str, int]
    outputs: dict[str, OutputRef]


# -- the files ---------------------------------------------------------------------------
# schema name -> model; the file is pipeline/schemas/l7_<name>.json
SCHEMAS: dict[str, type[BaseModel]] = {
    "session_input": SessionInput,
    "session_objective": SessionObjective,
    "scenes_v2": ScenesV2,
    "score_spec": ScoreSpec,
    "prompt_map_pack": PromptMapPack,
    "gate_in_report": GateInReport,
    "candidates_prompt": CandidatesDoc,
    "evaluation_report_prompt": EvaluationDoc,
    "selection_trace_prompt": SelectionTraceDoc,
    "continuity_audit_prompt": ContinuityDoc,
    "gate_out_report": GateOutReport,
    "runtime_log": RuntimeLog,
    "session_output": SessionOutput,
}
# output file -> schema name, in the spec's order
OUTPUT_FILES: dict[str, str] = {
    "gate_in_report.json": "gate_in_report",
    "candidates_prompt.json": "candidates_prompt",
    "evaluation_report_prompt.json": "evaluation_report_prompt",
    "selection_trace_prompt.json": "selection_trace_prompt",
    "continuity_audit_prompt.json": "continuity_audit_prompt",
    "prompt_map_pack.json": "prompt_map_pack",
    "scenes_v2.json": "scenes_v2",
    "runtime_log_l7.json": "runtime_log",
    "session_output.json": "session_output",
    "gate_out_report.json": "gate_out_report",
}


def schema_path(name: str) -> Path:
    """Where the JSON Schema ``name`` lives in the package."""
    return schemas.schema_path(f"l7_{name}")


def build_schema(name: str) -> dict:
    """The JSON Schema (Draft 2020-12) of ``name``, generated from its model."""
    return schemas.generate(SCHEMAS[name], f"https://scenemake.dev/schemas/l7_{name}.json")


def validator(name: str) -> Draft202012Validator:
    """A validator for the schema file ``name`` (read once per process)."""
    return schemas.validator(f"l7_{name}")


def first_error(data: Any, name: str) -> tuple[str, str] | None:
    """(JSON path, message) of the most relevant schema violation, or None."""
    return schemas.first_error(data, f"l7_{name}")


def check_schema(data: Any, name: str, path: str) -> None:
    """Raise a one-line UserError naming the JSON path if ``data`` violates ``name``."""
    err = first_error(data, name)
    if err is not None:
        json_path, message = err
        raise UserError(f"schema violation at {json_path}: {message}", path=path,
                        fix=f"see pipeline/schemas/l7_{name}.json")


def write_schemas() -> list[Path]:
    """Regenerate every ``pipeline/schemas/l7_*.json`` from the models."""
    from pipeline.core.store import atomic_write_json

    written = []
    for name in SCHEMAS:
        atomic_write_json(schema_path(name), build_schema(name))
        written.append(schema_path(name))
    return written


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    for p in write_schemas():
        print(p)
