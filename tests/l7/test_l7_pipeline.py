"""The L7 runner end to end on the example session (offline model): outputs, exit codes,
content addressing (asserted on the LLM call log), partial reruns, gates, doit."""

from __future__ import annotations

import json

import pytest
from support.l7 import (
    OBJECTIVE,
    OUT,
    OUTPUTS,
    RERUN_OUT,
    SCENES,
    SESSION,
    SPEC,
    executed,
    one_line_error,
)

from pipeline.l7.contracts import OUTPUT_FILES, first_error

SCENE_IDS = [f"scene_{i:03d}" for i in range(1, 9)]


def _schema_valid(project, out_dir: str = OUT) -> None:
    for name in OUTPUTS:
        err = first_error(project.out(name, out_dir), OUTPUT_FILES[name])
        assert err is None, f"{name}: {err}"


def test_example_session_passes_the_gates_with_every_output_schema_valid(l7):
    proc = l7.cli()
    assert proc.returncode == 0, proc.out
    assert "passed the gates" in proc.stdout
    assert sorted(p.name for p in l7.path(OUT).iterdir()) == sorted(OUTPUTS)
    _schema_valid(l7)
    assert l7.out("gate_in_report.json")["status"] == "passed"
    assert l7.out("gate_out_report.json")["status"] == "passed"
    out = l7.out("session_output.json")
    assert (out["status"], out["exit_code"], out["failed_gate"]) == ("success", 0, None)
    assert sorted(out["outputs"]) == sorted(n for n in OUTPUTS if n != "session_output.json")

    pack = l7.out("prompt_map_pack.json")
    assert [s["scene_id"] for s in pack["scenes"]] == SCENE_IDS
    assert all(s["prompt"] and s["status"] in ("selected", "revised") for s in pack["scenes"])
    v2 = l7.out("scenes_v2.json")
    for scene, entry in zip(v2["scenes"], pack["scenes"], strict=True):
        assert scene["prompt_map"]["prompt"] == entry["prompt"]
        assert scene["action"]  # L6 fields pass through
    assert v2["l7"]["pack_blake3"]

    # N candidates per scene, from the objective; each scored on every criterion, with reasons
    cands = l7.out("candidates_prompt.json")["scenes"]
    assert [s["scene_id"] for s in cands] == SCENE_IDS
    assert all(sum(c["kind"] == "initial" for c in s["candidates"]) == 3 for s in cands)
    spec = json.loads(l7.path(SPEC).read_text())
    evaluated = l7.out("evaluation_report_prompt.json")["scenes"]
    assert [s["scene_id"] for s in evaluated] == SCENE_IDS
    for scene in evaluated:
        assert scene["evaluations"]
        for ev in scene["evaluations"]:
            assert [c["criterion_id"] for c in ev["criteria"]] == \
                [c["id"] for c in spec["criteria"]]
            assert all(c["reason"] for c in ev["criteria"])
    # every candidate's fate is explained
    traces = l7.out("selection_trace_prompt.json")["scenes"]
    assert [s["scene_id"] for s in traces] == SCENE_IDS
    for scene in traces:
        assert scene["rounds"]
        for rnd in scene["rounds"]:
            assert all(e["reason"].startswith(("won:", "lost:")) for e in rnd["ranking"])
            assert sum(e["outcome"] == "won" for e in rnd["ranking"]) <= 1


@pytest.mark.slow
def test_call_log_tells_the_l7_family_apart(l7):
    assert l7.cli().returncode == 0
    calls = l7.calls()
    assert calls and all(c["book"] == SESSION for c in calls)
    assert {c["phase"] for c in calls} == {"candidates", "judge", "revision"}
    for c in calls:
        stage = {"candidates": "l7_candidates", "judge": "l7_judge", "revision": "l7_revise"}
        assert c["task"] == f"{stage[c['phase']]}:{c['scene']}"
    # 8 scenes x 3 candidates, each judged once
    assert sum(c["phase"] == "candidates" for c in calls) == 24
    assert sum(c["phase"] == "judge" and c["task"].startswith("l7_judge") for c in calls) == 24


