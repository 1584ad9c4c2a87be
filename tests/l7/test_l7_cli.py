"""The L7 runner's command line: flags, policies (each rule, pass and fail), bad input.

Every refusal is exit code 2 with one line on stderr that names the rule or the file,
field and fix, and no LLM call is made and no output is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.l7 import INPUT, OBJECTIVE, OUT, OUTPUTS, SCENES, SPEC, clean_env, one_line_error
from support.parts import require

FLAGS = ["--session-input", "--session-objective", "--scenes-v2", "--out-dir",
         "--allow-cross-session", "--score-spec", "--allow-score-spec-override",
         "--override-reason", "--pipeline-env", "--scene-id", "--base-prompt-map-pack"]


def test_help_explains_every_flag_and_the_exit_codes(l7):
    proc = l7.cli("--help", base=False)
    assert proc.returncode == 0
    for flag in FLAGS:
        assert flag in proc.stdout
    assert "dev,staging,prod" in proc.stdout
    assert "0 success, 1 gate validation failed" in proc.stdout


def test_installed_console_command_is_the_same_cli(l7):
    beside = Path(sys.executable).parent / "scenemake-l7"  # the venv's, even off PATH
    exe = str(beside) if beside.exists() else shutil.which("scenemake-l7")
    require(exe is not None, "the scenemake-l7 console script", "pip install -e . installs it")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, env=clean_env())
    assert proc.returncode == 0 and "--base-prompt-map-pack" in proc.stdout


@pytest.mark.parametrize("args, base, needle", [
    ([], False, "the following arguments are required"),
    (["--pipeline-env", "qa"], True, "invalid choice: 'qa'"),
    (["--no-such-flag"], True, "unrecognized arguments"),
])
def test_bad_command_line_is_exit_2_in_one_line(l7, args, base, needle):
    one_line_error(l7.cli(*args, base=base), 2, needle)


# -- policy: session_input and session_objective agree, always ------------------------
@pytest.mark.parametrize("field", ["session_id", "objective_id"])
def test_session_ids_must_match(l7, field):
    l7.edit_json(OBJECTIVE, lambda d: d.update({field: "other_" + d[field]}))
    one_line_error(l7.cli(), 2, "policy 'session_ids_match'", f"session_objective.{field}")
    assert l7.calls() == [] and not l7.path(OUT).exists()


def test_allow_cross_session_does_not_relax_session_ids(l7):
    l7.edit_json(OBJECTIVE, lambda d: d.update(session_id="sess_other"))
    one_line_error(l7.cli("--allow-cross-session"), 2, "policy 'session_ids_match'")


# -- policy: --score-spec equals score_spec_ref unless overridden, never in prod --------
def alt_spec(project) -> str:
    """A copy of the example score spec under another name."""
    shutil.copy(project.path(SPEC), project.path("score_specs/alt.json"))
    return "score_specs/alt.json"


@pytest.mark.slow
def test_score_spec_same_file_spelled_differently_is_no_override(l7_built):
    proc = l7_built.cli("--score-spec", "./" + SPEC)
    assert proc.returncode == 0, proc.out
    assert l7_built.out("gate_in_report.json")["policy"]["score_spec"]["override"] is False


def test_other_score_spec_is_refused_without_override(l7):
    alt = alt_spec(l7)
    one_line_error(l7.cli("--score-spec", alt), 2, "policy 'score_spec_ref'", alt,
                   "--allow-score-spec-override")
    assert l7.calls() == []


def test_override_needs_a_reason(l7):
    alt = alt_spec(l7)
    args = ["--score-spec", alt, "--allow-score-spec-override", "--pipeline-env", "dev"]
    one_line_error(l7.cli(*args), 2, "policy 'override_reason_required'")
    one_line_error(l7.cli(*args, "--override-reason", "   "), 2,
                   "policy 'override_reason_required'")


def test_override_is_never_allowed_in_prod(l7):
    alt = alt_spec(l7)
    args = ["--score-spec", alt, "--allow-score-spec-override", "--override-reason", "x"]
    one_line_error(l7.cli(*args), 2, "policy 'score_spec_override_prod'")  # prod: the default
    one_line_error(l7.cli(*args, "--pipeline-env", "prod"), 2,
                   "policy 'score_spec_override_prod'")


def test_reason_without_override_flag_is_refused(l7):
    one_line_error(l7.cli("--override-reason", "why not"), 2,
                   "policy 'override_reason_without_override'")


@pytest.mark.parametrize("env", ["dev", "staging"])
def test_override_with_reason_outside_prod_is_recorded_in_the_outputs(l7_built, env):
    alt = alt_spec(l7_built)
    proc = l7_built.cli("--score-spec", alt, "--allow-score-spec-override",
                        "--override-reason", "recovery rerun after upstream failure",
                        "--pipeline-env", env)
    assert proc.returncode == 0, proc.out
    for doc, where in (("gate_in_report.json", ("policy", "score_spec")),
                       ("session_output.json", ("policy", "score_spec")),
                       ("prompt_map_pack.json", ("score_spec",)),
                       ("evaluation_report_prompt.json", ("score_spec",))):
        node = l7_built.out(doc)
        for key in where:
            node = node[key]
        assert node["override"] is True, doc
        assert node["override_reason"] == "recovery rerun after upstream failure", doc
        assert node["path"] == alt and node["ref"] == SPEC, doc
    assert l7_built.out("prompt_map_pack.json")["pipeline_env"] == env


# -- policy: scenes_v2 of another session only with --allow-cross-session ---------------
def test_scenes_v2_of_another_session_is_refused(l7):
    l7.edit_json(SCENES, lambda d: d.update(session_id="sess_upstream_009"))
    one_line_error(l7.cli(), 2, "policy 'cross_session_scenes_v2'", "sess_upstream_009",
                   "--allow-cross-session")
    assert l7.calls() == []


def test_allow_cross_session_reuses_scenes_v2_and_records_it(l7_built):
    l7_built.edit_json(SCENES, lambda d: d.update(session_id="sess_upstream_009"))
    n = len(l7_built.calls())
    proc = l7_built.cli("--allow-cross-session")
    assert proc.returncode == 0, proc.out
    cross = l7_built.out("gate_in_report.json")["policy"]["cross_session"]
    assert cross == {"allowed": True, "used": True, "scenes_v2_session_id": "sess_upstream_009"}
    v2 = l7_built.out("scenes_v2.json")
    assert v2["session_id"] == "sess_harbour_001"
    assert v2["l7"]["source_session_id"] == "sess_upstream_009"
    # the scenes are the same: nothing is generated again
    assert l7_built.misses(n) == []


# -- policy: partial rerun flags --------------------------------------------------------
def test_scene_id_requires_base_pack(l7):
    one_line_error(l7.cli("--scene-id", "scene_003"), 2,
                   "policy 'scene_id_requires_base_pack'")


def test_base_pack_requires_scene_id(l7_built):
    one_line_error(l7_built.cli("--base-prompt-map-pack", f"{OUT}/prompt_map_pack.json"), 2,
                   "policy 'base_pack_requires_scene_id'")


def test_unknown_scene_id_is_an_error(l7_built):
    proc = l7_built.cli("--scene-id", "scene_042", "--base-prompt-map-pack",
                        f"{OUT}/prompt_map_pack.json")
    one_line_error(proc, 2, "policy 'unknown_scene_id'", "scene_042", "scene_001")


@pytest.mark.parametrize("edit, needle", [
    (lambda p: p.update(session_id="sess_other"), "session_id 'sess_other'"),
    (lambda p: p.update(objective_id="obj_other"), "objective_id 'obj_other'"),
    (lambda p: p["style_preset"].update(id="watercolour"), "style_preset 'watercolour'"),
    (lambda p: p["style_preset"]["keywords"].append("neon"), "(definition)"),
])
def test_base_pack_must_match_session_objective_and_style(l7_built, edit, needle):
    pack = f"{OUT}/prompt_map_pack.json"
    l7_built.edit_json(pack, edit)
    proc = l7_built.cli("--scene-id", "scene_003", "--base-prompt-map-pack", pack,
                        "--out-dir", "workspace/l7/l7_rerun_output")
    one_line_error(proc, 2, "policy 'base_pack_identity'", needle)


def test_allow_cross_session_does_not_cover_the_base_pack(l7_built):
    pack = f"{OUT}/prompt_map_pack.json"
    l7_built.edit_json(pack, lambda p: p.update(session_id="sess_other"))
    proc = l7_built.cli("--allow-cross-session", "--scene-id", "scene_003",
                        "--base-prompt-map-pack", pack)
    one_line_error(proc, 2, "policy 'base_pack_identity'")


def test_base_pack_must_cover_the_other_scenes(l7_built):
    pack = f"{OUT}/prompt_map_pack.json"
    l7_built.edit_json(pack, lambda p: p.update(scenes=p["scenes"][:-1]))
    proc = l7_built.cli("--scene-id", "scene_003", "--base-prompt-map-pack", pack)
    one_line_error(proc, 2, "policy 'base_pack_coverage'", "scene_008")


# -- bad input --------------------------------------------------------------------------
def _drop_scenes(d):
    d["scenes"] = []


def _dup_scene(d):
    d["scenes"][3]["scene_id"] = d["scenes"][2]["scene_id"]


@pytest.mark.parametrize("breakage, needles", [
    (lambda p: p.path(SCENES).unlink(), ["scenes_v2.json", "scenes_v2 not found"]),
    (lambda p: p.path(INPUT).write_text("{"), ["sample_session_input_l7.json",
                                              "invalid JSON at line 1"]),
    (lambda p: p.edit_json(SCENES, lambda d: d["scenes"][2]["setting"].update(
        time_of_day="teatime")), ["scenes_v2.json", "schema violation at "
                                  "$.scenes[2].setting.time_of_day", "'teatime'",
                                  "l7_scenes_v2.json"]),
    (lambda p: p.edit_json(SCENES, _drop_scenes), ["schema violation at $.scenes",
                                                   "should be non-empty"]),
    (lambda p: p.edit_json(SCENES, _dup_scene), ["duplicate scene id 'scene_003'",
                                                 "field 'scenes[3].scene_id'"]),
    (lambda p: p.edit_json(OBJECTIVE, lambda d: d.pop("score_spec_ref")),
     ["schema violation at $", "'score_spec_ref' is a required property"]),
    (lambda p: p.edit_json(SPEC, lambda d: d["criteria"][0].update(weight=0)),
     ["score_spec_prompt.json", "$.criteria[0].weight"]),
    (lambda p: p.edit_json(SPEC, lambda d: d["criteria"][0]["params"].update(min_wrds=3)),
     ["field 'criteria[0].params.min_wrds'"]),
    (lambda p: p.edit_json(SPEC, lambda d: d["criteria"][0].pop("rule")),
     ["field 'criteria.0'", "needs 'rule'"]),
    (lambda p: p.edit_json(OBJECTIVE, lambda d: d["style_preset"].update(
        core_keywords=["neon glow"])), ["core keyword 'neon glow'"]),
    (lambda p: p.path(OUT).write_text("not a folder"), ["--out-dir is a file"]),
    (lambda p: (p.path(OUT).mkdir(parents=True), p.path(f"{OUT}/notes.txt").write_text("x")),
     ["holds files that are not L7 outputs (notes.txt)"]),
])
def test_bad_input_is_exit_2_with_one_line(l7, breakage, needles):
    breakage(l7)
    one_line_error(l7.cli(), 2, *needles)
    assert l7.calls() == []


def test_out_dir_holding_an_input_is_refused(l7_built):
    before = l7_built.snapshot()
    proc = l7_built.cli("--scenes-v2", f"{OUT}/scenes_v2.json", "--scene-id", "scene_003",
                        "--base-prompt-map-pack", f"{OUT}/prompt_map_pack.json")
    one_line_error(proc, 2, "--out-dir holds", "an input of this run")
    assert l7_built.snapshot() == before


def test_objective_pointing_at_a_missing_score_spec(l7):
    """Issue 25 item 6: the line names where the path came from (the objective's field),
    not the command line, which named no score spec."""
    l7.edit_json(OBJECTIVE, lambda d: d.update(score_spec_ref="score_specs/nope.json"))
    line = one_line_error(l7.cli(), 2, "score_specs/nope.json", "score spec not found",
                          "field 'score_spec_ref' of " + OBJECTIVE)
    assert "command line" not in line
    flag = one_line_error(l7.cli("--score-spec", "score_specs/nope.json"), 2,
                          "score spec not found", "the path given on the command line")
    assert "score_spec_ref" not in flag


def test_bad_model_setting_in_environment_is_one_line(l7):
    proc = l7.cli(env={"SCENEMAKE_MODEL": "gpt-4o"})
    one_line_error(proc, 2, "SCENEMAKE_MODEL=gpt-4o is not PROVIDER:MODEL")


def test_python_dash_m_and_main_agree(l7):
    # main() is what the console command calls; it returns the exit code
    code = subprocess.run([sys.executable, "-c", "import sys; from targets.l7.cli import main;"
                           " sys.exit(main(['--scene-id', 'x', '--session-input', 'a', "
                           "'--session-objective', 'b', '--scenes-v2', 'c', '--out-dir', 'd']))"],
                          cwd=l7.root, capture_output=True, text=True, env=clean_env())
    assert code.returncode == 2 and "session input not found" in code.stderr


def test_nothing_is_written_to_out_dir_on_a_refusal(l7_built):
    before = l7_built.snapshot()
    l7_built.edit_json(OBJECTIVE, lambda d: d.update(objective_id="obj_other"))
    assert l7_built.cli().returncode == 2
    assert l7_built.snapshot() == before
    assert json.loads(before["session_output.json"])["status"] == "success"
    assert sorted(before) == sorted(OUTPUTS)
