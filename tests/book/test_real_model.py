"""The example book built end to end by a real instruct model (SmolLM2-135M-Instruct through
the ``local`` provider): every phase of every scene succeeds, the call log shows the model's
own token counts, a second run pays nothing, a rerun gets a fresh sample, and a template
change is refused and accepted exactly as with the offline stand-in.

One 6-scene build is shared by the module; the rerun and template tests use a 2-scene book
with a low ``max_tokens`` to keep CI's time down."""

from __future__ import annotations

import shutil

import pytest
from support.project import Project, executed, make_project
from support.smollm import LOCAL, require_smollm

pytestmark = [pytest.mark.llama, pytest.mark.slow]

BOOK = "workspace/books/example/book.json"
OUTLINE = "workspace/books/example/outline.json"
LLM_PHASES = ("plan", "continuity_pack", "write", "repair", "state_repair")


def _for_a_small_model(project: Project, **model) -> None:
    """What a 135M model needs: a lower temperature than the example's (which the stand-in
    ignores) and generous re-asks."""
    project.edit_json(BOOK, lambda d: (d["model"].update(temperature=0.3, **model),
                                       d.setdefault("endpoint", {}).update(max_reasks=4)))


@pytest.fixture(scope="module")
def smol_book(tmp_path_factory) -> Project:
    """The 6-scene example book, built once with SmolLM2."""
    require_smollm()
    project = Project(make_project(tmp_path_factory.mktemp("smol") / "proj"))
    _for_a_small_model(project)
    proc = project.doit(env=LOCAL, timeout=1800)
    assert proc.returncode == 0, proc.out[-3000:]
    return project


@pytest.fixture(scope="module")
def smol_two_template(tmp_path_factory) -> Project:
    """A 2-scene book (max_tokens 500) built once with SmolLM2; tests copy it."""
    require_smollm()
    project = Project(make_project(tmp_path_factory.mktemp("smol2") / "proj"))
    project.edit_json(OUTLINE, lambda d: (d["chapters"].__delitem__(slice(1, None)),
                                          d["chapters"][0]["scenes"].__delitem__(slice(2, None))))
    _for_a_small_model(project, max_tokens=500)
    proc = project.doit(env=LOCAL, timeout=1200)
    assert proc.returncode == 0, proc.out[-3000:]
    return project


@pytest.fixture
def smol_two(tmp_path, smol_two_template) -> Project:
    root = tmp_path / "proj"
    shutil.copytree(smol_two_template.root, root, symlinks=True)
    return Project(root)


def test_every_phase_of_every_scene_succeeds_with_real_tokens(smol_book):
    for chapter in ("ch001", "ch002"):
        for n in (1, 2, 3):
            phases = smol_book.ledger(f"{chapter}_sc00{n}")["phases"]
            assert set(phases) == {"plan", "preflight", "continuity_pack", "write", "repair",
                                   "state_repair", "lint", "commit"}
            assert all(e["status"] == "success" for e in phases.values()), phases
    misses = smol_book.misses()
    assert misses and all(c["provider"] == "local" for c in misses)
    # the server's own counts: they vary with the prompt and the answer
    assert all(c["tokens_in"] > 0 and c["tokens_out"] > 0 for c in misses)
    assert len({c["tokens_out"] for c in misses}) > 5
    # re-asks stay within the configured limit: at most max_reasks + 1 tries per task call
    tries: dict[str, int] = {}
    for c in misses:
        tries[c["task"]] = tries.get(c["task"], 0) + 1
    assert set(tries) >= {f"{p}:ch001_sc001" for p in LLM_PHASES}
    assert max(tries.values()) <= 5


def test_a_second_run_pays_nothing(smol_book):
    n = len(smol_book.calls())
    proc = smol_book.doit(env=LOCAL, timeout=600)
    assert proc.returncode == 0, proc.out[-2000:]
    assert smol_book.misses(n) == []
    assert [t for t in executed(proc) if ":" in t] == []


def test_rerun_from_write_gives_fresh_prose(smol_two):
    prose = smol_two.artifact("ch001_sc002", "write/prose.md")
    before = prose.read_text()
    n = len(smol_two.calls())
    proc = smol_two.doit("rerun-from", "write:ch001_sc002", env=LOCAL, timeout=900)
    assert proc.returncode == 0, proc.out[-2000:]
    assert smol_two.misses(n), "a rerun must ask the model again"
    assert prose.read_text() != before
    assert all(c["attempt"] == 1 for c in smol_two.calls()[n:] if c["task"] == "write:ch001_sc002")


def test_a_template_change_is_refused_then_accepted(smol_two):
    tdir = smol_two.book / "templates"
    tdir.mkdir()
    from pipeline.book.workspace import DEFAULT_TEMPLATES

    (tdir / "write.j2").write_text((DEFAULT_TEMPLATES / "write.j2").read_text()
                                   + "Keep it under a hundred words.\n")
    n = len(smol_two.calls())
    refused = smol_two.doit(env=LOCAL, timeout=300)
    assert refused.returncode != 0 and "prompt template(s) changed" in refused.out
    assert smol_two.calls()[n:] == []
    accepted = smol_two.doit("allow_prompt_change=1", "reason=shorter scenes", env=LOCAL,
                             timeout=900)
    assert accepted.returncode == 0, accepted.out[-2000:]
    assert smol_two.misses(n)
    write = smol_two.ledger("ch001_sc001")["phases"]["write"]
    assert write["prompt_update_reason"] == "shorter scenes"
    assert write["prompt_hash_prev"] != write["prompt_hash_new"]
