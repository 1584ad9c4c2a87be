"""``doit ledger SCENE`` prints a table; ``--json`` keeps the ledger file's JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.project import Project

SID = "ch001_sc001"
PHASES = ["plan", "preflight", "continuity_pack", "write", "repair", "state_repair", "lint",
          "commit"]


def _rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in PHASES}


def test_table_has_a_row_per_phase_with_its_numbers(built: Project):
    out = built.build("ledger", SID).stdout
    header = out.splitlines()[1].split()
    assert header[:7] == ["phase", "status", "when", "attempt", "cache", "tokens", "cost"]
    rows = _rows(out)
    assert list(rows) == PHASES
    ledger = built.ledger(SID)
    write = ledger["phases"]["write"]
    llm = write["llm"]
    assert rows["write"][1] == "success"
    assert f"{llm['tokens_in']}+{llm['tokens_out']}" in rows["write"]
    assert llm["cache"] in rows["write"] and f"${llm['cost_usd']:.4f}" in rows["write"]
    # lint asks no model unless an error needs a repair round: no cache, tokens, cost
    assert rows["lint"][4:] == ["0", "-", "-", "-"]
    assert rows["commit"][4:] == ["-", "-", "-", "-"]  # plain code: no attempt either
    t = ledger["totals"]
    assert f"total: {t['llm_phases']} LLM phase(s), {t['cache_hits']} from the cache" in out
    assert not out.lstrip().startswith("{")


@pytest.mark.slow
def test_prompt_change_and_its_reason_are_in_the_row(built: Project):
    override = built.book / "templates" / "repair.j2"
    override.parent.mkdir(exist_ok=True)
    override.write_text((Path(__file__).resolve().parents[2] / "pipeline" / "book" / "templates"
                         / "repair.j2").read_text() + "\nBe brief.\n")
    built.build("allow_prompt_change=1", "reason=shorter repairs")
    rows = _rows(built.build("ledger", SID).stdout)
    entry = built.ledger(SID)["phases"]["repair"]
    line = " ".join(rows["repair"])
    assert (f"{entry['prompt_hash_prev'][:8]} -> {entry['prompt_hash_new'][:8]}: "
            "shorter repairs") in line
    assert "->" not in " ".join(rows["write"])


def test_json_keeps_the_ledger_file(built: Project):
    proc = built.build("ledger", "--json", SID)
    assert json.loads(proc.stdout) == built.ledger(SID)


def test_a_scene_not_built_yet_shows_not_run(project: Project):
    project.build("plan:" + SID)
    rows = _rows(project.build("ledger", SID).stdout)
    assert rows["plan"][1] == "success" and rows["write"][1:3] == ["not", "run"]
