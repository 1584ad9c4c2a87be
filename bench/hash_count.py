"""Files really hashed by a no-op ``doit`` after ``touch`` of a template every scene uses.

Usage::

    python bench/hash_count.py [--scenes 30] [--workdir DIR] [--project DIR] [--code DIR]

The synthetic book has a book override ``templates/system.j2`` (a copy of the package
default) from before its full build, so every LLM phase of every scene depends on it.
The script then runs, each time counting the lines that ``pipeline/hashing.py`` appends
to the file named by ``SCENEMAKE_HASH_LOG`` (one line per file actually read and hashed):

1. a no-op before the touch (expected: 0 files);
2. ``touch templates/system.j2`` (new mtime, same content);
3. the no-op twice: the first hashes 1 file (the template, once per process for every
   task that depends on it, recognised as unchanged; no phase reruns, no LLM call) and
   records its new mtime, so the second hashes 0 files.

``--project DIR`` reuses a project already built by ``noop_vs_make.py`` (its book has
the override); otherwise a project of ``--scenes`` scenes is written and built in
``--workdir``. Exit status 1 when a no-op hashes other than the files expected above.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from noop_vs_make import (  # noqa: E402
    BOOK,
    check_doit_noop,
    doit_cmd,
    full_build,
    llm_calls,
    prepare_project,
    run_env,
)


def noop_hashes(project: Path, env: dict[str, str]) -> tuple[list[str], float]:
    """Run one no-op with a fresh hash log; returns (hashed paths, wall seconds)."""
    fd, log = tempfile.mkstemp(prefix="hashlog-", suffix=".txt")
    os.close(fd)
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(doit_cmd(), cwd=project, capture_output=True, text=True,
                              env={**env, "SCENEMAKE_HASH_LOG": log})
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise SystemExit(f"doit exited {proc.returncode}:\n{tail}")
        check_doit_noop(proc)
        return Path(log).read_text(encoding="utf-8").splitlines(), elapsed
    finally:
        os.unlink(log)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=30, help="scenes of a new synthetic book")
    ap.add_argument("--workdir", type=Path, help="scratch folder for a new project")
    ap.add_argument("--project", type=Path, help="reuse this built project (noop_vs_make.py)")
    ap.add_argument("--code", type=Path, help="put this repo copy first on PYTHONPATH")
    args = ap.parse_args(argv)
    env = run_env(args.code)

    if args.project:
        project = args.project
    else:
        workdir = args.workdir or Path(f"/tmp/scenemake-hashcount-{args.scenes}")
        project = workdir / "project"
        if (workdir / "built").exists():
            print(f"reusing {project}")
        else:
            prepare_project(project, args.scenes, args.code)
            print(f"full build of {args.scenes} scenes: {full_build(project, env):.1f} s")
            (workdir / "built").touch()
    template = project / "workspace" / "books" / BOOK / "templates" / "system.j2"
    if not template.is_file():
        raise SystemExit(f"{template} is missing: the book needs the system.j2 override")

    calls = llm_calls(project)
    rows = [("no-op before touch", *noop_hashes(project, env))]
    template.touch()
    for i in (1, 2):
        rows.append((f"no-op {i} after touch", *noop_hashes(project, env)))
    if llm_calls(project) != calls:
        raise SystemExit("a no-op made LLM calls")

    print(f"\nfiles hashed per no-op ({project}):")
    print(f"{'run':<24}{'files':>6}{'seconds':>9}  paths")
    for name, paths, secs in rows:
        shown = ", ".join(f"{p} x{n}" if n > 1 else p for p, n in Counter(paths).items())
        print(f"{name:<24}{len(paths):>6}{secs:>9.2f}  {shown[:200]}")
    expected = [0, 1, 0]  # before; first after the touch; second (the new mtime is known)
    bad = [f"{name} ({len(paths)} files, expected {n})"
           for (name, paths, _), n in zip(rows, expected, strict=True) if len(paths) != n]
    print("FAIL: " + ", ".join(bad) if bad else
          "OK: 0 files hashed before the touch, 1 by the first no-op after it, 0 by the next")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
