"""A plain ``doit`` decides exactly what doit checking every task decides (issue #23).

Seeded random sequences of what users do - edit a brief, book.json, state.json, a template
override; add, remove, reorder scenes; hand edits, deleted artifacts, ``touch``, a same-size
edit with the mtime put back; named runs, ``forget``, ``rerun-from``, ``restore``,
``allow_prompt_change``, ``force_resume``, ``-n 2``; ``kill -9`` at a write; an edit while a
run is on; a model switch - are applied to a project; after half the steps the stamp is
removed, so that the plain ``doit`` checks the records (their plan rows). After each step
the project is copied twice (mtimes and build DB included) and a plain ``doit`` on one copy
must agree with doit checking every task on the other: exit code, tasks run, requests paid,
every file, every refusal (tests/support/agreement.py); every plan row of the build DB must
say what its record says. A failure prints its seed and steps.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.agreement import BOOK, OUTLINE, STAMP, STATE, clone, keep_mtime, twin_runs
from support.project import PHASES, Project

from pipeline.core.builddb import plan_of

DB = "workspace/.scenemake/books/example.sqlite"
ARTIFACTS = ("plan/scene_card.json", "write/prose.md", "repair/prose.md",
             "continuity_pack/pack.json", "state_repair/state_patch.json",
             "commit/post_state.json")


class Steps:
    """The user actions, each applying itself to ``project`` with this sequence's random."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.env: dict[str, str] = {}

    # -- helpers ---------------------------------------------------------------------
    def _scenes(self, project: Project) -> list[str]:
        data = json.loads((project.root / OUTLINE).read_text())
        return [s["id"] for c in data["chapters"] for s in c["scenes"]]

    def _built(self, project: Project) -> list[Path]:
        return sorted(p for p in (project.draft / "scenes").rglob("*")
                      if p.is_file() and "registries" not in p.parts) \
            if (project.draft / "scenes").exists() else []

    def _doit(self, project: Project, *args: str, env: dict | None = None):
        return project.doit(*args, env={**self.env, **(env or {})}, timeout=300)

    # -- what users do ---------------------------------------------------------------
    def edit_brief(self, project: Project) -> str:
        word = self.rng.choice(["fog", "gulls", "a lantern", "the tide", "rust", "rain"])

        def edit(d):
            scenes = [s for c in d["chapters"] for s in c["scenes"]]
            scene = self.rng.choice(scenes)
            scene["brief"] = scene["brief"].rstrip(".") + f", with {word}."
        project.edit_json(OUTLINE, edit)
        return f"edit a brief ({word})"

    def edit_book(self, project: Project) -> str:
        tone = self.rng.choice(["spare", "warm", "wry", "grave"])
        project.edit_json(BOOK, lambda d: d["style"].update(tone=tone))
        return f"book.json tone {tone}"

    def edit_state(self, project: Project) -> str:
        mood = self.rng.choice(["weary", "hopeful", "soaked"])
        project.edit_json(STATE, lambda d: d["characters"]["mara"].update(condition=mood))
        return f"state.json condition {mood}"

    def edit_override(self, project: Project) -> str:
        folder = project.book / "templates"
        folder.mkdir(exist_ok=True)
        default = (Path(__file__).resolve().parents[2] / "pipeline/book/templates/write.j2")
        extra = self.rng.choice(["Keep it short.", "Use the senses.", "End on an image."])
        (folder / "write.j2").write_text(default.read_text() + f"\n{extra}\n")
        return f"override write.j2 ({extra})"

    def reorder(self, project: Project) -> str:
        def edit(d):
            scenes = d["chapters"][0]["scenes"]
            if len(scenes) > 2:
                scenes[1], scenes[2] = scenes[2], scenes[1]
        project.edit_json(OUTLINE, edit)
        return "swap two scenes of chapter 1"

    def remove_scene(self, project: Project) -> str:
        def edit(d):
            scenes = d["chapters"][0]["scenes"]
            if len(scenes) > 1:
                scenes.pop()
        project.edit_json(OUTLINE, edit)
        return "remove the last scene of chapter 1"

    def add_scene(self, project: Project) -> str:
        def edit(d):
            scenes = d["chapters"][0]["scenes"]
            taken = {s["id"] for s in scenes}
            n = next(i for i in range(2, 99) if f"ch001_sc{i:03d}" not in taken)
            scenes.append({**scenes[0], "id": f"ch001_sc{n:03d}",
                           "title": f"Scene {n}", "brief": "Mara waits for the ferry."})
        project.edit_json(OUTLINE, edit)
        return "add a scene to chapter 1"

    def hand_edit(self, project: Project) -> str:
        proses = [p for p in self._built(project) if p.suffix == ".md"] + [
            p for p in [project.draft / "manuscript.md"] if p.exists()]
        if not proses:
            return "hand edit (nothing built)"
        path = self.rng.choice(proses)
        path.write_text(path.read_text() + "A line added by hand.\n")
        return f"hand edit {path.relative_to(project.draft)}"

    def delete_artifact(self, project: Project) -> str:
        files = self._built(project)
        if not files:
            return "delete (nothing built)"
        path = self.rng.choice(files)
        path.unlink()
        return f"delete {path.relative_to(project.draft)}"

    def touch(self, project: Project) -> str:
        files = self._built(project) + [project.root / OUTLINE, project.root / STATE]
        path = self.rng.choice(files)
        os.utime(path, ns=(time.time_ns(), time.time_ns()))
        return f"touch {path.name}"

    def same_size_edit(self, project: Project) -> str:
        path = project.root / OUTLINE
        text = path.read_text()
        swapped = text.replace("Mara", "MARA", 1) if "Mara" in text else \
            text.replace("MARA", "Mara", 1)
        with keep_mtime(path):
            path.write_text(swapped)
        return "same-size outline edit, mtime put back"

    def named_run(self, project: Project) -> str:
        sid = self.rng.choice(self._scenes(project))
        phase = self.rng.choice(PHASES)
        proc = self._doit(project, f"{phase}:{sid}")
        return f"doit {phase}:{sid} -> {proc.returncode}"

    def forget(self, project: Project) -> str:
        sid = self.rng.choice(self._scenes(project))
        proc = self._doit(project, "forget", f"lint:{sid}")
        return f"doit forget lint:{sid} -> {proc.returncode}"

    def rerun_from(self, project: Project) -> str:
        sid = self.rng.choice(self._scenes(project))
        proc = self._doit(project, "rerun-from", f"repair:{sid}")
        return f"doit rerun-from repair:{sid} -> {proc.returncode}"

    def restore(self, project: Project) -> str:
        sid = self.rng.choice(self._scenes(project))
        proc = self._doit(project, "restore", f"write:{sid}", "1")
        return f"doit restore write:{sid} 1 -> {proc.returncode}"

    def allow_prompt_change(self, project: Project) -> str:
        proc = self._doit(project, "allow_prompt_change=1", "reason=tried")
        return f"doit allow_prompt_change=1 -> {proc.returncode}"

    def force_resume(self, project: Project) -> str:
        proc = self._doit(project, "force_resume=1")
        return f"doit force_resume=1 -> {proc.returncode}"

    def parallel(self, project: Project) -> str:
        proc = self._doit(project, "-n", "2", "-P", "thread")
        return f"doit -n 2 -P thread -> {proc.returncode}"

    def kill(self, project: Project) -> str:
        self.edit_brief(project)
        sid = self.rng.choice(self._scenes(project))
        proc = self._doit(project, env={"SCENEMAKE_KILL_AT": f"written@/{sid}/:1"})
        return f"doit killed at a write of {sid} -> {proc.returncode}"

    def edit_during_run(self, project: Project) -> str:
        self.edit_brief(project)
        run = subprocess.Popen([sys.executable, "-m", "doit"], cwd=project.root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, **self.env,
                                    "SCENEMAKE_OFFLINE_LATENCY_MS": "60"})
        time.sleep(self.rng.uniform(0.4, 1.2))
        what = self.rng.choice([self.edit_brief, self.edit_override, self.edit_state])(project)
        try:
            run.wait(timeout=300)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGKILL)
            run.wait()
        return f"during a run: {what}"

    def model_switch(self, project: Project) -> str:
        if self.env.get("SCENEMAKE_MODEL"):
            self.env.pop("SCENEMAKE_MODEL")
        else:
            self.env["SCENEMAKE_MODEL"] = "offline:offline-2"
        return f"model {self.env.get('SCENEMAKE_MODEL', 'as in book.json')}"

    ALL = ("edit_brief", "edit_book", "edit_state", "edit_override", "reorder", "remove_scene",
           "add_scene", "hand_edit", "delete_artifact", "touch", "same_size_edit", "named_run",
           "forget", "rerun_from", "restore", "allow_prompt_change", "force_resume",
           "parallel", "kill", "edit_during_run", "model_switch")


