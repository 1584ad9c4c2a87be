"""Tries (issue 24): ``doit try`` builds scenes with other templates beside the accepted book,
``compare`` shows them against it, ``accept`` makes one the book's, ``drop`` removes one.

What a writer depends on: the accepted book does not move while a try is built (a plain
``doit`` and ``doit list --status`` say exactly what they said without it, ``drop`` leaves
it byte for byte as before), no request is paid twice (by the book, another try, a resumed
try), and an accepted try gives the book a plain ``allow_prompt_change=1`` would have given
it, paying only for what the try did not build."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from support.project import REPO, Project, built_files, executed, snapshot

pytestmark = pytest.mark.slow

TRIED = ["ch001_sc001", "ch001_sc002"]
REST = ["ch001_sc003", "ch002_sc001", "ch002_sc002", "ch002_sc003"]
LLM_PHASES = ("plan", "continuity_pack", "write", "repair", "state_repair")
OFFLINE_JUDGE = {"SCENEMAKE_MODEL": "offline:offline-1"}  # the stand-in judges: fast, labelled


@pytest.fixture
def built(built: Project) -> Project:
    """The built example, with the project's score specs (the judge's rubric) as a clone
    has them."""
    shutil.copytree(REPO / "score_specs", built.root / "score_specs")
    return built


def _variant(project: Project, name: str, template: str, line: str) -> str:
    """A folder ``variants/NAME`` holding the default ``template`` plus ``line``."""
    folder = project.root / "variants" / name
    folder.mkdir(parents=True, exist_ok=True)
    text = (REPO / "pipeline" / "book" / "templates" / template).read_text() + line + "\n"
    (folder / template).write_text(text)
    return f"variants/{name}"


def _paid(project: Project, since: int = 0) -> list[dict]:
    return project.misses(since)


def _db_rows(root: Path) -> dict[str, list]:
    """Every table of the book's build DB, as rows (what a build recorded)."""
    db = root / "workspace" / ".scenemake" / "books" / "example.sqlite"
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where "
                                             "type='table' order by name")]
        return {t: sorted(map(repr, conn.execute(f"select * from {t}"))) for t in tables}


def _accepted_state(root: Path) -> dict:
    """Everything of the accepted book a try must not move: its folder (draft, ledgers,
    templates; the tries left out), its build DB's records, its stamp, its kept versions."""
    book = root / "workspace" / "books" / "example"
    state = root / "workspace" / ".scenemake"
    files = {k: v for k, v in snapshot(book).items() if not k.startswith("draft/tries")}
    versions = {k: v for k, v in snapshot(state / "versions" / "example").items()
                if not k.startswith("tries")}
    stamp = state / "books" / "example.stamp.json"
    return {"book": files, "db": _db_rows(root), "versions": versions,
            "stamp": stamp.read_bytes() if stamp.exists() else None}


def _nothing_of_a_try(project: Project) -> None:
    state = project.root / "workspace" / ".scenemake"
    assert not (project.draft / "tries").exists()
    assert not (state / "tries").exists()
    assert not (state / "versions" / "example" / "tries").exists()


def _copy(project: Project, where: Path) -> Project:
    shutil.copytree(project.root, where, symlinks=True)
    return Project(where)


