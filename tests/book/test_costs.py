"""Cost per call, `doit cost`, `doit estimate` and the budget, with a priced offline model."""

from __future__ import annotations

import json

import pytest
from support.project import PHASES, executed

BOOK = "workspace/books/example/book.json"
PRICE = {"offline-1": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}}


def _price(project) -> None:
    project.edit_json(BOOK, lambda d: d.update(prices=PRICE))


@pytest.mark.slow
def test_calls_are_priced_and_totalled(project):
    _price(project)
    project.build()
    misses = project.misses()
    for c in misses:
        assert c["cost_usd"] == (c["tokens_in"] * 1000 + c["tokens_out"] * 2000) / 1e6
    total = sum(c["cost_usd"] for c in misses)
    out = project.build("cost").stdout
    assert f"{total:.4f}" in out and "write" in out
    totals = json.loads((project.draft / "context" / "cost_totals.json").read_text())
    assert totals["total"]["calls"] == 30 and abs(totals["total"]["spent"] - total) < 1e-5
    assert totals["phases"]["write"]["calls"] == 6
    ledger = project.ledger("ch001_sc002")
    write = ledger["phases"]["write"]["llm"]
    assert write["cost_usd"] > 0
    assert ledger["totals"]["cost_usd"] == sum(
        e["llm"]["cost_usd"] for e in ledger["phases"].values() if e.get("llm"))

    # the cache's savings show up as "avoided" after a reset
    project.build("reset")
    project.build()
    out = project.build("cost").stdout
    assert f"{total:.4f}" in out  # spent did not grow
    assert out.count(f"{total:.4f}") >= 2  # and the same amount was avoided


@pytest.mark.slow
def test_budget_stops_before_it_is_exceeded_and_resume_loses_nothing(project):
    _price(project)
    proc = project.doit("budget=3")
    assert proc.returncode != 0
    assert "budget: $" in proc.out and "of $3.0000 spent in this run" in proc.out
    assert "Traceback" not in proc.out
    spent = sum(c["cost_usd"] for c in project.misses())
    assert 0 < spent <= 3
    done = project.db_tasks() - {"guard"}
    paid = len(project.misses())

    again = project.build()
    assert not (set(executed(again)) & done)
    tasks = [c["task"] for c in project.misses()]
    assert len(tasks) == len(set(tasks)) == 30  # nothing paid twice
    assert len(project.misses()) > paid


def test_budget_from_config(project):
    project.edit_json(BOOK, lambda d: d.update(prices=PRICE, max_cost_usd=2))
    proc = project.doit()
    assert proc.returncode != 0 and "of $2.0000 spent" in proc.out
    assert sum(c["cost_usd"] for c in project.misses()) <= 2


def test_bad_budget_is_refused(project):
    proc = project.doit("budget=lots")
    assert proc.returncode != 0 and "budget=lots is not an amount in USD" in proc.out
    assert project.calls() == []


@pytest.mark.slow
def test_estimate_before_a_run(built):
    _price(built)
    # priced history: rerun everything once so the call log has costs to estimate from
    built.build("rerun-from", "--all")
    built.edit_json("workspace/books/example/outline.json",
                    lambda d: d["chapters"][1]["scenes"][1].update(brief="Mara waits."))
    # the brief is read by its scene's plan and, as "the scene before", by the next one's
    dry = built.build("rerun-from", "--dry-run", "plan:ch002_sc002", "plan:ch002_sc003").stdout
    llm = [line for line in dry.splitlines() if line.startswith("would forget ")
           and line.split()[-1].split(":")[0] in
           ("plan", "continuity_pack", "write", "repair", "state_repair")]
    n = len(built.calls())
    out = built.build("estimate").stdout
    assert built.calls()[n:] == []  # estimating calls nothing
    total = [line for line in out.splitlines() if "total" in line][0]
    cells = [c.strip() for c in total.split("│") if c.strip()]
    assert cells[0] == "total" and cells[1] == "2" and int(cells[3]) == len(llm)
    assert float(cells[5]) > 0
    plan = [line for line in out.splitlines() if "│ plan " in line][0]
    assert [c.strip() for c in plan.split("│") if c.strip()][1] == "2"


@pytest.mark.slow
def test_unknown_model_costs_nothing_with_one_warning(project):
    proc = project.build(env={"SCENEMAKE_MODEL": "offline:mystery-9"})
    assert proc.stderr.count("no price for model 'mystery-9'") == 1
    calls = project.calls()
    assert len(calls) == 30
    assert all(c["cost_usd"] == 0 and c["model"] == "mystery-9" for c in calls)


@pytest.mark.slow
def test_progress_reporter_counts_tasks_calls_and_cost(project):
    _price(project)
    out = project.build("--reporter", "scenemake").stdout
    spent = sum(c["cost_usd"] for c in project.misses())
    assert "50/50 tasks" in out and "ran 50" in out  # 8 phases x 6 scenes, guard, manuscript
    assert "LLM 30 calls, 0 cache hits" in " ".join(out.split())
    assert f"${spent:.4f}" in out.replace("\n", "")
    out = project.build("--reporter", "scenemake").stdout  # the stamp's fast path
    assert "1/1 tasks  ran 1  up-to-date 0" in out
    (project.root / "workspace" / ".scenemake" / "books" / "example.stamp.json").unlink()
    out = project.build("--reporter", "scenemake").stdout  # checked against the records
    assert "1/1 tasks  ran 1  up-to-date 0" in out
    assert "all 49 task(s) match their build records" in " ".join(out.split())
    out = project.build("--reporter", "scenemake", "guard", *PHASES, "manuscript").stdout
    assert "50/50 tasks  ran 1  up-to-date 49" in out  # every task checked by doit


@pytest.mark.slow
def test_estimate_for_a_model_never_used_counts_the_prompts(project):
    _price(project)
    out = project.build("estimate").stdout
    assert project.calls() == []
    total = [line for line in out.splitlines() if "total" in line][0]
    cells = [c.strip() for c in total.split("│") if c.strip()]
    assert "?" not in total and int(cells[3]) == 30
    estimated_tokens, estimated_cost = int(cells[4]), float(cells[5])
    assert estimated_cost > 0
    assert "upper bound" in " ".join(out.split())
    project.build()
    paid = project.misses()
    assert sum(c["tokens_in"] + c["tokens_out"] for c in paid) <= estimated_tokens
    assert sum(c["cost_usd"] for c in paid) <= estimated_cost


def test_estimate_says_why_the_stale_tasks_run(built):
    built.edit_json("workspace/books/example/outline.json",
                    lambda d: d["chapters"][0]["scenes"][0].update(brief="Mara waits alone."))
    out = " ".join(built.build("estimate").stdout.split())
    assert "why they run" in out
    assert "plan:ch001_sc001: outline.json: scene ch001_sc001 `brief` changed" in out


def test_cost_before_any_call_says_there_were_none(project):
    proc = project.build("cost")
    assert proc.stdout == ("cost: no LLM calls of book 'example' yet in "
                           "workspace/.scenemake/llm_calls.jsonl; a build (doit) makes them\n")
