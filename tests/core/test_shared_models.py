"""One strict base, one score spec, one way from a ValidationError to a UserError, one JSON
reader: each family keeps its own JSON contract and messages on top of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from pipeline.core import score_spec
from pipeline.core.errors import UserError
from pipeline.core.jsonio import load_json, parse_model, read_json_or_none
from pipeline.core.models import StrictModel
from pipeline.l7 import contracts as l7
from pipeline.scenario import judge

REPO = Path(__file__).resolve().parents[2]


class Inner(StrictModel):
    n: int


class Outer(StrictModel):
    items: list[Inner] = Field(min_length=1)


def test_field_form_names_file_and_field():
    with pytest.raises(UserError) as err:
        parse_model(Outer, {"items": [{"n": 1}, {"n": "x", "m": 2}]}, "a.json")
    assert str(err.value).startswith("a.json: field 'items.1.n': Input should be a valid "
                                     "integer")
    assert str(err.value).endswith("(and 1 more)")


def test_field_form_within_a_value_of_the_file():
    with pytest.raises(UserError) as err:
        parse_model(Inner, {"n": 1, "typo": 2}, "spec.json", within="criteria[0].params")
    assert str(err.value) == ("spec.json: field 'criteria[0].params.typo': Extra inputs are "
                              "not permitted")


def test_json_path_form_of_the_scenario_files():
    with pytest.raises(UserError) as err:
        parse_model(Outer, {"items": [{"n": "x"}]}, "pack.json", as_json_path=True)
    assert str(err.value) == "pack.json: $.items[0].n: Input should be a valid integer, " \
                             "unable to parse string as an integer"
    with pytest.raises(UserError) as err:
        parse_model(Outer, {"items": []}, "pack.json", within="$.scenarios[2]",
                    as_json_path=True)
    assert str(err.value).startswith("pack.json: $.scenarios[2].items: List should have")


def test_top_level_problem_is_named_so():
    with pytest.raises(UserError, match=r"field '\(top level\)'"):
        parse_model(Inner, [1], "x.json")


def _l7_spec(**crit) -> dict:
    return {"schema_version": "l7.score_spec.v1", "spec_id": "s", "version": "1",
            "criteria": [{"id": "a", "kind": "rule", "rule": "word_count", "weight": 1},
                         {"id": "a", "kind": "rule", "rule": "word_count", "weight": 2, **crit}]}


def test_one_score_spec_under_both_families_with_their_messages():
    assert issubclass(l7.ScoreSpec, score_spec.ScoreSpec)
    assert issubclass(judge.ScoreSpec, score_spec.ScoreSpec)
    assert issubclass(l7.Criterion, score_spec.Criterion)
    assert issubclass(judge.Criterion, score_spec.Criterion)
    with pytest.raises(UserError, match="duplicate criterion id 'a'"):
        parse_model(l7.ScoreSpec, _l7_spec(), "l7.json")
    dup = {"name": "r", "criteria": [{"id": "a", "weight": 1, "description": "d"},
                                     {"id": "a", "weight": 1, "description": "d"}]}
    with pytest.raises(UserError, match=r"\$: criteria ids must be unique"):
        parse_model(judge.ScoreSpec, dup, "judge.json", as_json_path=True)
    with pytest.raises(UserError, match="weight"):
        parse_model(l7.ScoreSpec, _l7_spec(weight=0), "l7.json")


def test_weighted_mean():
    spec = judge.ScoreSpec.model_validate(
        {"name": "r", "criteria": [{"id": "a", "weight": 3, "description": "d"},
                                   {"id": "b", "weight": 1, "description": "d"}]})
    assert spec.weighted_mean({"a": 100, "b": 60}) == 90


def test_read_json_or_none(tmp_path):
    assert read_json_or_none(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{")
    assert read_json_or_none(tmp_path / "bad.json") is None
    (tmp_path / "ok.json").write_text('{"a": [1]}')
    assert read_json_or_none(tmp_path / "ok.json") == {"a": [1]} == load_json(tmp_path / "ok.json")


def _classes_with_forbid() -> list[str]:
    """Models under pipeline/ that set extra='forbid' themselves instead of using StrictModel."""
    found = []
    for path in (REPO / "pipeline").rglob("*.py"):
        if path.name == "models.py" and path.parent.name == "core":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.keyword) and node.arg == "extra"
                    and isinstance(node.value, ast.Constant) and node.value.value == "forbid"):
                found.append(f"{path.relative_to(REPO)}:{node.value.lineno}")
    return found


def test_every_strict_model_uses_the_one_base():
    assert _classes_with_forbid() == []
    assert all(issubclass(m, StrictModel) for m in (l7.SessionInput, l7.Candidate,
                                                      judge.ScoreSpec))
    assert not issubclass(BaseModel, StrictModel)


def test_json_files_are_read_through_jsonio():
    """No ``json.loads(<path>.read_text())`` outside jsonio: a file's JSON is read one way."""
    found = []
    for path in (REPO / "pipeline").rglob("*.py"):
        if path.name == "jsonio.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "loads" and node.args
                    and isinstance(node.args[0], ast.Call)
                    and isinstance(node.args[0].func, ast.Attribute)
                    and node.args[0].func.attr in ("read_text", "read_bytes")):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []
