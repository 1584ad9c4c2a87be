"""An error lint finds on the final prose or patch sends the scene back through the repair
and state_repair prompts, with the findings, for at most ``lint.repair_rounds`` rounds
(default 2). lint owns the rounds: their answers are in its rounds.json, its prose and patch
are the scene's final ones, and repair's and state_repair's files are never rewritten. Only
what survives stops the scene, in one line naming the scene, the field and the command."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.project import Project, executed

from pipeline.book import phases, runner
from pipeline.book.models import (
    ContinuityPack,
    RepairOutput,
    SceneCard,
    StatePatch,
    StateRepairOutput,
)
from pipeline.book.phase_table import PHASE
from pipeline.book.runvars import RunVars
from pipeline.book.workspace import Workspace, load_book
from pipeline.llm import LLMResponse

BOOK = "workspace/books/example/book.json"
SHORT = 200  # more words than most of the stand-in's scenes hold, fewer than it can write
SCENES = ("ch001_sc001", "ch001_sc002", "ch001_sc003", "ch002_sc001", "ch002_sc002",
          "ch002_sc003")


def _words(path: Path) -> int:
    return len(phases._WORD.findall(path.read_text()))


@pytest.mark.slow
def test_a_stricter_lint_sends_short_scenes_through_repair_rounds(built: Project):
    short = [sid for sid in SCENES if _words(built.artifact(sid, "lint/prose.md")) < SHORT]
    assert short, "the stand-in's prose got longer: raise SHORT"
    repaired = {sid: built.artifact(sid, "repair/prose.md").read_bytes() for sid in short}
    built.edit_json(BOOK, lambda d: d["lint"].update(min_words=SHORT))
    n = len(built.calls())
    proc = built.build()
    ran = executed(proc)
    # lint reran (its rules changed); repair and state_repair did not, nor were their
    # files rewritten: each file has one writer
    assert not [t for t in ran if t.startswith(("write:", "repair:", "state_repair:"))
                and t.partition(":")[2] in short]
    for sid in short:
        assert built.artifact(sid, "repair/prose.md").read_bytes() == repaired[sid]
        entry = built.ledger(sid)["phases"]["lint"]
        assert entry["status"] == "success"
        rounds = entry["repair_rounds"]
        assert rounds and rounds[0]["round"] == 1
        assert rounds[0]["findings"][0]["field"] == "prose"
        assert f"fewer than {SHORT}" in rounds[0]["findings"][0]["message"]
        assert rounds[-1]["remaining"] == []
        for step in ("repair", "state_repair"):
            assert rounds[0][step]["tries"] and rounds[0][step]["seed"] is not None
        assert json.loads(built.artifact(sid, "lint/rounds.json").read_text()) == rounds
        final = built.artifact(sid, "lint/prose.md")
        assert _words(final) >= SHORT and final.read_bytes() != repaired[sid]
        assert final.read_text().strip() in (built.draft / "manuscript.md").read_text()
        # the findings were in the prompt of the round's repair
        calls = [c for c in built.calls()[n:] if c["task"] == f"lint:{sid}"]
        assert calls and {c["phase"] for c in calls} == {"lint"}
        assert entry["llm"]["calls"] == len([r for r in rounds for k in ("repair",
                                                                          "state_repair")
                                             if k in r])
    # the rounds are tries like any other: the next run pays nothing, a lost file comes
    # back from the cache, rerun-from asks afresh (a new attempt, new seeds)
    n = len(built.calls())
    again = built.build()
    assert built.misses(n) == [] and [t for t in executed(again) if ":" in t] == []
    sid = short[0]
    before = built.artifact(sid, "lint/prose.md").read_bytes()
    built.artifact(sid, "lint/prose.md").unlink()
    n = len(built.calls())
    built.build()
    assert built.misses(n) == [] and built.artifact(sid, "lint/prose.md").read_bytes() == before
    n = len(built.calls())
    built.build("rerun-from", f"lint:{sid}")
    fresh = [c for c in built.misses(n) if c["task"] == f"lint:{sid}"]
    assert fresh and all(c["attempt"] == 1 for c in fresh)
    assert built.ledger(sid)["phases"]["lint"]["attempt"] == 1


@pytest.mark.slow
def test_what_survives_stops_the_scene_in_one_line(built: Project):
    built.edit_json(BOOK, lambda d: d["lint"].update(min_words=SHORT, repair_rounds=0))
    n = len(built.calls())
    proc = built.doit()
    assert proc.returncode == 1 and "Traceback" not in proc.out
    assert built.calls()[n:] == []  # no round allowed: nothing asked
    lines = [ln for ln in proc.out.splitlines() if "lint failed" in ln]
    assert lines, proc.out[-2000:]
    line = lines[0]
    sid = line.split("scene ")[1].split(":")[0]
    assert f"field 'prose': lint failed: scene {sid}: " in line
    assert f"fewer than {SHORT}" in line
    assert f"doit rerun-from repair:{sid}" in line and "force_resume=1" in line
    assert "lint.min_words in book.json" in line
    assert json.loads(built.artifact(sid, "lint/rounds.json").read_text()) == []


# -- the rounds and their bound, with scripted answers -------------------------------------
class Scripted:
    """Stands in for the LLM: each call of ``runner._ask`` gets the next scripted answer."""

    def __init__(self, answers: list):
        self.answers = list(answers)
        self.asked: list[tuple[str, list, int]] = []

    def __call__(self, run, phase, inp, findings=None, round_number=0):
        self.asked.append((phase, [f.message for f in findings or []], round_number))
        data = self.answers.pop(0)
        response = LLMResponse(text=data.model_dump_json(), data=data, request_hash="0" * 64,
                               cache="miss", provider="scripted", model="m", tokens_in=10,
                               tokens_out=5, cost_usd=0.0, latency_ms=1.0, seed=round_number,
                               history=[{"try": 0, "seed": round_number, "finding": None}])
        return response, [{"role": "user", "content": phase}], {}, {}


PATCH = StatePatch(events=["Mara waited at the landing."])


def _repair(words: int) -> RepairOutput:
    return RepairOutput(prose=" ".join(["Mara waited at the landing"] * (words // 5 + 1)),
                        state_patch=PATCH, changes=["Longer."])


def _lint_run(tmp_path: Path, monkeypatch, rounds: int, min_words: int = 50):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    book = load_book(Workspace(Path("workspace")), "example")
    book.config.lint.min_words, book.config.lint.repair_rounds = min_words, rounds
    scene = book.scenes[0]
    card = SceneCard(title=scene.title, pov=scene.characters[0], location=scene.location,
                     characters=scene.characters, goal="Mara waits for the ferry.",
                     conflict="The storm comes first.", outcome="The ferry is late.",
                     beats=["Mara waits.", "Ines comes.", "The ferry is late."])
    files = phases.layout(book, scene.id)["lint"]
    out = tmp_path / "lint"
    files.outputs = {name: str(out / Path(path).name) for name, path in files.outputs.items()}
    out.mkdir()
    inp = {"scene_card": card, "state": book.initial_state, "prose": "Too short.",
           "state_patch": PATCH,
           "pack": ContinuityPack(facts=[{"subject": "mara", "fact": "Mara is here."},
                                         {"subject": "ines", "fact": "Ines is here."}])}
    db = SimpleNamespace(announce_outputs=lambda *a: None, attempt=lambda task: 0)
    return runner.PhaseRun(book, scene, PHASE["lint"], f"lint:{scene.id}", files, inp, {},
                           {}, RunVars(), db, {})


def test_a_round_carries_the_findings_and_its_answers_become_the_final_prose(
        tmp_path, monkeypatch):
    run = _lint_run(tmp_path, monkeypatch, rounds=2)
    fixed = _repair(60)
    script = Scripted([fixed, StateRepairOutput(state_patch=PATCH, notes=["Kept."])])
    monkeypatch.setattr(runner, "_ask", script)
    data = runner._run_lint(run)
    assert [(phase, n) for phase, _, n in script.asked] == [("repair", 1), ("state_repair", 1)]
    assert "2 words, fewer than 50" in script.asked[0][1][0]  # the finding, to the model
    assert script.asked[1][1] == []  # state_repair gets the patch's findings: none here
    assert data["prose"].decode() == fixed.prose + "\n"
    rounds = json.loads(data["rounds"])
    assert [r["round"] for r in rounds] == [1] and rounds[0]["remaining"] == []
    assert json.loads(data["report"])["passed"] is True
    assert run.values["llm"]["calls"] == 2 and run.values["rounds"] == rounds


def test_the_rounds_stop_at_their_bound_and_what_survives_fails_in_one_line(
        tmp_path, monkeypatch):
    run = _lint_run(tmp_path, monkeypatch, rounds=2)
    still_short = _repair(16)
    script = Scripted([still_short, StateRepairOutput(state_patch=PATCH, notes=["Kept."])] * 3)
    monkeypatch.setattr(runner, "_ask", script)
    with pytest.raises(runner.PhaseFailed) as failed:
        runner._run_lint(run)
    assert [n for _, _, n in script.asked] == [1, 1, 2, 2]  # two rounds, no third
    message = str(failed.value)
    assert "\n" not in message
    assert f"field 'prose': lint failed: scene {run.scene.id}: " in message
    assert "fewer than 50, left after 2 repair round(s)" in message
    assert f"doit rerun-from repair:{run.scene.id}" in message
    rounds = json.loads(Path(run.files.outputs["rounds"]).read_text())
    assert [r["round"] for r in rounds] == [1, 2]
    assert all("fewer than 50" in r["remaining"][0]["message"] for r in rounds)
    assert json.loads(Path(run.files.outputs["report"]).read_text())["passed"] is False


def test_a_finding_on_the_card_gets_no_round(tmp_path, monkeypatch):
    run = _lint_run(tmp_path, monkeypatch, rounds=2, min_words=1)
    run.inp["scene_card"] = run.inp["scene_card"].model_copy(
        update={"beats": ["Mara waits.", "mara  waits.", "The ferry is late."]})
    script = Scripted([])
    monkeypatch.setattr(runner, "_ask", script)
    with pytest.raises(runner.PhaseFailed) as failed:
        runner._run_lint(run)
    assert script.asked == []
    assert "field 'scene_card.beats[1]'" in str(failed.value)
    assert f"doit rerun-from plan:{run.scene.id}" in str(failed.value)
