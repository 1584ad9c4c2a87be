"""Gate-Out checks what changed: each scene's (each pair's) schema checks are kept under
the hash of its entries and their schemas, only moved scenes are validated again, and the
report is always the one a from-scratch check gives; a bad keep file is a full check."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from support.l7 import INPUT, OBJECTIVE, OUT, SCENES, SESSION, copy_project, executed

from pipeline.l7 import gate_keep, gates
from pipeline.l7.files import load
from pipeline.l7.session import RunConfig, session_for

DOCS = [n for n in gates.GATE_OUT_DOCS if n != "gate_in_report.json"]


def _session(root, monkeypatch):
    monkeypatch.chdir(root)
    return session_for(RunConfig(session_input=INPUT, session_objective=OBJECTIVE,
                                 scenes_v2=SCENES, out_dir=OUT))


def _docs(session) -> dict:
    docs = {name: load(session.layout.out(name)) for name in DOCS}
    docs["gate_in_report.json"] = load(session.layout.gate_in_report)
    return docs


def _report(session, docs, keep) -> tuple[list[dict], gate_keep.KeepStats]:
    errors, stats = gate_keep.schema_errors(docs, keep)
    return gates.gate_out_checks(session, docs, errors), stats


def _scene_entry(docs: dict, name: str, sid: str) -> dict:
    return next(s for s in docs[name]["scenes"] if s["scene_id"] == sid)


def test_an_unchanged_set_is_not_validated_again(l7_built, monkeypatch, tmp_path):
    session = _session(l7_built.root, monkeypatch)
    docs, keep = _docs(session), tmp_path / "keep.json"
    first, stats = _report(session, docs, keep)
    assert stats.keep == "none" and len(stats.rechecked_scenes) == len(session.order)
    assert len(stats.rechecked_pairs) == len(session.order) - 1
    assert first == gates.gate_out_checks(session, docs)  # the from-scratch report
    again, stats = _report(session, docs, keep)
    assert again == first
    assert (stats.keep, stats.rechecked_scenes, stats.rechecked_pairs) == ("used", [], [])
    assert stats.kept_scenes == len(session.order)


def test_one_edited_scene_is_the_only_one_validated_again(l7_built, monkeypatch, tmp_path):
    session = _session(l7_built.root, monkeypatch)
    docs, keep = _docs(session), tmp_path / "keep.json"
    _report(session, docs, keep)
    _scene_entry(docs, "prompt_map_pack.json", "scene_003")["title"] = "Edited by the test"
    checks, stats = _report(session, docs, keep)
    assert stats.rechecked_scenes == ["scene_003"] and stats.rechecked_pairs == []
    assert stats.kept_scenes == len(session.order) - 1
    assert checks == gates.gate_out_checks(session, docs)


@pytest.mark.parametrize("breakage", ["entry", "head", "no_scene_id"])
def test_a_violation_after_a_kept_pass_reports_what_a_full_check_reports(
        l7_built, monkeypatch, tmp_path, breakage):
    session = _session(l7_built.root, monkeypatch)
    docs, keep = _docs(session), tmp_path / "keep.json"
    _report(session, docs, keep)
    if breakage == "entry":  # one scene's candidate breaks its schema
        _scene_entry(docs, "candidates_prompt.json", "scene_004")["candidates"][0]["prompt"] = 7
    elif breakage == "head":  # the document's head, outside every scene
        docs["candidates_prompt.json"]["merged_from_base"] = "scene_001"
    else:  # an entry that names no scene cannot be kept: the whole document is checked
        del _scene_entry(docs, "candidates_prompt.json", "scene_004")["scene_id"]
    checks, stats = _report(session, docs, keep)
    assert checks == gates.gate_out_checks(session, docs)
    failed = [c for c in checks if c["status"] == "failed"]
    assert [c["id"] for c in failed] == ["schema.candidates_prompt.json"]
    assert stats.whole_documents == ["candidates_prompt.json"]
    # and a failure is never kept as a pass: the next check finds it again
    assert _report(session, docs, keep)[0] == checks


@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": "l7.gate_out_keep.v0"}',
                                     "forged"])
def test_a_corrupt_or_old_keep_file_is_a_full_check(l7_built, monkeypatch, tmp_path, content):
    session = _session(l7_built.root, monkeypatch)
    docs, keep = _docs(session), tmp_path / "keep.json"
    _report(session, docs, keep)
    if content == "forged":  # right format and engine, units that are not digests of these
        data = json.loads(keep.read_text())
        data["units"] = {u: "0" * 64 for u in data["units"]}
        keep.write_text(json.dumps(data))
    else:
        keep.write_text(content)
    _scene_entry(docs, "candidates_prompt.json", "scene_002")["candidates"][0]["prompt"] = None
    checks, stats = _report(session, docs, keep)
    assert stats.keep in {"unreadable", "old format", "used"}
    assert len(stats.rechecked_scenes) == len(session.order)
    assert checks == gates.gate_out_checks(session, docs)
    assert gates.status(checks) == "failed"


def _gate_out_values(root) -> dict:
    db = root / "workspace" / ".scenemake" / "l7" / SESSION / "build.sqlite"
    with sqlite3.connect(db) as conn:
        raw = conn.execute("select task_data from doit where task_id='l7_gate_out'").fetchone()
    return json.loads(raw[0])["_values_:"]["gate_out"]


def _grow(project, n: int) -> None:
    def grow(data: dict) -> None:
        base = data["scenes"]
        data["scenes"] = [{**json.loads(json.dumps(base[i % len(base)])),
                           "scene_id": f"scene_{i + 1:03d}",
                           "title": f"{base[i % len(base)]['title']} ({i + 1})"}
                          for i in range(n)]
    project.edit_json(SCENES, grow)


@pytest.mark.slow
def test_after_one_scene_is_edited_gate_out_revalidates_that_scene_only(tmp_path):
    project = copy_project(tmp_path / "proj")
    _grow(project, 24)
    assert project.cli().returncode == 0
    assert len(_gate_out_values(project.root)["rechecked_scenes"]) == 24

    project.edit_json(SCENES, lambda d: d["scenes"][11].update(
        action="Ines drops a rusted key into Tomas's open palm on the lighthouse stairs"))
    proc = project.cli()
    assert proc.returncode == 0, proc.out
    assert "l7_gate_out" in executed(proc)
    values = _gate_out_values(project.root)
    assert values["keep"] == "used" and values["rechecked_scenes"] == ["scene_012"]
    assert values["kept_scenes"] == 23 and values["whole_documents"] == []
    assert set(values["rechecked_pairs"]) <= {"scene_011+scene_012", "scene_012+scene_013"}

    # the same inputs checked from scratch, in a fresh copy of the session: the same report
    fresh = copy_project(tmp_path / "fresh")
    shutil.copy(project.path(SCENES), fresh.path(SCENES))
    assert fresh.cli().returncode == 0
    assert len(_gate_out_values(fresh.root)["rechecked_scenes"]) == 24
    for name in ("gate_out_report.json", "prompt_map_pack.json"):
        assert project.path(f"{OUT}/{name}").read_bytes() == \
            fresh.path(f"{OUT}/{name}").read_bytes(), name


    # a keep file cut short (a full disk, a crash of an older version): a full check
    keep = project.root / "workspace" / ".scenemake" / "l7" / SESSION / "work" / \
        "gate_out_keep.json"
    keep.write_text(keep.read_text()[:100])
    project.edit_json(SCENES, lambda d: d["scenes"][11].update(action="Ines waits alone"))
    proc = project.cli()
    assert proc.returncode == 0, proc.out
    values = _gate_out_values(project.root)
    assert values["keep"] == "unreadable" and len(values["rechecked_scenes"]) == 24
    assert json.loads(keep.read_text())["format"] == gate_keep.KEEP_FORMAT