def test_runtime_log_adds_up_to_the_call_log(l7):
    assert l7.cli().returncode == 0
    log = l7.out("runtime_log_l7.json")
    calls = l7.calls()
    assert log["totals"]["llm_calls"] == len(calls)
    assert log["totals"]["tokens_in"] == sum(c["tokens_in"] for c in calls) > 0
    stages = {s["stage"]: s for s in log["stages"]}
    assert stages["candidates"]["llm_calls"] == 24 and stages["candidates"]["cache_misses"] == 24
    assert stages["continuity_audit"]["llm_calls"] == 0
    revised = l7.out("continuity_audit_prompt.json")["revised_scenes"]
    # a revision is one call to revise plus one to judge the result
    assert stages["revision"]["llm_calls"] == 2 * len(revised)


def test_up_to_date_session_reruns_nothing(l7_built):
    before = l7_built.snapshot()
    n = len(l7_built.calls())
    proc = l7_built.cli()
    assert proc.returncode == 0, proc.out
    assert executed(proc) == []
    assert l7_built.calls()[n:] == []
    assert l7_built.snapshot() == before


def test_only_scenes_with_findings_are_revised(l7_built):
    audit = l7_built.out("continuity_audit_prompt.json")
    with_findings = set(audit["scenes_with_findings"])
    assert set(audit["revised_scenes"]) == with_findings
    assert 0 < len(with_findings) < len(SCENE_IDS)  # the example has both kinds
    assert audit["remaining_errors"] == 0
    revised_calls = {c["scene"] for c in l7_built.calls() if c["phase"] == "revision"}
    assert revised_calls == with_findings
    pack = {s["scene_id"]: s for s in l7_built.out("prompt_map_pack.json")["scenes"]}
    traces = {s["scene_id"]: s for s in l7_built.out("selection_trace_prompt.json")["scenes"]}
    for sid in SCENE_IDS:
        if sid not in with_findings:  # untouched: the initial winner, one round
            assert len(traces[sid]["rounds"]) == 1
            assert pack[sid]["candidate_id"] == traces[sid]["rounds"][0]["winner"]
            assert pack[sid]["status"] == "selected"


def test_changing_one_scene_regenerates_only_that_scene(l7_built):
    n = len(l7_built.calls())
    l7_built.edit_json(SCENES, lambda d: d["scenes"][3].update(
        action="Ines drops a rusted key into Tomas's open palm on the lighthouse stairs"))
    proc = l7_built.cli()
    assert proc.returncode == 0, proc.out
    ran = executed(proc)
    assert [t for t in ran if t.startswith("l7_candidates")] == ["l7_candidates:scene_004"]
    assert [t for t in ran if t.startswith("l7_judge")] == ["l7_judge:scene_004"]
    # the neighbours' audit is redone, no other pair's
    assert sorted(t for t in ran if t.startswith("l7_audit")) == [
        "l7_audit:scene_003+scene_004", "l7_audit:scene_004+scene_005"]
    new = l7_built.misses(n)
    assert new and {c["scene"] for c in new} == {"scene_004"}
    assert sum(c["phase"] == "candidates" for c in new) == 3


def test_changing_only_a_weight_rescores_and_reselects_without_generating(l7_built):
    before = l7_built.out("evaluation_report_prompt.json")
    n = len(l7_built.calls())
    l7_built.edit_json(SPEC, lambda d: d["criteria"][2].update(weight=3.0))  # forbidden_terms
    proc = l7_built.cli()
    assert proc.returncode == 0, proc.out
    ran = executed(proc)
    assert not [t for t in ran if t.startswith(("l7_candidates", "l7_judge", "l7_context"))]
    assert sorted(t for t in ran if t.startswith("l7_score:")) == \
        [f"l7_score:{s}" for s in SCENE_IDS]
    assert sorted(t for t in ran if t.startswith("l7_select:")) == \
        [f"l7_select:{s}" for s in SCENE_IDS]
    assert l7_built.misses(n) == []  # nothing generated again
    after = l7_built.out("evaluation_report_prompt.json")
    w_before = [e["weighted_score"] for s in before["scenes"] for e in s["evaluations"]]
    w_after = [e["weighted_score"] for s in after["scenes"] for e in s["evaluations"]]
    assert w_before != w_after
    assert after["score_spec"]["blake3"] != before["score_spec"]["blake3"]


def test_more_candidates_asks_only_the_new_ones(l7_built):
    n = len(l7_built.calls())
    l7_built.edit_json(OBJECTIVE, lambda d: d.update(candidates_per_scene=4))
    proc = l7_built.cli()
    assert proc.returncode == 0, proc.out
    new = [c for c in l7_built.misses(n) if c["phase"] == "candidates"]
    assert sorted(c["scene"] for c in new) == SCENE_IDS  # one new candidate per scene
    cands = l7_built.out("candidates_prompt.json")["scenes"]
    assert [s["scene_id"] for s in cands] == SCENE_IDS
    assert all(sum(c["kind"] == "initial" for c in s["candidates"]) == 4 for s in cands)


