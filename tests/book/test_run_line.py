"""The end-of-run line of plain (piped) output: what the run built, paid and where it is."""

from __future__ import annotations

import re

from support.project import Project, executed

LINE = re.compile(r"^scenemake: (\d+) scene\(s\) built, (\d+) task\(s\) run, (\d+) up to date; "
                  r"LLM: (\d+) call\(s\) paid, (\d+) served by the cache, (\d+) tokens, "
                  r"\$(\d+\.\d{4})(.*)$")


def _last(proc) -> str:
    return proc.stdout.rstrip("\n").splitlines()[-1]


def test_a_full_build_says_what_it_built_and_paid(project: Project):
    proc = project.build()
    m = LINE.match(_last(proc))
    assert m, proc.stdout[-500:]
    calls = project.calls()
    assert int(m[1]) == 6 and int(m[2]) == len(executed(proc))
    assert int(m[4]) == len([c for c in calls if c["cache"] == "miss"])
    assert int(m[5]) == len([c for c in calls if c["cache"] == "hit"])
    assert int(m[6]) == sum(c["tokens_in"] + c["tokens_out"] for c in calls)
    assert "(text from the offline stand-in model: placeholder prose)" in m[8]
    assert "manuscript: workspace/books/example/draft/manuscript.md" in m[8]


def test_a_rerun_served_by_the_cache_says_so(built: Project):
    n = len(built.calls())
    proc = built.build("rerun-from", "repair:ch002_sc003")
    m = LINE.match(_last(proc))
    assert m, proc.stdout[-500:]
    new = built.calls()[n:]
    assert int(m[1]) == 1 and int(m[3]) > 0
    assert (int(m[4]), int(m[5])) == (len([c for c in new if c["cache"] == "miss"]),
                                      len([c for c in new if c["cache"] == "hit"]))


def test_the_no_op_fast_path_says_nothing_changed(built: Project):
    proc = built.build()
    assert executed(proc) == ["guard"]
    assert _last(proc).startswith("scenemake: nothing changed since the last complete build")
    assert "manuscript: workspace/books/example/draft/manuscript.md" in _last(proc)


def test_doit_list_and_other_commands_print_no_run_line(built: Project):
    assert "scenemake:" not in built.build("list").stdout