def _plan_rows_follow(project: Project) -> None:
    """Every plan row of the build DB is what its record says (or empty: read whole)."""
    with sqlite3.connect(project.root / DB) as conn:
        rows = conn.execute("select task_id, task_data, plan from doit").fetchall()
    stale = [task for task, data, plan in rows if plan is not None and plan != plan_of(data)]
    assert not stale, f"plan rows that do not say what their records say: {stale}"


def run_sequence(built: Project, where: Path, seed: int, steps: int,
                 distinct: bool = False) -> None:
    """Apply ``steps`` random actions to a copy of ``built`` (``distinct``: no action twice);
    after each, a plain doit and doit's own checks must agree."""
    rng = random.Random(seed)
    actions = Steps(rng)
    project = clone(built, where / "start")
    done: list[str] = []
    names = rng.sample(Steps.ALL, steps) if distinct else \
        [rng.choice(Steps.ALL) for _ in range(steps)]
    for i, name in enumerate(names):
        done.append(getattr(actions, name)(project))
        if rng.random() < 0.5:  # no index: the plain doit checks the records (plan rows)
            (project.root / STAMP).unlink(missing_ok=True)
            done[-1] += " (index removed)"
        try:
            plain, _, _, _ = twin_runs(project, where / f"step{i}", env=actions.env)
            _plan_rows_follow(plain)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, after steps:\n  " + "\n  ".join(done)
                                 + f"\n{exc}") from None
        shutil.rmtree(project.root)
        project = plain
        shutil.rmtree(where / f"step{i}" / "full")


def test_a_dozen_random_steps_agree(built, tmp_path):
    run_sequence(built, tmp_path, seed=20261207, steps=12, distinct=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 9))
def test_random_sequences_agree(built, tmp_path, seed):
    run_sequence(built, tmp_path, seed=seed, steps=30)