def test_a_second_run_of_the_same_session_at_once_is_refused(l7_built):
    import fcntl
    import os

    lock = l7_built.path(f"workspace/.scenemake/l7/{SESSION}/lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        one_line_error(l7_built.cli(), 2, "another L7 run of session 'sess_harbour_001' is in "
                                         "progress")
    finally:
        os.close(fd)
    assert l7_built.cli().returncode == 0


@pytest.mark.slow
def test_kill_9_mid_run_keeps_the_old_set_and_pays_nothing_twice(l7_built):
    import os
    import signal
    import subprocess
    import sys
    import time

    from support.l7 import INPUT, clean_env

    before = l7_built.snapshot()
    n = len(l7_built.calls())
    # a new style keyword changes every scene: every candidate is asked again, slowly
    l7_built.edit_json(OBJECTIVE, lambda d: d["style_preset"]["keywords"].append("rain haze"))
    argv = [sys.executable, "-m", "pipeline.l7", "--session-input", INPUT,
            "--session-objective", OBJECTIVE, "--scenes-v2", SCENES, "--out-dir", OUT]
    proc = subprocess.Popen(argv, cwd=l7_built.root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env=clean_env({"SCENEMAKE_OFFLINE_LATENCY_MS": "150"}))
    deadline = time.time() + 120
    try:
        while len(l7_built.misses(n)) < 10 and time.time() < deadline:
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert l7_built.snapshot() == before  # the old set, whole
    paid = {c["request_hash"] for c in l7_built.misses(n)}
    m = len(l7_built.calls())
    again = l7_built.cli()
    assert again.returncode == 0, again.out
    assert l7_built.snapshot() != before
    assert "rain haze" in l7_built.out("prompt_map_pack.json")["style_preset"]["keywords"]
    repaid = [c for c in l7_built.misses(m) if c["request_hash"] in paid]
    # An answer cached before the kill is never paid for again. The one call in flight may
    # be: the shared client logs a miss just before it caches the answer.
    assert len(repaid) <= 1, repaid


def test_no_candidate_can_meet_a_hard_constraint_is_exit_1(l7_built):
    n = len(l7_built.calls())
    l7_built.edit_json(SPEC, lambda d: d["criteria"][0]["params"].update(min_words=500,
                                                                         max_words=600))
    proc = l7_built.cli()
    line = one_line_error(proc, 1, "gate failed", "Gate-Out failed: scenes.selected",
                          "gate_out_report.json")
    assert "below the minimum" not in line  # one line, the first failed check
    assert l7_built.misses(n) == []  # a stricter spec generates nothing
    _schema_valid(l7_built)
    report = l7_built.out("gate_out_report.json")
    failed = {c["id"] for c in report["checks"] if c["status"] == "failed"}
    assert report["status"] == "failed" and "scenes.selected" in failed
    out = l7_built.out("session_output.json")
    assert (out["status"], out["exit_code"], out["failed_gate"]) == ("gate_failed", 1, "gate_out")
    trace = l7_built.out("selection_trace_prompt.json")["scenes"][0]["rounds"][0]
    assert trace["status"] == "rejected" and "prompt_length" in trace["ranking"][0]["reason"]
    rejected = l7_built.out("prompt_map_pack.json")["scenes"]
    assert [s["scene_id"] for s in rejected] == SCENE_IDS
    assert all(s["status"] == "rejected" for s in rejected)


def test_gate_in_failure_writes_its_report_and_exits_1(l7):
    l7.edit_json(SCENES, lambda d: d["scenes"][2]["characters"].append("ghost"))
    proc = l7.cli()
    one_line_error(proc, 1, "Gate-In failed: refs.characters_known", "scene_003 names 'ghost'")
    assert l7.calls() == []
    present = sorted(p.name for p in l7.path(OUT).iterdir())
    assert present == ["gate_in_report.json", "runtime_log_l7.json", "session_output.json"]
    report = l7.out("gate_in_report.json")
    assert report["status"] == "failed"
    assert first_error(report, "gate_in_report") is None
    out = l7.out("session_output.json")
    assert (out["exit_code"], out["failed_gate"]) == (1, "gate_in")
    assert first_error(out, "session_output") is None


