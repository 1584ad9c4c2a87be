"""The example L7 session as shipped (8 scenes, 3 candidates each) against a real instruct
model, ``SCENEMAKE_MODEL=local`` and nothing else (SmolLM2 through the ``local`` provider):
it runs to a verdict, exit 0, or 1 with a Gate-Out report naming the failed check; never 2
(an error of scenemake's). Its independent candidates and judges are asked one per core."""

from __future__ import annotations

import pytest
from support.l7 import OUT, OUTPUTS
from support.smollm import LOCAL, require_smollm

from pipeline.l7.contracts import OUTPUT_FILES, first_error

pytestmark = [pytest.mark.llama, pytest.mark.slow]


def test_example_session_reaches_a_verdict_with_the_real_model(l7):
    require_smollm()
    from pipeline.llm.providers.local import cores

    proc = l7.cli(env=LOCAL, timeout=2400)
    assert proc.returncode in (0, 1), proc.out[-3000:]
    assert "Traceback" not in proc.out
    assert sorted(p.name for p in l7.path(OUT).iterdir()) == sorted(OUTPUTS)
    for name in OUTPUTS:
        assert first_error(l7.out(name), OUTPUT_FILES[name]) is None, name
    gate = l7.out("gate_out_report.json")
    if proc.returncode == 1:
        failed = [c for c in gate["checks"] if c["status"] == "failed"]
        assert failed and all(c["detail"] for c in failed), gate
        assert gate["status"] == "failed" and "gate failed" in proc.stderr
    calls = l7.calls()
    assert calls and all(c["provider"] == "local" for c in calls)
    # one server per core answered (the candidates and judges of two scenes at once)
    logs = sorted(p.name for p in (l7.root / "workspace" / ".scenemake").glob("local-server*"))
    assert len(logs) == min(cores(), 2), logs
    assert all(c["tokens_in"] > 0 and c["tokens_out"] > 0 for c in calls if c["cache"] == "miss")
    n = len(calls)
    again = l7.cli(env=LOCAL, timeout=600)
    assert again.returncode == proc.returncode
    assert [c for c in l7.calls()[n:] if c["cache"] == "miss"] == []