def test_two_variants_tried_compared_one_accepted_pay_each_request_once(built: Project,
                                                                        tmp_path: Path):
    before = _copy(built, tmp_path / "before")  # the book as built, for the reference copy
    terse = _variant(built, "terse", "write.j2", "Keep it under a hundred words.")
    vivid = _variant(built, "vivid", "write.j2", "Use vivid sensory detail.")
    n0 = len(built.calls())

    a = built.doit("try", "terse", *TRIED, "--templates", terse, "reason=shorter scenes")
    assert a.returncode == 0, a.out
    assert a.stdout.rstrip().splitlines()[-1].startswith("scenemake: try terse: 2 scene(s)")
    n1 = len(built.calls())
    b = built.doit("try", "vivid", *TRIED, "--templates", vivid)
    assert b.returncode == 0, b.out
    n2 = len(built.calls())
    calls = built.calls()
    try_a = [c for c in calls[n0:n1] if c["cache"] == "miss"]
    try_b = [c for c in calls[n1:n2] if c["cache"] == "miss"]
    # each try asks anew only what its template changes: write and what reads it (the
    # first scene's plan and continuity pack are the book's, copied: no call at all)
    for paid, name in ((try_a, "terse"), (try_b, "vivid")):
        tasks = {c["task"] for c in paid}
        assert tasks == {f"try:{name}/{p}:{s}" for s in TRIED
                         for p in ("write", "repair", "state_repair")} | {
            f"try:{name}/continuity_pack:ch001_sc002"}, tasks
    assert not any(c["task"].startswith(("try:terse/plan", "try:vivid/plan"))
                   for c in built.calls()[n0:])

    compared = built.doit("compare", "terse", "vivid", env=OFFLINE_JUDGE)
    assert compared.returncode == 0, compared.out
    for sid in TRIED:
        assert f"{sid}: " in compared.stdout
    heads = [re.split(r"\s{2,}", line.strip()) for line in compared.stdout.splitlines()
             if line.strip().startswith("accepted")]
    assert heads == [["accepted", "try terse", "try vivid"]] * 2
    scores = [re.split(r"\s{2,}", line.strip())[1:] for line in compared.stdout.splitlines()
              if line.strip().startswith("judge ")]
    assert len(scores) == 2 and all(float(x) >= 1 for row in scores for x in row)
    assert "judge: the offline stand-in (not a language model" in compared.stdout
    assert (built.draft / "tries" / "compare.html").exists()

    accepted = built.doit("accept", "terse", "reason=shorter scenes")
    assert accepted.returncode == 0, accepted.out
    assert (built.book / "templates" / "write.j2").read_text() == \
        (built.root / terse / "write.j2").read_text()
    n3 = len(built.calls())
    rebuilt = built.doit()  # a plain doit: no allow_prompt_change
    assert rebuilt.returncode == 0, rebuilt.out
    calls = built.calls()[n3:]
    paid = [c for c in calls if c["cache"] == "miss"]
    # the tried scenes come from the try's answers; the rest is paid, once
    assert {c["scene"] for c in calls if c["scene"] in TRIED and c["cache"] == "miss"} == set()
    assert {c["task"] for c in calls if c["scene"] in TRIED} == \
        {c["task"].partition("/")[2] for c in try_a}
    assert {c["scene"] for c in paid} == set(REST)
    # no request paid twice, anywhere in the story
    twice = [h for h, n in Counter(c["request_hash"] for c in built.misses()).items() if n > 1]
    assert twice == []
    built_by = [c for c in built.misses(n0) if not c["task"].startswith("judge:")]
    assert len(built_by) == len(try_a) + len(try_b) + len(paid)
    judged = [c for c in built.calls()[n0:] if c["task"].startswith("judge:")]
    assert len(judged) == 6  # 2 scenes, 3 proses each (the stand-in judge: paid, $0)
    assert n2 - n1 == len(try_b)  # the try's calls: all paid, none served twice
    for sid in TRIED + REST:
        write = built.ledger(sid)["phases"]["write"]
        assert write["prompt_update_reason"] == "shorter scenes"
        assert write["prompt_hash_prev"] != write["prompt_hash_new"]
    assert "nothing changed" in built.doit().stdout  # then a no-op

    # the same template through allow_prompt_change=1, served from the same answers
    ref = before
    (ref.book / "templates").mkdir()
    shutil.copy(built.root / terse / "write.j2", ref.book / "templates" / "write.j2")
    cache = ref.root / "workspace" / ".scenemake" / "llm_cache"
    shutil.rmtree(cache)
    shutil.copytree(built.root / "workspace" / ".scenemake" / "llm_cache", cache)
    m = len(ref.calls())
    ref.build("allow_prompt_change=1", "reason=shorter scenes")
    assert ref.misses(m) == []
    mine = {k: v for k, v in built_files(built.root).items() if not k.startswith("tries/")}
    assert mine == built_files(ref.root)
    for sid in TRIED + REST:
        for phase in LLM_PHASES:
            got, want = (built.ledger(sid)["phases"][phase], ref.ledger(sid)["phases"][phase])
            for key in ("prompt_hash", "prompt_hash_prev", "prompt_hash_new",
                        "prompt_update_reason", "template_hashes", "attempt"):
                assert got.get(key) == want.get(key), (sid, phase, key)


