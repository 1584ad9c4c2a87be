"""The book's phases, declared once: name, kind, inputs, outputs, answer model, how it runs.

Everything that knows a phase reads this table: ``PHASES`` and ``LLM_PHASES`` (and so the
task generators, the ledger, the report and the commands), ``phases.layout`` (the files a
phase reads and writes), the runner (which step runs it, which answer model an LLM phase
asks for) and the estimate (who makes a missing input). Adding a phase is one entry here,
plus its templates and its step if it needs new ones.

Task loading imports this module on every doit command, the no-op too: it holds strings
only (the answer model is named, and resolved when a phase runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pydantic import BaseModel

LLM: Literal["llm"] = "llm"
CODE: Literal["code"] = "code"
# The two files every LLM phase writes first, before what its answer holds.
LLM_FILES = ("prompt.json", "response.json")


@dataclass(frozen=True)
class Input:
    """An artifact a phase reads, under ``name``: the output ``output`` (by default the same
    name) of phase ``phase`` of this scene, or with ``previous_scene`` of the scene before
    (the book's initial state ``state.json`` for the first scene)."""

    name: str
    phase: str
    output: str = ""
    previous_scene: bool = False

    @property
    def made_as(self) -> str:
        """The name of this artifact among its maker's outputs."""
        return self.output or self.name


@dataclass(frozen=True)
class Phase:
    """One phase of a scene.

    ``outputs`` are files of the phase's folder ``draft/scenes/<scene>/<phase>/``; an
    artifact's name is its file's stem (``registries/threads.json`` is ``threads``). An LLM
    phase writes ``prompt.json`` and ``response.json`` first, then its answer split into
    ``outputs``: an output named like a field of the answer ``model`` is that field, the one
    that is not holds the whole answer; ``.md`` is text, anything else JSON.
    ``state_input`` names the input holding the scene's pre-state (recorded in the ledger
    with its hash; ``force_resume`` may keep an LLM result over a changed one). ``run`` is
    the runner's step for the phase: every LLM phase shares ``llm``, a code phase has its own.
    ``asks`` names the LLM phases whose prompts a code phase may ask again (lint's repair
    rounds): their templates are the phase's too (hashed, guarded, in its ledger entry).
    """

    name: str
    kind: Literal["llm", "code"]
    inputs: tuple[Input, ...]
    outputs: tuple[str, ...]
    run: str
    model: str | None = None  # the answer's class in pipeline.book.models (LLM phases)
    state_input: str | None = None
    asks: tuple[str, ...] = ()
    doc: str = ""  # one line for `doit list`
    # artifact name -> file in the phase's folder, every output in writing order
    files: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = (LLM_FILES if self.llm else ()) + self.outputs
        # computed once: layout() reads it for every scene of the book
        object.__setattr__(self, "files", {
            file.rpartition("/")[2].partition(".")[0]: file for file in names})

    @property
    def llm(self) -> bool:
        """Whether the phase asks the model (and so has templates, a prompt and a cost)."""
        return self.kind == LLM

    @property
    def asks_model(self) -> bool:
        """Whether the phase may ask the model (an LLM phase, or one with ``asks``)."""
        return self.llm or bool(self.asks)

    @property
    def template_roles(self) -> dict[str, str]:
        """The templates the phase renders: role -> template name (``phase`` is an LLM
        phase's own template; a phase that ``asks`` renders those phases' templates)."""
        if self.llm:
            return {"system": "system", "phase": self.name}
        if self.asks:
            return {"system": "system", **{name: name for name in self.asks}}
        return {}

    @property
    def answer_model(self) -> type[BaseModel]:
        """The pydantic model of an LLM phase's answer."""
        from pipeline.book import models

        if self.model is None:
            raise TypeError(f"phase {self.name} asks no model")
        return getattr(models, self.model)


def _inputs(*items: str | Input) -> tuple[Input, ...]:
    """Inputs from ``"name@phase"`` shorthands (or Input objects, for the unusual ones)."""
    return tuple(Input(*item.split("@")) if isinstance(item, str) else item for item in items)


CARD, STATE, PACK = "scene_card@plan", "state@preflight", "pack@continuity_pack"

# In pipeline order: a phase reads only what the phases above it (or the scene before) made.
TABLE: tuple[Phase, ...] = (
    # depends only on the outline, templates and config: all plans can run at once
    Phase("plan", LLM, (), ("scene_card.json",), run="llm", model="SceneCard",
          doc="Scene card of each scene (LLM); depends only on the outline, templates and config."),
    Phase("preflight", CODE,
          _inputs(CARD, Input("pre_state", "commit", "post_state", previous_scene=True)),
          ("patch.json", "state.json", "report.json"), run="preflight", state_input="pre_state",
          doc="Registers what the scene introduces into its pre-state (plain code)."),
    Phase("continuity_pack", LLM, _inputs(CARD, STATE), ("pack.json",), run="llm",
          model="ContinuityPack", state_input="state",
          doc="Facts the scene must keep true (LLM)."),
    Phase("write", LLM, _inputs(CARD, PACK, STATE), ("prose.md", "state_patch.json"),
          run="llm", model="WriteOutput", state_input="state",
          doc="Prose and state patch (LLM)."),
    Phase("repair", LLM, _inputs(CARD, PACK, STATE, "prose@write", "state_patch@write"),
          ("prose.md", "state_patch.json"), run="llm", model="RepairOutput",
          state_input="state",
          doc="Prose repaired against the continuity pack and beats (LLM)."),
    Phase("state_repair", LLM, _inputs(STATE, "prose@repair", "state_patch@repair"),
          ("state_patch.json",), run="llm", model="StateRepairOutput", state_input="state",
          doc="State patch checked against the prose and the pre-state (LLM)."),
    # An error left on the prose or patch sends the scene back through the repair and
    # state_repair prompts, with the findings, for at most lint.repair_rounds rounds: lint
    # asks them itself (rounds.json keeps every round), and its own prose and patch are the
    # scene's final ones (equal to its inputs when no round was needed).
    Phase("lint", CODE, _inputs(CARD, STATE, PACK, "prose@repair", "state_patch@state_repair"),
          ("prose.md", "state_patch.json", "rounds.json", "report.json"), run="lint",
          state_input="state", asks=("repair", "state_repair"),
          doc="Deterministic lint of prose and patch; an error left is sent back through "
              "repair rounds (LLM), then fails the scene."),
    Phase("commit", CODE,
          _inputs(STATE, "state_patch@lint", Input("lint_report", "lint", "report")),
          ("post_state.json", "registries/characters.json", "registries/locations.json",
           "registries/items.json", "registries/threads.json"), run="commit",
          doc="Applies the patch: the post-state and registry snapshots (plain code)."),
)

PHASE: dict[str, Phase] = {p.name: p for p in TABLE}
PHASES: tuple[str, ...] = tuple(PHASE)
LLM_PHASES: tuple[str, ...] = tuple(p.name for p in TABLE if p.llm)
# Every phase that may ask the model (lint too: its repair rounds); a rerun gives each a
# new attempt, so their requests are asked afresh.
ASKING_PHASES: tuple[str, ...] = tuple(p.name for p in TABLE if p.asks_model)
