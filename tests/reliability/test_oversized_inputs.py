"""An oversized input is blamed on the input (issue 25, item 5): its file, its field and the
limit, never the template that would have rendered it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.l7 import OUT, SCENES, copy_project
from support.project import Project

from pipeline.core.errors import UserError
from pipeline.core.jsonio import MAX_TEXT_CHARS, read_json

pytestmark = pytest.mark.slow  # real commands, one process each


def _said(proc) -> list[str]:
    return [line for line in proc.out.splitlines() if line.strip()
            and not line.startswith((".  ", "-- "))
            and not (line.startswith("scenemake: ") and " task(s) run" in line)]


def test_a_5_mb_brief_is_blamed_on_the_outline_and_the_scene(project: Project):
    project.edit_json("workspace/books/example/outline.json",
                      lambda d: d["chapters"][0]["scenes"][1].update(brief="x" * 5_000_000))
    proc = project.doit()
    assert proc.returncode != 0 and "Traceback" not in proc.out, proc.out[-2000:]
    [line] = _said(proc)
    assert "workspace/books/example/outline.json" in line
    assert "chapters[0].scenes[1].brief" in line and "ch001_sc002" in line
    assert "5000000 characters" in line and f"at most {MAX_TEXT_CHARS}" in line
    assert ".j2" not in line and "template" not in line
    assert project.calls() == [] and not project.draft.exists()


def test_a_3_mb_l7_action_is_blamed_on_scenes_v2_and_the_scene(tmp_path: Path):
    l7 = copy_project(tmp_path / "l7")
    l7.edit_json(SCENES, lambda d: d["scenes"][0].update(action="y" * 3_000_000))
    proc = l7.cli()
    assert proc.returncode == 2 and "Traceback" not in proc.out, proc.out[-2000:]
    [line] = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "scenes_v2.json" in line and "scenes[0].action" in line
    first = json.loads(l7.path(SCENES).read_text())["scenes"][0]["scene_id"]
    assert first in line and "3000000 characters" in line and f"at most {MAX_TEXT_CHARS}" in line
    assert "candidate" not in line and "template" not in line
    assert not l7.path(OUT).exists()


def test_the_limit_is_on_each_text_and_names_the_nearest_id(tmp_path: Path):
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"steps": [{"step_id": "s1", "q": "a" * MAX_TEXT_CHARS},
                                          {"step_id": "s2", "q": "b" * (MAX_TEXT_CHARS + 1)}]}))
    with pytest.raises(UserError) as err:
        read_json(path, "scenario")
    assert "field 'steps[1].q'" in str(err.value) and "(in s2)" in str(err.value)
    assert read_json(path, "own file", max_text=None)["steps"][0]["step_id"] == "s1"
