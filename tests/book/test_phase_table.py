"""A phase is declared once, in pipeline/book/phase_table.py: the layout, the runner, the
ledger and the phase lists read it, and a build does what the table says."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel
from support.project import REPO, Project

from pipeline.book import phase_table, phases, runner, workspace
from pipeline.book.phase_table import PHASE, TABLE
from pipeline.book.workspace import Workspace, load_book


def test_the_phase_lists_are_the_tables():
    assert workspace.PHASES == tuple(p.name for p in TABLE) == (
        "plan", "preflight", "continuity_pack", "write", "repair", "state_repair", "lint",
        "commit")
    assert workspace.LLM_PHASES == ("plan", "continuity_pack", "write", "repair", "state_repair")
    assert workspace.TEMPLATE_NAMES == ("system", *workspace.LLM_PHASES)


def test_every_input_is_made_by_a_phase_above_it_or_by_the_scene_before():
    seen: set[str] = set()
    for spec in TABLE:
        for i in spec.inputs:
            maker = PHASE[i.phase]
            assert i.made_as in maker.files, f"{spec.name} reads {i.phase}'s {i.made_as}"
            if not i.previous_scene:
                assert i.phase in seen, f"{spec.name} reads {i.phase}, which runs after it"
        if spec.state_input:
            assert spec.state_input in {i.name for i in spec.inputs}
        seen.add(spec.name)


def test_every_phase_has_its_step_and_every_llm_phase_its_model_and_template():
    for spec in TABLE:
        assert spec.run in runner.STEPS, f"{spec.name}: no step '{spec.run}'"
        if spec.llm:
            assert spec.run == "llm"  # the LLM phases share one path
            assert issubclass(spec.answer_model, BaseModel)
            assert (workspace.DEFAULT_TEMPLATES / f"{spec.name}.j2").is_file()
            # what the answer is split into: a field of it, or the whole answer
            answer = set(spec.files) - {"prompt", "response"}
            fields = set(spec.answer_model.model_fields)
            assert len(answer - fields) <= 1, f"{spec.name}: {answer - fields} from one answer"
        else:
            assert spec.model is None and spec.run != "llm"


def test_layout_follows_the_table(monkeypatch):
    monkeypatch.chdir(REPO)
    book = load_book(Workspace(Path("workspace")), "example")
    first, second = book.scenes[0].id, book.scenes[1].id
    layout = phases.layout(book, second)
    assert list(layout) == list(phase_table.PHASES)
    written: set[str] = set()
    for spec in TABLE:
        files = layout[spec.name]
        folder = f"{book.draft.as_posix()}/scenes/{second}/{spec.name}/"
        assert files.outputs == {name: folder + f for name, f in spec.files.items()}
        assert not written & set(files.outputs.values()), "two phases write one file"
        written |= set(files.outputs.values())
        assert list(files.inputs) == [i.name for i in spec.inputs]
        assert files.state_input == spec.state_input
        assert bool(files.templates) == spec.asks_model
        assert files.templates == {role: book.templates[name]
                                   for role, name in spec.template_roles.items()}
    # lint renders the prompts of the phases it asks again in its repair rounds
    assert layout["lint"].templates == {"system": book.templates["system"],
                                        "repair": book.templates["repair"],
                                        "state_repair": book.templates["state_repair"]}
    assert layout["repair"].inputs["prose"] == layout["write"].outputs["prose"]
    assert layout["commit"].inputs["lint_report"] == layout["lint"].outputs["report"]
    # the scene's final prose and patch are lint's (its repair rounds' when it had some)
    assert layout["commit"].inputs["state_patch"] == layout["lint"].outputs["state_patch"]
    assert layout["lint"].inputs["prose"] == layout["repair"].outputs["prose"]
    # the pre-state: the scene before's post-state; the first scene's is the book's state
    assert (layout["preflight"].inputs["pre_state"]
            == phases.layout(book, first)["commit"].outputs["post_state"])
    assert (phases.layout(book, first)["preflight"].inputs["pre_state"]
            == book.state_path.as_posix())


def test_a_build_runs_every_phase_of_the_table_as_declared(built: Project, monkeypatch):
    monkeypatch.chdir(built.root)  # the ledger's paths are relative to the project
    book = load_book(Workspace(Path("workspace")), "example")
    calls = built.calls()
    # one paid call per LLM phase of the table and scene, in the table's order per scene
    assert [c["cache"] for c in calls] == ["miss"] * len(book.scenes) * len(phase_table.LLM_PHASES)
    for scene in book.scenes:
        sid = scene.id
        assert [c["phase"] for c in calls if c["scene"] == sid] == list(phase_table.LLM_PHASES)
        ledger = built.ledger(sid)
        layout = phases.layout(book, sid)
        assert list(ledger["phases"]) == list(phase_table.PHASES)
        for spec in TABLE:
            entry, files = ledger["phases"][spec.name], layout[spec.name]
            assert entry["status"] == "success", (sid, spec.name)
            assert entry["artifacts"] == files.outputs
            assert all(Path(path).is_file() for path in files.outputs.values())
            assert ("llm" in entry) == spec.llm  # (lint's only after a repair round)
            assert ("prompt_hash" in entry) == spec.asks_model
            assert entry.get("pre_state_path") == (files.inputs[spec.state_input]
                                                   if spec.state_input else None)
            if spec.llm:  # what the phase wrote is its answer, split as the table says
                response = json.loads(Path(files.outputs["response"]).read_text())
                answer = spec.answer_model.model_validate_json(response["text"])
                for name, file in spec.files.items():
                    if name in ("prompt", "response"):
                        continue
                    part = getattr(answer, name) if name in type(answer).model_fields else answer
                    on_disk = Path(files.outputs[name]).read_text()
                    if file.endswith(".md"):
                        assert on_disk == part.strip() + "\n"
                    else:
                        assert json.loads(on_disk) == part.model_dump(mode="json")