def test_between_try_and_accept_the_book_is_as_without_the_try(built: Project, tmp_path: Path):
    other = _copy(built, tmp_path / "other")  # the same book, never tried
    variant = _variant(built, "terse", "write.j2", "Keep it under a hundred words.")
    before = _accepted_state(built.root)
    proc = built.doit("try", "terse", *TRIED, "--templates", variant)
    assert proc.returncode == 0, proc.out
    assert _accepted_state(built.root) == before
    for args in ((), ("list", "--all", "--status"), ("why", "write:ch001_sc002")):
        mine, theirs = built.doit(*args), other.doit(*args)
        assert (mine.returncode, mine.stdout, mine.stderr) == \
            (theirs.returncode, theirs.stdout, theirs.stderr), args
    assert "nothing changed since the last complete build" in built.doit().stdout

    # a change of the book's own template: refused alike, before and after a try made of it
    for project in (built, other):
        (project.book / "templates").mkdir()
        shutil.copy(built.root / variant / "write.j2", project.book / "templates" / "write.j2")
    proc = built.doit("try", "pending", "ch001_sc003")  # the book's templates as they are
    assert proc.returncode == 0, proc.out
    for args in ((), ("list", "--all", "--status"), ("why", "write:ch002_sc001")):
        mine, theirs = built.doit(*args), other.doit(*args)
        assert (mine.returncode, mine.stdout, mine.stderr) == \
            (theirs.returncode, theirs.stdout, theirs.stderr), args
        if not args:
            assert mine.returncode == 1 and "prompt template(s) changed" in mine.out
    assert _accepted_state(built.root) == _accepted_state(other.root)

    for name in ("terse", "pending"):
        dropped = built.doit("drop", name)
        assert dropped.returncode == 0, dropped.out
        assert dropped.stdout.startswith(f"dropped try {name}: removed ")
    assert _accepted_state(built.root) == _accepted_state(other.root)
    _nothing_of_a_try(built)
    assert built.doit("tries").stdout.startswith("book 'example' has no try yet")


def test_an_unchanged_prompt_costs_nothing_in_a_try_even_after_a_rerun(built: Project):
    sid = "ch001_sc001"
    built.build("rerun-from", f"write:{sid}")  # attempt 1: fresh answers from write on
    prose = built.artifact(sid, "write/prose.md").read_bytes()
    n = len(built.calls())
    same = built.doit("try", "same", "ch001_sc002")  # no template differs from the book's
    assert same.returncode == 0, same.out
    assert built.calls()[n:] == []  # not even a cache hit: the book's results are its
    assert [t for t in executed(same) if ":" in t] == []
    assert (built.draft / "tries" / "same" / "scenes" / sid / "write" / "prose.md"
            ).read_bytes() == prose

    variant = _variant(built, "patch", "state_repair.j2", "List only what changed.")
    proc = built.doit("try", "patch", sid, "--templates", variant)
    assert proc.returncode == 0, proc.out
    asked = {c["task"] for c in built.calls()[n:]}
    assert asked == {f"try:patch/state_repair:{sid}"}  # write and repair: prompts unchanged
    assert (built.draft / "tries" / "patch" / "scenes" / sid / "write" / "prose.md"
            ).read_bytes() == prose  # the rerun's prose (attempt 1), not attempt 0's


def test_a_restored_version_stays_restored_through_a_try_and_its_acceptance(built: Project):
    sid = "ch001_sc001"
    built.build("rerun-from", f"write:{sid}")
    built.build("restore", f"write:{sid}", "1")
    built.build()  # what reads it rebuilds on it
    restored = built.artifact(sid, "write/prose.md").read_bytes()
    variant = _variant(built, "patch", "state_repair.j2", "List only what changed.")
    built.build("try", "patch", sid, "--templates", variant)
    assert (built.draft / "tries" / "patch" / "scenes" / sid / "write" / "prose.md"
            ).read_bytes() == restored
    history = built.doit("history", f"write:{sid}").stdout
    assert "try:patch" in history and "the same files as the book's" in history
    built.build("accept", "patch", "reason=smaller patches")
    n = len(built.calls())
    built.build()
    assert [c for c in built.misses(n) if c["scene"] == sid] == []
    assert built.artifact(sid, "write/prose.md").read_bytes() == restored
    versions = [line for line in built.doit("history", f"write:{sid}").stdout.splitlines()
                if line[2:3] == "v"]
    # still the newest version, and the files on disk: the try and its acceptance kept it
    assert versions[-1].startswith("* v3") and "restored version 1" in versions[-1]
    update = built.ledger(sid)["phases"]["state_repair"]
    assert update["prompt_update_reason"] == "smaller patches"


