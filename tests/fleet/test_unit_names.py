"""What a fleet unit name means (issue 22, item 7): ``l7:DIR`` is the session whose input,
objective and scenes_v2.json are in DIR, whatever L7 output folders earlier runs left there
(the README's own L7 command writes one, docs/l7.md's partial rerun another)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.core.errors import UserError
from targets.fleet.units import parse_unit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "workspace" / "l7", tmp_path / "workspace" / "l7")
    return tmp_path


def _output_set(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name in ("scenes_v2.json", "prompt_map_pack.json", "session_output.json"):
        (folder / name).write_text("{}")


def test_l7_output_folders_of_earlier_runs_are_not_inputs(root: Path):
    _output_set(root / "workspace/l7/l7_run_output")
    _output_set(root / "workspace/l7/l7_rerun_output")
    unit = parse_unit("l7:workspace/l7", root)
    assert unit.command[unit.command.index("--scenes-v2") + 1] == \
        "workspace/l7/l6_run_output/scenes_v2.json"
    assert unit.means == ("L7 session of workspace/l7: workspace/l7/l6_run_output/"
                          "scenes_v2.json -> workspace/l7/l7_run_output")


def test_two_sessions_in_one_folder_are_named(root: Path):
    second = root / "workspace/l7/other/scenes_v2.json"
    second.parent.mkdir()
    second.write_text("{}")
    with pytest.raises(UserError) as err:
        parse_unit("l7:workspace/l7", root)
    text = str(err.value)
    assert "found 2: l6_run_output/scenes_v2.json, other/scenes_v2.json" in text
    assert "one L7 session's input, objective and scenes_v2.json" in text


@pytest.mark.parametrize("text, what", [("l7:../outside", "folder"),
                                        ("pack:../outside/pack.json", "pack")])
def test_a_unit_outside_the_project_is_named(root: Path, text: str, what: str):
    (root.parent / "outside").mkdir(exist_ok=True)
    with pytest.raises(UserError) as err:
        parse_unit(text, root)
    assert str(err.value).startswith(f"'{text}': the {what} must be inside the project")
