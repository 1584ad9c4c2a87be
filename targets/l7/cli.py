"""``scenemake-l7`` / ``python -m pipeline.l7``: the L7 scene prompt map runner's command line.

The flags are the spec's. Exit codes: 0 success, 1 gate validation failed,
2 config/runtime/contract error (always one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.core.cli import Cli
from pipeline.l7.session import ENVS, RunConfig
from targets.l7.runner import ERROR, run

DESCRIPTION = """\
Turn the scenes of a session's scenes_v2.json into image prompts: scene context
packaging, N prompt candidates per scene, weighted scoring against the score spec,
selection, a continuity audit of adjacent scenes, selective revision, and the export of
prompt_map_pack.json and the updated scenes_v2.json, between a Gate-In and a Gate-Out.
Every stage is a doit task keyed by its inputs: a rerun redoes only what changed."""

EPILOG = """\
outputs (in --out-dir, replaced as a whole): gate_in_report.json, candidates_prompt.json,
evaluation_report_prompt.json, selection_trace_prompt.json, continuity_audit_prompt.json,
prompt_map_pack.json, scenes_v2.json, runtime_log_l7.json, session_output.json,
gate_out_report.json

exit codes: 0 success, 1 gate validation failed (the report says why),
2 config/runtime/contract error (one line on stderr)

model: the objective's "model" settings; SCENEMAKE_MODEL=openai:<model> and
SCENEMAKE_BASE_URL=<url> switch to an OpenAI-compatible server."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other refusal
        self.exit(ERROR, f"scenemake-l7: error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    """The argument parser (every flag of the spec, explained)."""
    p = _Parser(prog="scenemake-l7", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--session-input", required=True, metavar="PATH",
                   help="session input JSON (session_id, objective_id, title)")
    p.add_argument("--session-objective", required=True, metavar="PATH",
                   help="session objective JSON (style preset, score_spec_ref, candidates per "
                        "scene, model); its session_id and objective_id must equal the "
                        "session input's")
    p.add_argument("--scenes-v2", required=True, metavar="PATH",
                   help="scenes_v2.json from the previous layer (L6), or from an earlier L7 "
                        "run; it must belong to this session unless --allow-cross-session")
    p.add_argument("--out-dir", required=True, metavar="DIR",
                   help="folder for the output set; it is replaced as a whole and may hold "
                        "only L7 outputs")
    p.add_argument("--allow-cross-session", action="store_true",
                   help="accept a scenes_v2.json of another session (recovery rerun); "
                        "relaxes nothing else")
    p.add_argument("--score-spec", metavar="PATH",
                   help="score spec JSON; default and normally equal to the objective's "
                        "score_spec_ref")
    p.add_argument("--allow-score-spec-override", action="store_true",
                   help="allow a --score-spec other than score_spec_ref; needs "
                        "--override-reason, refused with --pipeline-env prod; recorded in "
                        "the outputs")
    p.add_argument("--override-reason", metavar="TEXT",
                   help="why the score spec is overridden (required with "
                        "--allow-score-spec-override)")
    p.add_argument("--pipeline-env", choices=ENVS, default="prod",
                   help="where this run counts: dev, staging or prod (default: prod, where "
                        "no score spec override is allowed)")
    p.add_argument("--scene-id", action="append", default=[], metavar="SCENE_ID",
                   help="regenerate and rescore only this scene (repeatable); needs "
                        "--base-prompt-map-pack, from which every other scene is merged "
                        "unchanged")
    p.add_argument("--base-prompt-map-pack", metavar="PATH",
                   help="prompt_map_pack.json of an earlier run of this session, objective "
                        "and style preset: the base of a --scene-id rerun")
    return p


def config(args: argparse.Namespace) -> RunConfig:
    """The run configuration of parsed arguments."""
    return RunConfig(
        session_input=args.session_input, session_objective=args.session_objective,
        scenes_v2=args.scenes_v2, out_dir=args.out_dir, score_spec=args.score_spec,
        allow_cross_session=args.allow_cross_session,
        allow_score_spec_override=args.allow_score_spec_override,
        override_reason=args.override_reason, pipeline_env=args.pipeline_env,
        scene_ids=tuple(dict.fromkeys(args.scene_id)),
        base_prompt_map_pack=args.base_prompt_map_pack)


# the spec has three codes: a bug is a runtime error (2), its traceback kept in a file
CLI = Cli(prefix="scenemake-l7: ", bug=ERROR,
          interrupted_message="scenemake-l7: interrupted: finished stages are kept; rerun the "
                              "same command to resume")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scenemake-l7``; returns the exit code."""
    return CLI.main(lambda: config(parser().parse_args(sys.argv[1:] if argv is None else argv)),
                    run, traceback_dir=lambda cfg: Path(cfg.state_dir) / "l7")
