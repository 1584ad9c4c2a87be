"""The input contracts of the scenario loop: cases, scenarios, packs (pydantic), and the
assistant API (JSON Schema, ``pipeline/schemas/assistant_api.json``).

Every loading error is one line naming the file and the JSON path of the bad field, e.g.
``workspace/scenarios/packs/x.json: $.scenarios[1].steps[0].question: ...``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from pipeline.core import schemas
from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_json
from pipeline.core.jsonio import display_path, parse_model, read_json
from pipeline.core.models import StrictModel

from . import placeholders

ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
_RESERVED = set(placeholders.SPECIAL_ROOTS)


class Fact(StrictModel):
    """One expected fact about a step's captured answer (a truth review check).

    Exactly one check: ``equals`` (the value at ``path``), ``present`` (``path`` exists and is
    not null), ``count`` (length of the list at ``path``), ``includes`` (the list at ``path``,
    default ``entries``, has an entry with these field values; a list means each of them),
    ``reply_contains`` (the visible answer contains this text).
    """

    path: str | None = None
    equals: Any = None
    present: bool | None = None
    count: int | None = Field(None, ge=0)
    includes: dict[str, Any] | list[dict[str, Any]] | None = None
    reply_contains: str | None = Field(None, min_length=1)
    note: str = ""

    @model_validator(mode="after")
    def _one_check(self) -> Fact:
        checks = [k for k in ("equals", "present", "count", "includes", "reply_contains")
                  if k in self.model_fields_set]
        if len(checks) != 1:
            raise ValueError("a fact needs exactly one of equals, present, count, includes, "
                             f"reply_contains (got {', '.join(checks) or 'none'})")
        if checks[0] in ("equals", "present", "count") and not self.path:
            raise ValueError(f"'{checks[0]}' needs a 'path' (e.g. entries[0].item)")
        if self.path:
            try:
                placeholders.parse_path(self.path)
            except placeholders.PlaceholderSyntaxError as exc:
                raise ValueError(f"path: {exc}") from None
        return self

    @property
    def check(self) -> str:
        return next(k for k in ("equals", "present", "count", "includes", "reply_contains")
                    if k in self.model_fields_set)


class Expect(StrictModel):
    """What a step should get: capture checks (route, capability, entries) and facts."""

    route: str | None = None
    capability: Literal["answered", "unsupported", "clarification"] = "answered"
    min_entries: int | None = Field(None, ge=0)
    facts: list[Fact] = []


class Step(StrictModel):
    """One question of a scenario; ``question`` may hold placeholders."""

    step_id: str = Field(pattern=ID_PATTERN, max_length=80)
    question: str = Field(min_length=1, max_length=4000)
    title: str = ""
    expect: Expect = Expect()

    @field_validator("step_id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in _RESERVED:
            raise ValueError(f"step_id '{value}' is reserved for placeholders")
        return value

    @field_validator("question")
    @classmethod
    def _syntax(cls, value: str) -> str:
        try:
            placeholders.find(value)
        except placeholders.PlaceholderSyntaxError as exc:
            raise ValueError(str(exc)) from None
        return value


class Scenario(StrictModel):
    """Ordered steps asked in one assistant session."""

    scenario_id: str = Field(pattern=ID_PATTERN, max_length=80)
    title: str = ""
    brief: str = ""
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Scenario:
        seen: set[str] = set()
        for step in self.steps:
            if step.step_id in seen:
                raise ValueError(f"duplicate step_id '{step.step_id}'")
            seen.add(step.step_id)
        return self


class ScenarioRef(StrictModel):
    """A scenario kept in its own file, relative to the pack file."""

    path: str = Field(min_length=1)


class Waiver(StrictModel):
    """A business finding accepted on purpose (it no longer counts as unresolved)."""

    scenario_id: str
    step_id: str
    code: str
    reason: str = Field(min_length=1)


class AcceptanceGate(StrictModel):
    """Extra conditions of a pack's acceptance gate."""

    min_judge_score: float | None = Field(None, ge=0, le=100)


def _scenario_kind(value: Any) -> str:
    if isinstance(value, dict) and "path" in value:
        return "ref"
    return "inline" if not isinstance(value, ScenarioRef) else "ref"


# A scenario is inline or a {"path": ...} reference; the discriminator keeps errors to the
# branch the document meant, so they name the right field.
ScenarioItem = Annotated[Annotated[Scenario, Tag("inline")] | Annotated[ScenarioRef, Tag("ref")],
                         Discriminator(_scenario_kind)]