def test_accepting_a_try_made_on_other_templates_is_refused(built: Project):
    variant = _variant(built, "terse", "write.j2", "Keep it under a hundred words.")
    built.build("try", "terse", "ch001_sc001", "--templates", variant, "reason=shorter")
    (built.book / "templates").mkdir()
    override = built.book / "templates" / "repair.j2"
    override.write_text((REPO / "pipeline/book/templates/repair.j2").read_text() + "Be terse.\n")
    for args in (("accept", "terse"), ("try", "terse")):
        proc = built.doit(*args)
        assert proc.returncode == 3, proc.out
        [line] = proc.stderr.splitlines()
        assert "repair.j2" in line and "changed since" in line or "other templates" in line
    assert not (built.book / "templates" / "write.j2").exists()
    with sqlite3.connect(built.root / "workspace/.scenemake/books/example.sqlite") as conn:
        assert conn.execute("select * from sm_settings where key='accepted_try'").fetchall() \
            == []


def test_estimate_says_what_a_try_will_pay_and_writes_nothing(built: Project):
    variant = _variant(built, "terse", "write.j2", "Keep it under a hundred words.")
    before = _accepted_state(built.root)
    est = built.doit("estimate", "try:terse", *TRIED, "--templates", variant)
    assert est.returncode == 0, est.out
    assert "Next run of try 'terse' of book 'example'" in est.stdout
    total = [line for line in est.stdout.splitlines() if "total" in line][0].split("│")
    assert int(total[4]) == 7  # write, repair, state_repair of both, continuity_pack of the 2nd
    assert _accepted_state(built.root) == before
    _nothing_of_a_try(built)
    n = len(built.calls())
    built.build("try", "terse", *TRIED, "--templates", variant)
    assert len(built.misses(n)) == 7
    est = built.doit("estimate", "try:terse")
    total = [line for line in est.stdout.splitlines() if "total" in line][0].split("│")
    assert int(total[4]) == 0
    # dropped and tried again: every answer is in the cache, nothing to pay
    built.build("drop", "terse")
    est = built.doit("estimate", "try:terse", *TRIED, "--templates", variant)
    total = [line for line in est.stdout.splitlines() if "total" in line][0].split("│")
    assert int(total[7]) == 1 and int(total[4]) == 6  # the first write: its request is known
    n = len(built.calls())
    built.build("try", "terse", *TRIED, "--templates", variant)
    assert built.misses(n) == []


def test_a_killed_try_resumes_and_pays_nothing_twice(built: Project, tmp_path: Path):
    clean = _copy(built, tmp_path / "clean")
    variant = _variant(built, "terse", "write.j2", "Keep it under a hundred words.")
    _variant(clean, "terse", "write.j2", "Keep it under a hundred words.")
    clean.build("try", "terse", *TRIED, "--templates", variant)
    killed = built.doit("try", "terse", *TRIED, "--templates", variant,
                        env={"SCENEMAKE_KILL_AT": "written@/tries/terse/scenes/:6"})
    assert killed.returncode == -signal.SIGKILL, killed.out
    misses = built.misses()
    cut = {misses[-1]["request_hash"]} if misses else set()
    again = built.doit("try", "terse")
    assert again.returncode == 0, again.out
    paid = Counter(c["request_hash"] for c in built.misses())
    assert {h for h, k in paid.items() if k > 1} <= cut
    assert len(paid) == len({c["request_hash"] for c in clean.misses()})
    ours = built.draft / "tries" / "terse" / "scenes"
    assert snapshot(ours) == snapshot(clean.draft / "tries" / "terse" / "scenes")
    assert list(built.root.rglob("*.tmp")) == []


def test_two_tries_at_once_pay_each_request_once(built: Project):
    a = _variant(built, "a", "write.j2", "Keep it under a hundred words.")
    b = _variant(built, "b", "write.j2", "Keep it under a hundred words.")
    shutil.copy(REPO / "pipeline/book/templates/repair.j2", built.root / b / "repair.j2")
    with open(built.root / b / "repair.j2", "a") as fh:
        fh.write("Cut every adverb.\n")
    env = {"SCENEMAKE_OFFLINE_LATENCY_MS": "60", "PYTHONUNBUFFERED": "1"}
    import os

    procs = [subprocess.Popen([sys.executable, "-m", "doit", "try", name, *TRIED,
                               "--templates", folder], cwd=built.root,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **env})
             for name, folder in (("a", a), ("b", b))]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    paid = Counter(c["request_hash"] for c in built.misses())
    assert [h for h, n in paid.items() if n > 1] == []
    # the writes are the same request in both: one paid, the other served
    writes = [c for c in built.calls() if c["task"].endswith("/write:ch001_sc001")]
    assert sorted(c["cache"] for c in writes) == ["hit", "miss"]


