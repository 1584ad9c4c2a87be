"""No-op ``doit`` on a synthetic book against GNU make on a Makefile of the same graph.

Usage::

    python bench/noop_vs_make.py [--scenes 1000] [--runs 5] [--workdir DIR] [--reuse]
                                 [--code DIR] [--profile FILE.prof]

Steps (all under ``--workdir``, default ``/tmp/scenemake-bench-<scenes>``):

1. ``project/``: ``dodo.py`` + ``workspace/books/synth`` written by ``synth_book.py``
   (with a book override ``templates/system.j2``, so ``hash_count.py`` can reuse it).
2. Full build: ``python -m doit`` in ``project/``, timed once (offline provider).
3. The task graph is read back in-process with doit's own loader (``get_module`` +
   ``load_tasks`` on ``project/dodo.py``): every ``PHASE:SCENE`` task's ``file_dep``,
   ``targets`` and ``task_dep``. ``make/Makefile`` gets one rule per task with the same
   targets (a grouped ``&:`` rule) and the same prerequisites; a ``task_dep`` is an
   order-only prerequisite (it orders, it never makes a task stale), and one on a task
   without targets (``guard``, always run) is a phony ``phony.NAME`` with an empty
   recipe. ``make/`` mirrors the project's relative source files; the recipes
   ``touch`` their targets; one ``make`` builds everything.
   ``make/plain_dodo.py`` is the same graph again as plain doit tasks (doit's default
   backend and md5 checker, ``touch`` actions): the floor that doit itself sets.
4. Timed no-ops, interleaved, ``--runs`` times each after one untimed warm-up:
   ``make -f Makefile -j1``, ``make -q -f Makefile``, plain doit on ``plain_dodo.py``,
   ``python -m doit`` (as a user runs it: the stamp's fast path), the same without the
   stamp (the full path: every task checked against its build record, none loaded), doit
   naming every default task (doit loads and checks each itself), ``python -m doit list``
   (task loading only) and ``python -c "import ..."`` (the interpreter and the modules
   a run imports: the fixed start-up cost). Each doit no-op is checked: no task but
   ``guard`` ran, and the scenemake one made no LLM call.
5. Prints medians (and min/max) and the ratios to ``make -j1`` measured in this run.

``--code DIR`` puts DIR first on ``PYTHONPATH`` (benchmark a snapshot of the repo
instead of the editable install). ``--profile FILE`` also runs
``python -m cProfile -o FILE -m doit`` once and prints the top 25 functions by
cumulative and by internal time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from synth_book import write_book  # noqa: E402

# the book's phases, in pipeline order (pipeline/book/phase_table.py)
PHASES = ("plan", "preflight", "continuity_pack", "write", "repair", "state_repair", "lint",
          "commit")

BOOK = "synth"
# Interpreter start plus every module a no-op imports, without loading the book.
IMPORTS = "import doit.doit_cmd, doit.cmd_run, targets.book.tasks, targets.book.commands"

# Runs in the project folder: the book's tasks as scenemake's loader builds them for a command
# that loads every task (``doit list``), then doit's own ``load_tasks``.
DUMP_GRAPH = """
import json, sys
from doit.loader import generate_tasks
from targets.book.run import BookRun
from targets.book.tasks import book_tasks
tasks = generate_tasks("book", book_tasks(BookRun.from_doit("list")))
out = [{"name": t.name, "file_dep": sorted(t.file_dep), "targets": list(t.targets),
        "task_dep": list(t.task_dep)} for t in tasks if not t.has_subtask]
