"""``doit estimate`` on a slow model: the time the next run would take, from the tokens per
second the model was measured at on this machine (kept with the endpoint's capabilities in
workspace/.scenemake/endpoints.json), or "unknown"; only what the named tasks need; a model
on this machine costs $0 with no "no price" warning."""

from __future__ import annotations

import json

import pytest
from support.project import Project
from support.smollm import LOCAL, require_smollm

from pipeline.llm.endpoints import EndpointMemory, estimate_seconds

# the table's columns: phase, stale now, may rerun, LLM calls, est. tokens, est. cost $,
# from the cache, est. time

def _rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] and cells[0] not in ("phase",):
            rows[cells[0]] = cells
    return rows


def _speed(project: Project, model: str, tokens_per_s: float, prompt_per_s: float) -> None:
    path = project.root / "workspace" / ".scenemake" / "endpoints.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "endpoints": {"local": {model: {
        "json_mode": "json_object", "speed": {"tokens_per_s": tokens_per_s,
                                              "prompt_tokens_per_s": prompt_per_s,
                                              "answers": 9}}}}}))


def _local_model() -> str:
    from pipeline.llm.providers import local

    return local.model_name(local.default_model_path().resolve())


def test_a_local_model_never_run_costs_nothing_and_its_time_is_unknown(project: Project):
    require_smollm()
    proc = project.build("estimate", env=LOCAL)
    assert "no price" not in proc.out and project.calls() == []
    rows = _rows(proc.stdout)
    assert rows["total"][3] == "30" and rows["total"][5] == "0.0000"
    assert rows["total"][7] == "unknown" and rows["plan"][7] == "unknown"
    assert rows["lint"][7] == "-"  # no call expected: no time
    assert "time unknown: this model never answered on this machine" in " ".join(
        proc.stdout.split())
    # the title names the model file with its content hash shortened, on one line
    digest = _local_model().rpartition("@")[2]
    title = proc.stdout.splitlines()[0].strip()
    assert title == ("Next run of book 'example' "
                     f"(local:SmolLM2-135M-Instruct.Q4_1.gguf@{digest[:12]})"), title


def test_time_comes_from_the_speed_measured_here(project: Project):
    require_smollm()
    model = _local_model()
    _speed(project, model, tokens_per_s=40.0, prompt_per_s=400.0)
    proc = project.build("estimate", env=LOCAL)
    rows = _rows(proc.stdout)
    tokens_plan = int(rows["plan"][4])
    assert rows["plan"][7] != "unknown" and rows["total"][7] != "unknown"
    # the figure is the one the measured speed gives for those tokens
    seconds = estimate_seconds(project.root / "workspace" / ".scenemake", "local", model, {},
                               6, 0, tokens_plan)
    assert seconds == tokens_plan / 40.0
    assert "tokens per second measured on this machine" in " ".join(proc.stdout.split())


@pytest.mark.slow
def test_named_tasks_estimate_only_what_they_need(project: Project):
    require_smollm()
    _speed(project, _local_model(), tokens_per_s=40.0, prompt_per_s=400.0)
    proc = project.build("estimate", "write:ch001_sc002", env=LOCAL)
    rows = _rows(proc.stdout)
    # scene 2's write needs scene 1 committed (its pre-state) and both plans' cards
    assert {p: rows[p][3] for p in ("plan", "continuity_pack", "write", "repair",
                                    "state_repair")} == {
        "plan": "2", "continuity_pack": "2", "write": "2", "repair": "1", "state_repair": "1"}
    assert rows["total"][3] == "8"
    assert "for write:ch001_sc002" in " ".join(proc.stdout.split())  # the title wraps
    group = _rows(project.build("estimate", "plan", env=LOCAL).stdout)
    assert group["plan"][3] == "6" and group["total"][3] == "6"
    bad = project.doit("estimate", "write:ch009_sc009", env=LOCAL)
    assert bad.returncode != 0 and "no task 'write:ch009_sc009'" in bad.out
    assert "Traceback" not in bad.out


def test_the_speed_is_measured_as_answers_come(tmp_path):
    """Each streamed answer's timing moves the speed kept for its endpoint and model: the
    mean of the first answers, then a moving average."""
    from pipeline.llm import ProviderResult

    memory = EndpointMemory(tmp_path / "endpoints.json")
    assert memory.speed("local", "m") is None
    memory.note_speed("local", "m", ProviderResult("x", 100, 41, prompt_s=0.5, answer_s=2.0))
    memory.note_speed("local", "m", ProviderResult("x", 300, 21, prompt_s=0.5, answer_s=2.0))
    speed = EndpointMemory(tmp_path / "endpoints.json").speed("local", "m")  # from the file
    assert speed == {"answers": 2, "tokens_per_s": 15.0, "prompt_tokens_per_s": 400.0}
    assert estimate_seconds(tmp_path, "local", "m", {}, 2, 800, 60) == 800 / 400 + 60 / 15
    assert estimate_seconds(tmp_path, "local", "other", {}, 1, 10, 10) is None
    # the stand-in says it itself: at once, or after its simulated latency
    assert estimate_seconds(tmp_path, "offline", "offline-1", {}, 4, 10, 10) == 0
    assert estimate_seconds(tmp_path, "offline", "offline-1", {"offline_latency_ms": 250}, 4,
                            10, 10) == 1.0
