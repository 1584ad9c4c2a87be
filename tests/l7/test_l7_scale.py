"""L7 at session length: a scene's context depends on its slice of scenes_v2.json, so
editing one scene of a 100-scene session reruns a bounded set of tasks, not 100 contexts."""

from __future__ import annotations

import json

import pytest
from support.l7 import SCENES, copy_project, executed

N = 100


def _long_session(project) -> None:
    """scenes_v2.json with N scenes: the example's eight, cycled under new ids."""
    def grow(data: dict) -> None:
        base = data["scenes"]
        scenes = []
        for i in range(N):
            scene = json.loads(json.dumps(base[i % len(base)]))
            scene["scene_id"] = f"scene_{i + 1:03d}"
            scene["title"] = f"{scene['title']} ({i + 1})"
            scenes.append(scene)
        data["scenes"] = scenes
    project.edit_json(SCENES, grow)


@pytest.mark.slow
def test_one_scene_edited_of_100_reruns_at_most_15_tasks(tmp_path):
    project = copy_project(tmp_path / "proj")
    _long_session(project)
    first = project.cli()
    assert first.returncode == 0, first.out
    assert sum(t.startswith("l7_context:") for t in executed(first)) == N
    n = len(project.calls())

    project.edit_json(SCENES, lambda d: d["scenes"][49].update(
        action="Ines drops a rusted key into Tomas's open palm on the lighthouse stairs"))
    proc = project.cli()
    assert proc.returncode == 0, proc.out
    ran = executed(proc)
    assert [t for t in ran if t.startswith("l7_context:")] == ["l7_context:scene_050"]
    assert [t for t in ran if t.startswith("l7_candidates:")] == ["l7_candidates:scene_050"]
    assert len(ran) <= 15, ran
    assert {c["scene"] for c in project.misses(n)} == {"scene_050"}

    # and an up-to-date session runs nothing
    again = project.cli()
    assert again.returncode == 0, again.out
    assert executed(again) == []