def test_partial_rerun_regenerates_named_scenes_and_merges_the_rest(l7_built):
    base = l7_built.out("prompt_map_pack.json")
    n = len(l7_built.calls())
    proc = l7_built.cli("--scene-id", "scene_003", "--scene-id", "scene_005",
                        "--base-prompt-map-pack", f"{OUT}/prompt_map_pack.json",
                        "--out-dir", RERUN_OUT)
    assert proc.returncode == 0, proc.out
    _schema_valid(l7_built, RERUN_OUT)
    ran = executed(proc)
    assert sorted(t for t in ran if t.startswith("l7_candidates")) == [
        "l7_candidates:scene_003", "l7_candidates:scene_005"]
    new = l7_built.misses(n)
    assert {c["scene"] for c in new} == {"scene_003", "scene_005"}
    # regenerated: fresh samples (a new generation number is part of each request)
    assert {c["attempt"] for c in new if c["phase"] == "candidates"} == {1}
    pack = l7_built.out("prompt_map_pack.json", RERUN_OUT)
    for old, entry in zip(base["scenes"], pack["scenes"], strict=True):
        if entry["scene_id"] in ("scene_003", "scene_005"):
            assert entry["source"] == "generated" and entry["generation"] == 1
            assert entry["candidate_id"].startswith(entry["scene_id"] + "-g1-")
            assert entry["prompt"] != old["prompt"]
        else:
            assert entry == old  # merged unchanged
    v2 = l7_built.out("scenes_v2.json", RERUN_OUT)
    assert [s["prompt_map"]["prompt"] for s in v2["scenes"]] == \
        [s["prompt"] for s in pack["scenes"]]
    out = l7_built.out("session_output.json", RERUN_OUT)
    assert out["mode"] == "partial"
    assert out["policy"]["partial_rerun"]["scene_ids"] == ["scene_003", "scene_005"]
    assert out["counts"]["merged_scenes"] == 6
    cands = l7_built.out("candidates_prompt.json", RERUN_OUT)
    assert [s["scene_id"] for s in cands["scenes"]] == ["scene_003", "scene_005"]
    assert len(cands["merged_from_base"]) == 6
    audited = [p["pair"] for p in l7_built.out("continuity_audit_prompt.json", RERUN_OUT)["pairs"]]
    assert audited == [["scene_002", "scene_003"], ["scene_003", "scene_004"],
                       ["scene_004", "scene_005"], ["scene_005", "scene_006"]]
    # the full run's outputs are untouched
    assert l7_built.out("prompt_map_pack.json") == base


def test_partial_rerun_from_the_updated_scenes_v2_as_in_the_spec(l7_built):
    proc = l7_built.cli("--session-input", "workspace/l7/sample_session_input_l7.json",
                        "--session-objective", OBJECTIVE,
                        "--scenes-v2", f"{OUT}/scenes_v2.json", "--scene-id", "scene_003",
                        "--base-prompt-map-pack", f"{OUT}/prompt_map_pack.json",
                        "--out-dir", RERUN_OUT, base=False)
    assert proc.returncode == 0, proc.out
    # the prompt_map fields L7 added to scenes_v2 are not inputs: contexts are unchanged
    assert not [t for t in executed(proc) if t.startswith("l7_candidates:")
                and t != "l7_candidates:scene_003"]


