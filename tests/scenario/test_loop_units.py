"""Units of the loops: the coder runner's results, the analyst's score, the repair plan."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.scenario import analyst, coder, repair
from pipeline.scenario.coder import CoderConfig


def _repair_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "it"
    folder.mkdir(parents=True)
    (folder / "repair_prompt.md").write_text("# fix it\n")
    return folder


def _config(code: str, tmp_path: Path, **kw) -> CoderConfig:
    script = tmp_path / "c.py"
    script.write_text(code)
    return CoderConfig(command=[sys.executable, str(script), "{repair_prompt}",
                                "{iteration}"], cwd=str(tmp_path),
                       allowed_paths=["rules/*.json"], **kw)


def test_coder_results(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.json").write_text("{}")
    folder = _repair_dir(tmp_path)
    patch = ("import sys, pathlib\nassert sys.argv[1].endswith('repair_prompt.md')\n"
             "assert sys.argv[2] == '4'\nprint('patching')\n"
             "pathlib.Path('rules/a.json').write_text('{\"x\": 1}')\n")
    r = coder.run(_config(patch, tmp_path), None, folder, 4, [])
    assert r["status"] == "patched" and r["changed_files"] == ["rules/a.json"]
    assert r["stdout_tail"] == "patching\n" and r["exit_code"] == 0
    assert json.loads((folder / coder.RESULT).read_text())["status"] == "patched"
    assert (folder / coder.COMMAND).read_text().endswith("repair_prompt.md 4\n")

    other = _repair_dir(tmp_path / "o")
    r = coder.run(_config("open('elsewhere.txt', 'w').write('x')\n", tmp_path), None, other, 1,
                  [])
    assert r["status"] == "no_change"  # a file it was not allowed to change does not count

    created = _repair_dir(tmp_path / "n")
    r = coder.run(_config("open('rules/b.json', 'w').write('{}')\n", tmp_path), None, created,
                  1, [])
    assert r["status"] == "patched" and r["changed_files"] == ["rules/b.json"]

    failing = _repair_dir(tmp_path / "f")
    r = coder.run(_config("import sys\nprint('no', file=sys.stderr)\nsys.exit(3)\n", tmp_path),
                  None, failing, 1, [])
    assert r["status"] == "failed" and r["exit_code"] == 3 and r["stderr_tail"] == "no\n"

    slow = _repair_dir(tmp_path / "s")
    r = coder.run(_config("import time\ntime.sleep(30)\n", tmp_path, timeout_s=0.5), None,
                  slow, 1, [])
    assert r["status"] == "failed" and r["timed_out"] and "timed out" in r["reason"]

    missing = _repair_dir(tmp_path / "m")
    cfg = CoderConfig(command=[str(tmp_path / "no-such-coder"), "{repair_prompt}"])
    r = coder.run(cfg, None, missing, 1, [])
    assert r["status"] == "failed" and r["exit_code"] is None and "cannot start" in r["reason"]
    dest = coder.archive_attempt(missing)
    assert (dest / coder.RESULT).exists() and coder.result_of(missing) is None


def test_prompt_text_token_and_unknown_tokens(tmp_path):
    folder = _repair_dir(tmp_path)
    cfg = CoderConfig(command=["codex", "exec", "{repair_prompt_text}"])
    assert coder.command_for(cfg, folder, 1) == ["codex", "exec", "# fix it\n"]
    try:
        CoderConfig(command=["x", "{repair_promt}"])
        raise AssertionError("accepted an unknown token")
    except ValueError as exc:
        assert "unknown token {repair_promt}" in str(exc)


def test_score_formula_renormalises_absent_components():
    comps = {"business": {"value": 1.0, "weight": 0.35}, "status": {"value": 0.5,
                                                                    "weight": 0.20}}
    assert analyst.score_of(comps) == round(100 * (0.35 + 0.10) / 0.55, 1)
    comps["truth"] = {"value": 1.0, "weight": 0.30}
    comps["judge"] = {"value": 0.4, "weight": 0.15}
    assert analyst.score_of(comps) == round(100 * (0.35 + 0.10 + 0.30 + 0.06), 1)
    assert analyst.score_of({}) == 0.0


def test_repair_plan_is_bounded_and_keeps_decisions_from_the_coder():
    def target(i, sev, code, rule=None, decision=False):
        return {"target_id": f"RT-{i:02d}", "priority": sev, "code": code, "count": 1,
                "rule": rule, "candidate_files": [], "message": code,
                "suggested_change": {rule: True} if rule else None, "samples": [],
                "requires_user_decision": decision,
                "decision_reason": "why" if decision else None}

    targets = [target(1, "P1", "missing_data_date", "state_data_date"),
               target(2, "P0", "missing_direct_answer", "direct_answer_first"),
               target(3, "P0", "fact_mismatch", decision=True),
               target(4, "P1", "capability_gap"), target(5, "P2", "long_first_line")]
    plan = repair.build_plan(targets, iteration=1, source={"kind": "x", "run_id": "r"},
                             max_targets=2, rerun=["rerun"])
    assert [t["code"] for t in plan["targets"]] == ["missing_direct_answer",
                                                    "missing_data_date"]
    assert [t["code"] for t in plan["deferred_targets"]] == ["capability_gap"]
    assert [t["code"] for t in plan["user_decision_targets"]] == ["fact_mismatch"]
    assert plan["suggested_changes"] == [{"file": "workspace/scenarios/assistant_rules.json",
                                          "set": {"direct_answer_first": True,
                                                  "state_data_date": True}}]
    prompt = repair.render_prompt(plan)
    assert repair.suggested_changes(prompt) == plan["suggested_changes"]
    assert "Waiting for a user decision" in prompt and "Deferred" in prompt
