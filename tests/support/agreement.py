"""Does a plain ``doit`` decide what doit checking every task itself decides?

``twin_runs`` copies a project (every file with its mtime, the build DB, the stamp) and
runs a plain ``doit`` on one copy and doit with every default task named on the other: the
second is not a plain run, so it takes no shortcut (no stamp, no check of the records, no
reach) and doit checks every task itself. ``Outcome`` is what a user can observe of a run;
the two must be equal: exit code, tasks run, requests paid, files on disk, refusals.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from support.project import PHASES, Project, built_files, executed

# every default task named: a run that is not plain, so doit checks every task itself
DOIT_CHECKS = ("guard", *PHASES, "manuscript")
STAMP = "workspace/.scenemake/books/example.stamp.json"
SCENES = ("ch001_sc001", "ch001_sc002", "ch001_sc003", "ch002_sc001", "ch002_sc002",
          "ch002_sc003")
OUTLINE = "workspace/books/example/outline.json"
BOOK = "workspace/books/example/book.json"
STATE = "workspace/books/example/state.json"


def clone(src: Project, dst: Path) -> Project:
    """A copy of ``src`` at ``dst``: same files, same mtimes (the build DB with its WAL)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src.root, dst, symlinks=True)  # copy2: mtimes to the nanosecond
    return Project(dst)


def _paths(out: str, header: str) -> list[str]:
    """The files a refusal report lists under ``header`` (``  PATH ...`` lines)."""
    lines = out.splitlines()
    found: list[str] = []
    for i, line in enumerate(lines):
        if header in line:
            for item in lines[i + 1:]:
                m = re.match(r"\s+(\S+?)(?: \(|: | ->)", item)
                if not m:
                    break
                found.append(m.group(1))
    return sorted(found)


@dataclass(frozen=True)
class Outcome:
    """What a user observes of one run."""

    code: int
    ran: frozenset[str]
    paid: tuple[str, ...]
    files: dict
    edits: tuple[str, ...]
    prompt_changes: tuple[str, ...]
    traceback: bool

    @classmethod
    def of(cls, project: Project, proc, calls_before: int) -> Outcome:
        out = proc.stdout + proc.stderr
        return cls(
            code=proc.returncode,
            ran=frozenset(t for t in executed(proc) if t not in ("guard", "_stamp")),
            paid=tuple(sorted(c["request_hash"] for c in project.misses(calls_before))),
            files=built_files(project.root),
            edits=tuple(_paths(out, "edited by hand:")),
            prompt_changes=tuple(_paths(out, "prompt template(s) changed")),
            traceback="Traceback" in out)


def _start(project: Project, args, env: dict | None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def run_both(plain: Project, full: Project, env: dict | None = None,
             args: tuple[str, ...] = ()) -> tuple[Outcome, Outcome, object, object]:
    """A plain ``doit`` on ``plain``, doit checking every task on ``full`` (at once: two
    copies, two processes)."""
    n_plain, n_full = len(plain.calls()), len(full.calls())
    started = [_start(plain, args, env), _start(full, (*DOIT_CHECKS, *args), env)]
    done = []
    for proc in started:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    p, f = done
    return Outcome.of(plain, p, n_plain), Outcome.of(full, f, n_full), p, f


def differences(a: Outcome, b: Outcome) -> list[str]:
    """Human-readable differences between two outcomes ([] when they agree)."""
    out = []
    for name in ("code", "ran", "paid", "edits", "prompt_changes", "traceback"):
        if getattr(a, name) != getattr(b, name):
            out.append(f"{name}: plain {getattr(a, name)!r} != full {getattr(b, name)!r}")
    if a.files != b.files:
        keys = sorted(set(a.files) ^ set(b.files)) + sorted(
            k for k in set(a.files) & set(b.files) if a.files[k] != b.files[k])
        out.append(f"files differ: {keys[:8]}")
    return out


def twin_runs(project: Project, where: Path, env: dict | None = None,
              args: tuple[str, ...] = ()) -> tuple[Project, Outcome, object, object]:
    """Copy ``project`` twice under ``where``, run both ways, assert they agree; returns the
    plain copy (the state a user who ran ``doit`` now has), its outcome and both processes."""
    a = clone(project, where / "plain")
    b = clone(project, where / "full")
    oa, ob, pa, pb = run_both(a, b, env, args)
    diff = differences(oa, ob)
    assert not diff, "\n".join(diff) + "\n--- plain:\n" + pa.stdout + pa.stderr + \
        "\n--- full:\n" + pb.stdout + pb.stderr
    return a, oa, pa, pb


def keep_mtime(path: Path):
    """Context: the file's (atime, mtime) put back after the block (as ``touch -r``)."""

    class _Keep:
        def __enter__(self):
            self.st = os.stat(path)

        def __exit__(self, *exc):
            os.utime(path, ns=(self.st.st_atime_ns, self.st.st_mtime_ns))

    return _Keep()
