"""The L7 runner against a real OpenAI-compatible server (llama.cpp, tiny random weights)."""

from __future__ import annotations

import pytest
from support.l7 import OBJECTIVE, OUT, OUTPUTS, SCENES, SESSION

from pipeline.l7.contracts import OUTPUT_FILES, first_error

pytestmark = pytest.mark.llama


def test_example_session_runs_against_the_server(l7, llama_server):
    # two scenes, one candidate each: a handful of real calls
    l7.edit_json(SCENES, lambda d: d.update(scenes=d["scenes"][1:3]))
    l7.edit_json(OBJECTIVE, lambda d: d.update(candidates_per_scene=1,
                                               endpoint={"response_format": "json_object"}))
    env = {"SCENEMAKE_MODEL": "openai:tiny", "SCENEMAKE_BASE_URL": llama_server.base_url}
    proc = l7.cli(env=env)
    # random weights write word salad: the gates may fail it (1), nothing else may happen
    assert proc.returncode in (0, 1), proc.out
    assert "Traceback" not in proc.out
    assert sorted(p.name for p in l7.path(OUT).iterdir()) == sorted(OUTPUTS)
    for name in OUTPUTS:
        assert first_error(l7.out(name), OUTPUT_FILES[name]) is None, name
    calls = l7.calls()
    assert calls and all(c["book"] == SESSION for c in calls)
    assert all(c["provider"] == "openai" and c["model"] == "tiny" for c in calls)
    assert all(c["tokens_in"] > 0 and c["tokens_out"] > 0 for c in calls)
    assert len({c["tokens_in"] for c in calls}) > 1  # counted by the server
    log = l7.out("runtime_log_l7.json")
    assert log["totals"]["llm_calls"] == len(calls)
    assert log["totals"]["tokens_out"] == sum(c["tokens_out"] for c in calls)
    # rerun: everything is up to date, no call is made
    n = len(calls)
    again = l7.cli(env=env)
    assert again.returncode == proc.returncode
    assert l7.calls()[n:] == []
