"""The reference assistant's wording chosen by a real instruct model (SmolLM2 through the
``local`` provider): the facts stay the assistant's, the wording is the model's."""

from __future__ import annotations

import pytest
from support.scenario import sproject  # noqa: F401  (fixture)
from support.smollm import require_smollm

pytestmark = [pytest.mark.llama, pytest.mark.slow]


def test_the_wording_comes_from_the_real_model(sproject):  # noqa: F811
    require_smollm()
    # no "model": the local provider's own, the shipped SmolLM2
    sproject.rules(model={"provider": "local", "temperature": 0.0, "max_tokens": 200})
    a = sproject.assistant()
    r = a.ask("How many Packing Tape rolls are on hand?")
    assert r.status_code == 200, r.text
    body = r.json()
    llm = body["debug"]["llm"]
    assert "error" not in llm, llm
    assert llm["provider"] == "local" and llm["model"].startswith("SmolLM2-135M-Instruct")
    assert body["reply"].strip() and body["entries"]  # the facts are the assistant's own
    calls = [c for c in sproject.calls() if c["task"].startswith("assistant:")]
    assert calls and calls[0]["provider"] == "local" and calls[0]["tokens_out"] > 0