class Pack(StrictModel):
    """Several scenarios captured into one aggregate backlog (a truth-harness spec)."""

    pack_id: str = Field(pattern=ID_PATTERN, max_length=80)
    title: str = ""
    domain: str = ""
    brief: str = ""
    scenarios: list[ScenarioItem] = Field(min_length=1)
    acceptance_gate: AcceptanceGate = AcceptanceGate()
    business_waivers: list[Waiver] = []


class Case(StrictModel):
    """One question (``run-case --case FILE``)."""

    case_id: str = Field("case", pattern=ID_PATTERN, max_length=80)
    question: str = Field(min_length=1, max_length=4000)
    title: str = ""
    expect: Expect = Expect()


# -- loading ----------------------------------------------------------------------------
def parse(model: type[BaseModel], data: Any, path: Path, prefix: str = "", *,
          schema: str | None = None) -> Any:
    """Validate ``data``; the error names the file and the JSON path of the first problem.
    ``schema``: the published schema the file must also match (pipeline/core/schemas.py)."""
    if schema is not None:
        return schemas.parse(model, data, path, schema=schema, within=prefix,
                             as_json_path=True)
    return parse_model(model, data, str(path), within=prefix, as_json_path=True)


def load_scenario(path: Path) -> Scenario:
    """A scenario file (``run-scenario --scenario``)."""
    return parse(Scenario, read_json(path, "scenario"), path, schema="scenario_scenario")


def load_case(path: Path) -> Case:
    """A case file (``run-case --case``)."""
    return parse(Case, read_json(path, "case"), path, schema="scenario_case")


def load_pack(path: Path) -> Pack:
    """A pack manifest with every ``{"path": ...}`` scenario loaded inline."""
    pack: Pack = parse(Pack, read_json(path, "pack manifest"), path, schema="scenario_pack")
    scenarios: list[Scenario | ScenarioRef] = []
    for i, item in enumerate(pack.scenarios):
        if isinstance(item, ScenarioRef):
            ref = (Path(path).parent / item.path)
            if not ref.exists():
                raise UserError(f"$.scenarios[{i}].path: scenario file '{item.path}' not found",
                                path=display_path(path))
            item = parse(Scenario, read_json(ref, "scenario"), ref, schema="scenario_scenario")
        scenarios.append(item)
    ids = [s.scenario_id for s in scenarios]  # type: ignore[union-attr]
    for i, sid in enumerate(ids):
        if sid in ids[:i]:
            raise UserError(f"$.scenarios[{i}].scenario_id: duplicate scenario_id '{sid}'",
                            path=display_path(path))
    known = {sid: {st.step_id for st in s.steps}  # type: ignore[union-attr]
             for sid, s in zip(ids, scenarios, strict=True)}
    for i, w in enumerate(pack.business_waivers):
        if w.scenario_id not in known or w.step_id not in known[w.scenario_id]:
            raise UserError(f"$.business_waivers[{i}]: no step {w.scenario_id}/{w.step_id} in "
                            "this pack", path=display_path(path))
    return pack.model_copy(update={"scenarios": scenarios})


def step_references(scenario: Scenario) -> dict[str, list[str]]:
    """Per step: messages for placeholders whose root is not an earlier step (blocks it)."""
    problems: dict[str, list[str]] = {}
    earlier: list[str] = []
    all_ids = [s.step_id for s in scenario.steps]
    for step in scenario.steps:
        for ph in placeholders.find(step.question):
            if ph.root in _RESERVED or ph.root in earlier:
                continue
            if ph.root in all_ids:
                why = f"{ph.raw} refers to step '{ph.root}', which comes later"
            else:
                why = f"{ph.raw} refers to unknown step '{ph.root}'"
            shown = ", ".join(earlier + sorted(_RESERVED))
            problems.setdefault(step.step_id, []).append(f"{why} (available: {shown})")
        earlier.append(step.step_id)
    return problems


def scenario_from_case(case: Case) -> Scenario:
    """A case is a one-step scenario (step ``step_01``)."""
    return Scenario(scenario_id=case.case_id, title=case.title or case.question,
                    steps=[Step(step_id="step_01", question=case.question, title=case.title,
                                expect=case.expect)])


def spec_hash(model: BaseModel) -> str:
    """Content address of a loaded spec (references resolved), for the save gate."""
    return hash_json(model.model_dump(mode="json"))


_SLUG_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe id fragment of ``text``."""
    return _SLUG_RE.sub("-", text).strip("-.")[:limit] or "x"
