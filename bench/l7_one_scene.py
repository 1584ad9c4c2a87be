"""Tasks an L7 run reruns after one scene of a long session is edited (issue #14).

Usage::

    python bench/l7_one_scene.py [--scenes 100] [--workdir DIR] [--code DIR]

Copies the example session (``workspace/l7``, ``score_specs/``, ``dodo.py``) to
``DIR``, grows its ``scenes_v2.json`` to ``--scenes`` scenes (the example's eight, cycled
under new ids), runs ``python -m pipeline.l7`` once with the offline stand-in, edits the
action of the middle scene, runs it again and prints the tasks doit ran (its ``.  NAME``
lines) and the LLM calls made. ``--code DIR`` puts a copy of the repo first on
``PYTHONPATH`` (another commit: ``git archive COMMIT pipeline targets dodo.py | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENES = "workspace/l7/l6_run_output/scenes_v2.json"
FLAGS = ["--session-input", "workspace/l7/sample_session_input_l7.json",
         "--session-objective", "workspace/l7/sample_session_objective_l7_prompt_map.json",
         "--scenes-v2", SCENES, "--out-dir", "workspace/l7/l7_run_output"]


def run(project: Path, env: dict[str, str]) -> list[str]:
    """One L7 run; returns the tasks doit ran."""
    proc = subprocess.run([sys.executable, "-m", "pipeline.l7", *FLAGS], cwd=project, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise SystemExit(f"L7 run failed ({proc.returncode}):\n{tail}")
    return [line[3:].strip() for line in proc.stdout.splitlines() if line.startswith(".  ")]


def calls(project: Path) -> int:
    log = project / "workspace" / ".scenemake" / "llm_calls.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/scenemake-l7-one-scene"))
    ap.add_argument("--code", type=Path, help="put this repo copy first on PYTHONPATH")
    args = ap.parse_args(argv)
    project = args.workdir / "project"
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    shutil.copy((args.code or REPO) / "dodo.py", project / "dodo.py")
    shutil.copytree(REPO / "score_specs", project / "score_specs")
    shutil.copytree(REPO / "workspace" / "l7", project / "workspace" / "l7",
                    ignore=shutil.ignore_patterns("l7_run_output", "l7_rerun_output"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENEMAKE_")}
    if args.code:
        env["PYTHONPATH"] = str(args.code.resolve())

    path = project / SCENES
    data = json.loads(path.read_text())
    base = data["scenes"]
    data["scenes"] = [{**json.loads(json.dumps(base[i % len(base)])),
                       "scene_id": f"scene_{i + 1:03d}",
                       "title": f"{base[i % len(base)]['title']} ({i + 1})"}
                      for i in range(args.scenes)]
    path.write_text(json.dumps(data, indent=2))
    first = run(project, env)
    n = calls(project)
    middle = args.scenes // 2
    data["scenes"][middle - 1]["action"] = "Ines drops a rusted key into Tomas's open palm"
    path.write_text(json.dumps(data, indent=2))
    ran = run(project, env)
    per_stage = Counter(t.partition(":")[0] for t in ran)
    print(f"{args.scenes} scenes: first run {len(first)} tasks; after editing scene_{middle:03d}: "
          f"{len(ran)} tasks, {calls(project) - n} LLM calls")
    print("  " + ", ".join(f"{stage} {k}" for stage, k in per_stage.items()))


if __name__ == "__main__":
    main()