def test_bad_input_is_one_line_and_makes_nothing(built: Project):
    before = _accepted_state(built.root)
    (built.root / "variants" / "odd").mkdir(parents=True)
    (built.root / "variants" / "odd" / "story.j2").write_text("x")
    (built.root / "variants" / "empty").mkdir()
    cases = [
        (("try",), "doit try needs a name"),
        (("try", "../x", "ch001_sc001"), "is not a try name"),
        (("try", "a", "ch009_sc001"), "unknown scene 'ch009_sc001'"),
        (("try", "a", "ch001_sc001", "--templates", "nowhere"), "--templates nowhere: no such"),
        (("try", "a", "ch001_sc001", "--templates", "variants/odd"), "story.j2 is not a template"),
        (("try", "a", "ch001_sc001", "--templates", "variants/empty"), "no template in it"),
        (("accept", "nope", "reason=x"), "no try 'nope'"),
        (("accept",), "accept needs one try's name"),
        (("drop", "nope"), "no try 'nope'"),
        (("compare", "nope"), "no try 'nope'"),
        (("compare",), "has no try to compare"),
        (("report", "try:nope"), "no try 'nope'"),
        (("estimate", "try:../x"), "is not a try name"),
        (("diff", "write:ch001_sc001", "try:nope"), "no try 'nope'"),
        (("restore", "write:ch001_sc001", "try:nope"), "doit accept nope"),
    ]
    for args, words in cases:
        proc = built.doit(*args)
        assert proc.returncode == 3, (args, proc.out)
        assert "Traceback" not in proc.out
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0], (args, proc.stderr)
    assert _accepted_state(built.root) == before
    _nothing_of_a_try(built)
    variant = _variant(built, "terse", "write.j2", "Keep it under a hundred words.")
    built.build("try", "terse", "ch001_sc001", "--templates", variant)
    proc = built.doit("accept", "terse")  # neither the try nor the command gave a reason
    assert proc.returncode == 3 and "accept needs a reason" in proc.stderr
    proc = built.doit("try", "terse", "--templates", "variants/odd")
    assert proc.returncode == 3 and "story.j2" in proc.stderr
    other = _variant(built, "other", "write.j2", "Something else.")
    proc = built.doit("try", "terse", "--templates", other)
    assert proc.returncode == 3 and "was made with other templates (write.j2 differ)" in \
        proc.stderr


def test_tries_lists_what_each_try_is(built: Project):
    variant = _variant(built, "terse", "write.j2", "Keep it under a hundred words.")
    built.build("try", "terse", *TRIED, "--templates", variant, "reason=shorter scenes")
    out = built.doit("tries").stdout.splitlines()
    assert out[0] == f"try terse: 2 scene(s): {', '.join(TRIED)}"
    assert out[1] == "  reason: shorter scenes"
    assert out[2] == "  templates: write.j2 +1 -0 line(s) (from variants/terse)"
    assert out[3].startswith("  cost: 7 call(s) paid, $0.0000; lint: 2 of 2 scene(s) pass")
    assert out[4].startswith("  made ") and out[4].endswith("; built")
    meta = json.loads((built.draft / "tries" / "terse" / "try.json").read_text())
    assert meta["scenes"] == TRIED and meta["reason"] == "shorter scenes"
    assert set(meta["variants"]) == {"write"} and meta["runs"][-1]["exit"] == 0


def test_a_try_keeps_to_its_budget_and_resumes_paying_nothing_twice(built: Project):
    built.edit_json("workspace/books/example/book.json", lambda d: d.update(
        prices={"offline-1": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}}))
    assert "LLM: 0 call(s) paid" in built.build().stdout  # prices: no part of a request
    variant = _variant(built, "terse", "write.j2", "Keep it under a hundred words.")
    n = len(built.calls())
    stopped = built.doit("try", "terse", *TRIED, "--templates", variant, "budget=3")
    assert stopped.returncode == 1 and "of $3.0000 spent in this run" in stopped.out
    assert "Traceback" not in stopped.out
    spent = built.misses(n)
    assert spent and sum(c["cost_usd"] for c in spent) <= 3
    assert "last run exited 1" in built.doit("tries").stdout
    done = built.build("try", "terse")
    assert done.stdout.rstrip().splitlines()[-1].startswith("scenemake: try terse: ")
    paid = [c["request_hash"] for c in built.misses(n)]
    assert len(paid) == len(set(paid)) == 7