def test_interrupted_publication_never_leaves_a_mix(l7_built, monkeypatch):
    import os

    from pipeline.l7 import export

    out = l7_built.path(OUT)
    before = l7_built.snapshot()
    new = {name: b"{}\n" for name in OUTPUTS}
    renames = []
    real_rename = os.rename

    def crash_after_first(src, dst):
        renames.append((src, dst))
        if len(renames) == 2:
            raise KeyboardInterrupt("killed between the renames")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        export.publish_set(out, new)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not out.exists()  # the old set is aside, the new one staged
    export.recover(out)
    assert l7_built.snapshot() == before  # the old set is back, whole
    assert [p.name for p in out.parent.iterdir() if ".l7-" in p.name] == []

    def crash_while_writing(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(export, "atomic_write_bytes", crash_while_writing)
    with pytest.raises(OSError):
        export.publish_set(out, new)
    assert l7_built.snapshot() == before
    # the next real run cleans the staging folder up and publishes a whole set
    monkeypatch.undo()
    proc = l7_built.cli()
    assert proc.returncode == 0 and l7_built.snapshot() == before
    assert [p.name for p in out.parent.iterdir() if ".l7-" in p.name] == []


@pytest.mark.slow
def test_a_hand_edited_output_is_never_silently_replaced(l7_built):
    pack = l7_built.path(f"{OUT}/prompt_map_pack.json")
    pack.write_text(pack.read_text().replace("Style:", "Style (mine):"))
    before = l7_built.snapshot()
    assert l7_built.cli().returncode == 0  # nothing to publish: the edit stays
    l7_built.edit_json(SPEC, lambda d: d["criteria"][2].update(weight=3.0))
    proc = l7_built.cli()
    one_line_error(proc, 2, "l7_publish", "prompt_map_pack.json was changed since the run "
                   "that wrote it", "move the edited file elsewhere")
    assert l7_built.snapshot() == before
    pack.unlink()
    assert l7_built.cli().returncode == 0
    assert sorted(l7_built.snapshot()) == sorted(OUTPUTS)


def test_new_out_dir_gets_the_whole_set_without_new_work(l7_built):
    n = len(l7_built.calls())
    proc = l7_built.cli("--out-dir", "workspace/l7/elsewhere")
    assert proc.returncode == 0, proc.out
    assert [t for t in executed(proc) if t != "l7_gate_in"] == ["l7_publish"]
    assert l7_built.calls()[n:] == []
    assert sorted(p.name for p in l7_built.path("workspace/l7/elsewhere").iterdir()) == \
        sorted(OUTPUTS)


@pytest.mark.slow
# -- the same stages as doit tasks ------------------------------------------------------
def test_doit_list_shows_the_l7_stages_beside_the_book(l7):
    proc = l7.doit("list")
    assert proc.returncode == 0, proc.out
    names = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {"l7", "l7_gate_in", "l7_context", "l7_candidates", "l7_judge", "l7_score",
            "l7_select", "l7_audit", "l7_revise", "l7_export", "l7_gate_out",
            "l7_publish"} <= names
    assert {"plan", "write", "guard"} <= names
    proc = l7.doit("list", "--all")
    assert "l7_candidates:scene_008" in proc.stdout
    assert "l7_audit:scene_001+scene_002" in proc.stdout


@pytest.mark.slow
def test_doit_l7_builds_the_example_and_then_reruns_nothing(l7):
    proc = l7.doit("l7")
    assert proc.returncode == 0, proc.out
    assert sorted(p.name for p in l7.path(OUT).iterdir()) == sorted(OUTPUTS)
    _schema_valid(l7)
    n = len(l7.calls())
    proc = l7.doit("l7")
    assert proc.returncode == 0 and executed(proc) == []
    assert l7.calls()[n:] == []


@pytest.mark.slow
def test_broken_l7_example_never_breaks_doit_for_books(l7):
    l7.path(SCENES).write_text("{")
    proc = l7.doit("list")
    assert proc.returncode == 0, proc.out
    assert "l7_gate_in" in proc.stdout and "plan" in proc.stdout
    proc = l7.doit("l7")
    assert proc.returncode != 0 and "Traceback" not in proc.out
    assert "invalid JSON at line 1" in proc.out


PARALLEL = """
import sys
import targets.l7.runner as runner
runner.answers_at_once = lambda *args: 2  # as the local provider says on a 2-core machine
from targets.l7.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_scenes_asked_at_once_give_what_one_at_a_time_gives(l7, l7_built_template):
    """The session's independent candidates and judges are asked as many at once as the
    model answers at once (a local model: one server per core); the outputs are exactly the
    serial run's."""
    import subprocess
    import sys

    from support.l7 import INPUT, OBJECTIVE, OUT, SCENES, L7Project, clean_env

    l7_built = L7Project(l7_built_template)

    proc = subprocess.run([sys.executable, "-c", PARALLEL, "--session-input", INPUT,
                           "--session-objective", OBJECTIVE, "--scenes-v2", SCENES,
                           "--out-dir", OUT], cwd=l7.root, capture_output=True, text=True,
                          env=clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    volatile = {"runtime_log_l7.json", "session_output.json"}  # timings
    serial, parallel = l7_built.snapshot(), l7.snapshot()
    assert serial.keys() == parallel.keys()
    for name in serial:
        if name not in volatile:
            assert parallel[name] == serial[name], name
    assert sorted(c["request_hash"] for c in l7.calls()) == sorted(
        c["request_hash"] for c in l7_built.calls())
