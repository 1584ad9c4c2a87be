"""Every schema in the repo against the code's own validation, on the same bad inputs (issue 25,
item 7): whatever a published schema refuses, the code that reads that file refuses too, in
one line (``"max_iterations": "3"`` is not an integer), and the shipped examples pass both.

Each input format is read through the family's real loader from a file; its bad inputs are
the shipped example with one change each: a value of another JSON type (``"3"`` for 3, 5 for
a text, a list for an object ...), a property dropped, an unknown property added. The
output schemas are checked to be the very files the code validates with."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pipeline.core.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "pipeline" / "schemas"
WS = REPO / "workspace"


# -- the bad inputs -------------------------------------------------------------------------
def _other_types(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return ["true", 1, None]
    if isinstance(value, int):
        return [str(value), True, value + 0.5, None]
    if isinstance(value, float):
        return [str(value), True, None]
    if isinstance(value, str):
        return [5, True, [value], None]
    if isinstance(value, list):
        return [{}, "x", None]
    if isinstance(value, dict):
        return [[], "x", None]
    return ["x", 5]


def _set(doc: Any, path: tuple, value: Any, drop: bool = False) -> Any:
    doc = json.loads(json.dumps(doc))
    if not path:
        return value
    here = doc
    for key in path[:-1]:
        here = here[key]
    if drop:
        del here[path[-1]]
    else:
        here[path[-1]] = value
    return doc


def mutations(doc: Any) -> Iterator[tuple[str, Any]]:
    """(what changed, the changed document): one change each (a list's first item stands
    for the others: they share its schema)."""
    stack: list[tuple[Any, tuple]] = [(doc, ())]
    while stack:
        value, path = stack.pop()
        where = "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
        for other in _other_types(value):
            yield f"{where} = {json.dumps(other)}", _set(doc, path, other)
        if isinstance(value, dict):
            yield f"{where} + unknown", _set(doc, path + ("unexpected_field",), 1)
            for key, child in value.items():
                yield f"{where} - {key}", _set(doc, path + (key,), None, drop=True)
                stack.append((child, path + (key,)))
        elif isinstance(value, list) and value:
            stack.append((value[0], path + (0,)))


# -- the code's own validation, one loader per input format ---------------------------------
def _book(file: str) -> Callable[[Path, Any], Any]:
    def load(tmp: Path, doc: Any) -> Any:
        from pipeline.book.workspace import Workspace, load_book

        (tmp / "workspace" / "books" / "example" / file).write_text(json.dumps(doc))
        return load_book(Workspace(tmp / "workspace"), "example")
    return load


def _file(rel: str, fn: Callable[[Path], Any]) -> Callable[[Path, Any], Any]:
    def load(tmp: Path, doc: Any) -> Any:
        path = tmp / rel
        path.write_text(json.dumps(doc))
        return fn(path)
    return load


def _l7(role: str) -> Callable[[Path, Any], Any]:
    def load(tmp: Path, doc: Any) -> Any:
        from pipeline.l7.session import RunConfig, load_session

        files = {"session_input": "workspace/l7/sample_session_input_l7.json",
                 "session_objective": "workspace/l7/sample_session_objective_l7_prompt_map.json",
                 "scenes_v2": "workspace/l7/l6_run_output/scenes_v2.json",
                 "score_spec": "score_specs/score_spec_prompt.json"}
        (tmp / files[role]).write_text(json.dumps(doc))
        return load_session(RunConfig(
            **{k: str(tmp / v) for k, v in files.items() if k != "score_spec"},
            out_dir=str(tmp / "out"), state_dir=str(tmp / "workspace" / ".scenemake")))
    return load


def _loaders() -> dict[str, tuple[str, Callable[[Path, Any], Any]]]:
    from pipeline.assistant.rules import load_rules
    from pipeline.scenario import stage_manifest
    from pipeline.scenario.coder import load_config
    from pipeline.scenario.contracts import load_case, load_pack, load_scenario
    from pipeline.scenario.judge import load_score_spec

    return {
        "book_config": ("workspace/books/example/book.json", _book("book.json")),
        "book_outline": ("workspace/books/example/outline.json", _book("outline.json")),
        "book_state": ("workspace/books/example/state.json", _book("state.json")),
        "assistant_rules": ("workspace/scenarios/assistant_rules.json",
                            _file("workspace/scenarios/assistant_rules.json", load_rules)),
        "scenario_case": ("workspace/scenarios/cases/tape_stock.json",
                          _file("workspace/scenarios/cases/tape_stock.json", load_case)),
        "scenario_scenario": ("workspace/scenarios/low_stock_chain.json",
                              _file("workspace/scenarios/low_stock_chain.json", load_scenario)),
        "scenario_pack": ("workspace/scenarios/packs/warehouse_basics.json",
                          _file("workspace/scenarios/packs/warehouse_basics.json", load_pack)),
        "scenario_coder": ("workspace/scenarios/coders/rules_coder.json",
                           _file("workspace/scenarios/coders/rules_coder.json", load_config)),
        "judge_score_spec": ("score_specs/score_spec_answer.json",
                             _file("score_specs/score_spec_answer.json", load_score_spec)),
        "stage_agent_loop_manifest.schema": (
            "workspace/orchestration/stage1_warehouse.json",
            _file("workspace/orchestration/stage1_warehouse.json", stage_manifest.load)),
        "l7_session_input": ("workspace/l7/sample_session_input_l7.json",
                             _l7("session_input")),
        "l7_session_objective": ("workspace/l7/sample_session_objective_l7_prompt_map.json",
                                 _l7("session_objective")),
        "l7_scenes_v2": ("workspace/l7/l6_run_output/scenes_v2.json", _l7("scenes_v2")),
        "l7_score_spec": ("score_specs/score_spec_prompt.json", _l7("score_spec")),
    }


def _validated_as_published() -> dict[str, Callable[[], dict]]:
    """Schemas the code validates documents with directly (no model in between): the
    schema it loads must be the published file itself."""
    from pipeline.assistant import contract
    from pipeline.l7 import contracts

    found: dict[str, Callable[[], dict]] = {"assistant_api": contract.api_schema}
    for name in set(contracts.OUTPUT_FILES.values()) | {"prompt_map_pack"}:
        found[f"l7_{name}"] = lambda name=name: contracts.validator(name).schema
    return found


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    shutil.copytree(WS, tmp_path / "workspace",
                    ignore=shutil.ignore_patterns("draft", ".scenemake", "artifacts",
                                                  "l7_run_output", "l7_rerun_output"))
    shutil.copytree(REPO / "score_specs", tmp_path / "score_specs")
    return tmp_path


def test_every_schema_in_the_repo_is_covered():
    in_repo = {p.name.removesuffix(".json") for p in SCHEMAS.glob("*.json")}
    in_repo |= {p.name.removesuffix(".json") for p in REPO.rglob("*.schema.json")
                if ".git" not in p.parts and "tests" not in p.parts}
    assert in_repo == set(_loaders()) | set(_validated_as_published())


@pytest.mark.parametrize("name", sorted(_validated_as_published()))
def test_the_code_validates_with_the_published_file(name: str):
    assert _validated_as_published()[name]() == json.loads((SCHEMAS / f"{name}.json").read_text())


def test_the_published_files_are_generated_from_the_models():
    from pipeline.assistant.rules import SCHEMAS as assistant
    from pipeline.book.models import SCHEMAS as book
    from pipeline.core import schemas
    from pipeline.scenario.formats import SCHEMAS as scenario

    for name, model in {**book, **assistant, **scenario}.items():
        assert json.loads(schemas.schema_path(name).read_text()) == schemas.generate(
            model, f"{name}.json"), f"{name}: run python -m <its module> to rewrite it"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_loaders()))
def test_what_the_schema_refuses_the_code_refuses(sandbox: Path, name: str, monkeypatch):
    monkeypatch.chdir(sandbox)  # relative paths inside the examples resolve as for a user
    for key in ("SCENEMAKE_MODEL", "SCENEMAKE_BASE_URL", "SCENEMAKE_API_KEY_ENV"):
        monkeypatch.delenv(key, raising=False)
    example_rel, load = _loaders()[name]
    example = json.loads((sandbox / example_rel).read_text())
    schema = Draft202012Validator(json.loads((SCHEMAS / f"{name}.json").read_text()))
    assert schema.is_valid(example), f"the shipped {example_rel} breaks its own schema"
    load(sandbox, example)  # and the code takes it

    refused = 0
    disagree = []
    for what, doc in mutations(example):
        if schema.is_valid(doc):
            continue
        refused += 1
        try:
            load(sandbox, doc)
        except UserError as exc:
            assert "\n" not in str(exc), str(exc)
            continue
        disagree.append(what)
    (sandbox / example_rel).write_text(json.dumps(example))
    assert disagree == [], f"{name}: the schema refuses, the code took: {disagree[:10]}"
    assert refused >= 5
