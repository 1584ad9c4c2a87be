"""A try with the real small model (SmolLM2-135M-Instruct through the ``local`` provider, as
in tests/book/test_real_model.py): a variant of ``write.j2`` tried on a 2-scene book,
compared (the judge is the local model too), accepted, and the next plain ``doit`` pays
nothing for the scenes the try built."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
from support.project import REPO, Project, make_project
from support.smollm import LOCAL, require_smollm

pytestmark = [pytest.mark.llama, pytest.mark.slow]

OUTLINE = "workspace/books/example/outline.json"
SCENES = ["ch001_sc001", "ch001_sc002"]


def test_try_compare_accept_with_the_local_model(tmp_path):
    require_smollm()
    project = Project(make_project(tmp_path / "proj"))
    shutil.copytree(REPO / "score_specs", project.root / "score_specs")
    project.edit_json(OUTLINE, lambda d: (d["chapters"].__delitem__(slice(1, None)),
                                          d["chapters"][0]["scenes"].__delitem__(slice(2, None))))
    # the book's own settings, as shipped (issue #21: what the tests run is what a user runs);
    # two scenes keep the test's time down
    first = project.doit(env=LOCAL, timeout=1500)
    assert first.returncode == 0, first.out[-3000:]
    n0 = len(project.calls())

    tried = project.doit("try", "terse", SCENES[1], "--templates",
                         "workspace/books/example/variants/terse", "reason=shorter scenes",
                         env=LOCAL, timeout=1500)
    assert tried.returncode == 0, tried.out[-3000:]
    paid = project.misses(n0)
    assert paid and all(c["provider"] == "local" for c in paid)
    assert {c["task"].partition("/")[0] for c in paid} == {"try:terse"}
    assert not any("/plan:" in c["task"] for c in paid)  # the book's cards: not asked again
    assert {c["task"].partition("/")[2].partition(":")[0] for c in paid} >= {
        "write", "repair", "state_repair"}

    compared = project.doit("compare", "terse", "--short", env=LOCAL, timeout=900)
    assert compared.returncode == 0, compared.out[-3000:]
    assert "judge: local SmolLM2-135M-Instruct.Q4_1.gguf" in compared.stdout
    # the scene the try names, the accepted prose and the try's, each judged by the model
    judged = [c for c in project.calls() if c["task"].startswith("judge:")]
    assert {c["task"] for c in judged} == {f"judge:{SCENES[1]}"}
    assert len(judged) >= 2 and all(c["provider"] == "local" for c in judged)
    page = (project.draft / "tries" / "compare.html").read_text()
    assert page.count('<table class="judgement">') == 2

    accepted = project.doit("accept", "terse", env=LOCAL)  # the try's reason
    assert accepted.returncode == 0, accepted.out
    n1 = len(project.calls())
    rebuilt = project.doit(env=LOCAL, timeout=900)
    assert rebuilt.returncode == 0, rebuilt.out[-3000:]
    assert project.misses(n1) == []  # every scene was built by the try: nothing paid
    for sid in SCENES:
        write = project.ledger(sid)["phases"]["write"]
        assert write["prompt_update_reason"] == "shorter scenes"
        assert write["prompt_hash_prev"] != write["prompt_hash_new"]
        assert write["llm"]["cache"] == "hit"
    book_prose = project.artifact(SCENES[1], "repair/prose.md").read_bytes()
    assert book_prose == (project.draft / "tries" / "terse" / "scenes" / SCENES[1] / "repair"
                          / "prose.md").read_bytes()
    twice = [h for h, n in Counter(c["request_hash"] for c in project.misses()).items()
             if n > 1]
    assert twice == []