json.dump(out, sys.stdout)
"""


def run_env(code: Path | None) -> dict[str, str]:
    """Environment for the doit subprocesses (``code`` first on PYTHONPATH if given).

    A user's shell sets neither PYTHONDONTWRITEBYTECODE (every run would compile
    scenemake from source) nor PYTHONUNBUFFERED (one write per output line), so they
    are removed when the calling environment has them.
    """
    env = dict(os.environ)
    for name in ("SCENEMAKE_HASH_LOG", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
        env.pop(name, None)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(code.resolve())] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def doit_cmd(*args: str) -> list[str]:
    """``python -m doit ARGS`` with this interpreter."""
    return [sys.executable, "-m", "doit", *args]


def prepare_project(project: Path, scenes: int, code: Path | None = None) -> None:
    """Write dodo.py and doit.cfg (from ``code``, else this repo), the synthetic book, the
    workspace config."""
    project.mkdir(parents=True, exist_ok=True)
    shutil.copyfile((code or REPO) / "dodo.py", project / "dodo.py")
    if ((code or REPO) / "doit.cfg").exists():  # scenemake's task loader, as a project ships it
        shutil.copyfile((code or REPO) / "doit.cfg", project / "doit.cfg")
    write_book(scenes, project / "workspace" / "books" / BOOK, override_system=True)
    (project / "workspace" / "scenemake.json").write_text(
        json.dumps({"default_book": BOOK}) + "\n", encoding="utf-8")


def full_build(project: Path, env: dict[str, str]) -> float:
    """Build the whole book once; returns the wall-clock seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run(doit_cmd(), cwd=project, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise SystemExit(f"full build failed ({proc.returncode}):\n{tail}")
    return elapsed


def task_graph(project: Path, env: dict[str, str]) -> list[dict]:
    """Every task doit would run: name, file_dep, targets, task_dep (doit's loader)."""
    proc = subprocess.run([sys.executable, "-c", DUMP_GRAPH], cwd=project, env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def write_makefile(tasks: list[dict], project: Path, tree: Path) -> int:
    """Write ``tree/Makefile`` for the same graph and mirror the source files; returns rules."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    produced = {t for task in tasks for t in task["targets"]}
    sources = {d for task in tasks for d in task["file_dep"]} - produced
    for src in sorted(sources):
        if not os.path.isabs(src):  # relative sources are copied; absolute ones are shared
            (tree / src).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project / src, tree / src)
    for target in produced:
        (tree / target).parent.mkdir(parents=True, exist_ok=True)
    by_name = {task["name"]: task for task in tasks}

    def prereq(name: str) -> str:
        """A task_dep in make: the task's targets, else a phony stand-in (``guard``)."""
        dep = by_name.get(name)
        if dep and dep["targets"]:
            return " ".join(dep["targets"])
        return "phony." + name.replace(":", ".")

    phony = sorted({prereq(d) for task in tasks for d in task["task_dep"]
                    if prereq(d).startswith("phony.")})
    lines = [".PHONY: all " + " ".join(phony), "all: " + " ".join(sorted(produced))]
    lines += [f"{name}: ;" for name in phony] + [""]
    rules = 0
    for task in tasks:
        if not task["targets"]:
            continue
        order_only = " | " + " ".join(map(prereq, task["task_dep"])) if task["task_dep"] else ""
        lines.append(f"{' '.join(task['targets'])} &: {' '.join(task['file_dep'])}{order_only}")
        lines.append(f"\t@touch {' '.join(task['targets'])}")
        rules += 1
    (tree / "Makefile").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rules


PLAIN_DODO = '''"""Plain doit on the same graph: default backend, md5 checker, touch actions."""
import json
import os
from collections import defaultdict

DOIT_CONFIG = {"dep_file": ".doit-plain.db", "verbosity": 1}
GRAPH = json.load(open("graph.json"))


def _touch(targets):
    for t in targets:
        with open(t, "a"):
            os.utime(t)


def task_guard():
    return {"actions": [lambda: None], "uptodate": [False]}


def _group(tasks):
    for t in tasks:
        yield {"name": t["name"].partition(":")[2], "actions": [(_touch, [t["targets"]])],
               "file_dep": t["file_dep"], "targets": t["targets"], "task_dep": t["task_dep"]}


_BY_PHASE = defaultdict(list)
for _t in GRAPH:
    if ":" in _t["name"]:
        _BY_PHASE[_t["name"].partition(":")[0]].append(_t)
    elif _t["targets"]:  # a task of its own (the manuscript)
        globals()["task_" + _t["name"]] = (lambda t: lambda: {
            "actions": [(_touch, [t["targets"]])], "file_dep": t["file_dep"],
            "targets": t["targets"], "task_dep": t["task_dep"]})(_t)
for _phase, _tasks in _BY_PHASE.items():
    globals()["task_" + _phase] = (lambda ts: lambda: _group(ts))(_tasks)
'''


def write_plain_dodo(tasks: list[dict], tree: Path) -> None:
    """``tree/plain_dodo.py``: the same graph as plain doit tasks (md5, default backend)."""
    (tree / "graph.json").write_text(json.dumps(tasks), encoding="utf-8")
    (tree / "plain_dodo.py").write_text(PLAIN_DODO, encoding="utf-8")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed_cpu(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
              ok: Sequence[int] = (0,)) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run ``cmd``: (wall seconds, user+sys CPU seconds, completed process).

    Refuses exit codes not in ``ok``. CPU time is less disturbed than wall time by
    other jobs on a shared machine, so the table shows both.
    """
    c0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode not in ok:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return elapsed, cpu, proc


def timed(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
          ok: Sequence[int] = (0,)) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``cmd`` and return (wall seconds, completed process); refuses unexpected codes."""
    elapsed, _, proc = timed_cpu(cmd, cwd, env, ok)
    return elapsed, proc


def llm_calls(project: Path) -> int:
    """Lines in the LLM call log (hits and misses)."""
    log = project / "workspace" / ".scenemake" / "llm_calls.jsonl"
    if not log.exists():
        return 0
    with log.open("rb") as fh:
        return sum(1 for _ in fh)


def check_doit_noop(proc: subprocess.CompletedProcess) -> None:
    """A no-op runs only ``guard``: any other executed task (``.  NAME``) is an error."""
    ran = [line for line in proc.stdout.splitlines()
           if line.startswith(".  ") and line[3:].strip() != "guard"]
    if ran:
        raise SystemExit(f"doit no-op ran {len(ran)} task(s), e.g. {ran[:3]}")


def profile_noop(project: Path, env: dict[str, str], out: Path) -> str:
    """Profile one no-op with cProfile; returns the two top-25 tables."""
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out.resolve()), "-m", "doit"]
    subprocess.run(cmd, cwd=project, env=env, capture_output=True, check=True)
    buf = io.StringIO()
    stats = pstats.Stats(str(out), stream=buf)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(25)
    return buf.getvalue()


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    make = subprocess.run(["make", "--version"], capture_output=True, text=True).stdout
    import doit

    return {"nproc": str(os.cpu_count()), "python": platform.python_version(),
            "make": make.splitlines()[0] if make else "?",
            "doit": ".".join(map(str, doit.__version__)),
            "platform": platform.platform(),
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=1000, help="scenes in the synthetic book")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each command")
    ap.add_argument("--workdir", type=Path, help="scratch folder (default /tmp/...)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse an already built project in --workdir")
    ap.add_argument("--code", type=Path, help="put this repo copy first on PYTHONPATH")
    ap.add_argument("--profile", type=Path, help="also cProfile one no-op into this file")
    args = ap.parse_args(argv)

    workdir = args.workdir or Path(f"/tmp/scenemake-bench-{args.scenes}")
    project, tree = workdir / "project", workdir / "make"
    env = run_env(args.code)
    info = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)

    built_marker = workdir / "build.json"
    if args.reuse and built_marker.exists():
        build = json.loads(built_marker.read_text())
        print(f"reusing {project} (full build took {build['seconds']:.1f} s)", flush=True)
    else:
        if workdir.exists():
            shutil.rmtree(workdir)
        prepare_project(project, args.scenes, args.code)
        print(f"full build of {args.scenes} scenes in {project} ...", flush=True)
        seconds = full_build(project, env)
        build = {"scenes": args.scenes, "seconds": seconds}
        built_marker.write_text(json.dumps(build) + "\n")
        print(f"full build: {seconds:.1f} s", flush=True)

    tasks = task_graph(project, env)
    rules = write_makefile(tasks, project, tree)
    make_build, _ = timed(["make", "-f", "Makefile", "-j1"], tree)
    _, dry = timed(["make", "-n", "-f", "Makefile"], tree)
    if "touch" in dry.stdout:
        raise SystemExit(f"make is not up to date after its build:\n{dry.stdout[:500]}")
    print(f"{len(tasks)} doit tasks, {rules} make rules; make full build (touch): "
          f"{make_build:.2f} s", flush=True)
    write_plain_dodo(tasks, tree)
    plain_build, _ = timed(doit_cmd("-f", "plain_dodo.py"), tree, env)
    _, dry = timed(["make", "-n", "-f", "Makefile"], tree)
    if "touch" in dry.stdout:
        raise SystemExit("plain doit's build left make out of date")
    print(f"plain doit full build (touch actions): {plain_build:.2f} s", flush=True)

    cmds: dict[str, tuple[list[str], Path, dict[str, str] | None, tuple[int, ...]]] = {
        "make -j1 (no-op)": (["make", "-f", "Makefile", "-j1"], tree, None, (0,)),
        "make -q": (["make", "-q", "-f", "Makefile"], tree, None, (0, 1)),
        "plain doit md5 (no-op)": (doit_cmd("-f", "plain_dodo.py"), tree, env, (0,)),
        "python -m doit (no-op)": (doit_cmd(), project, env, (0,)),
        # without a stamp (removed before each run): every task checked against its
        # build record before doit loads any, then the stamp is written again (what the
        # first no-op after a named run costs)
        "full path doit (no-op)": (doit_cmd(), project, env, (0,)),
        # every default task named, so that doit loads and checks each one itself (the
        # full path before the records check; the stamp is left as it is)
        "doit checks every task": (doit_cmd("guard", *PHASES, "manuscript"), project, env,
                                   (0,)),
        "python -m doit list": (doit_cmd("list"), project, env, (0,)),
        "python import only": ([sys.executable, "-c", IMPORTS], project, env, (0,)),
    }
    times: dict[str, list[float]] = {name: [] for name in cmds}
    cpus: dict[str, list[float]] = {name: [] for name in cmds}
    codes: dict[str, set[int]] = {name: set() for name in cmds}
    calls_before = llm_calls(project)
    for i in range(args.runs + 1):  # run 0 warms caches and is not counted
        for name, (cmd, cwd, cenv, ok) in cmds.items():
            if name.startswith("full path"):
                (project / "workspace" / ".scenemake" / "books" / f"{BOOK}.stamp.json").unlink()
            elapsed, cpu, proc = timed_cpu(cmd, cwd, cenv, ok)
            if name.endswith(("doit (no-op)", "every task")) or name.startswith("plain"):
                check_doit_noop(proc)
            if i:
                times[name].append(elapsed)
                cpus[name].append(cpu)
                codes[name].add(proc.returncode)
    if llm_calls(project) != calls_before:
        raise SystemExit("the no-op runs made LLM calls")

    base = statistics.median(times["make -j1 (no-op)"])
    cbase = statistics.median(cpus["make -j1 (no-op)"])
    print(f"\nno-op, {args.scenes} scenes ({len(tasks)} tasks), median of {args.runs} runs; "
          f"ratio = median / median of make -j1 (wall, and user+sys CPU):")
    print(f"{'command':<26}{'wall s':>8}{'min..max':>14}{'ratio':>7}{'cpu s':>8}{'ratio':>7}  exit")
    for name, ts in times.items():
        med, cmed = statistics.median(ts), statistics.median(cpus[name])
        span = f"{min(ts):.2f}..{max(ts):.2f}"
        rc = ",".join(str(c) for c in sorted(codes[name]))
        print(f"{name:<26}{med:>8.3f}{span:>14}{med / base:>7.2f}{cmed:>8.3f}"
              f"{cmed / cbase:>7.2f}  {rc}")
    print(f"full doit build (once): {build['seconds']:.1f} s; loadavg now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    if args.profile:
        print(f"\ncProfile of one no-op -> {args.profile}")
        print(profile_noop(project, env, args.profile))


if __name__ == "__main__":
    main()
