"""Fleet benchmarks: (a) 4 books on ``doit fleet --local 2`` against the same 4 built one
after another, with a simulated model latency; (b) what the PostgreSQL cache costs per call
against the file cache (a miss: claim, answer, one commit; a hit: one SELECT and a log row).

    python bench/fleet.py [--books 4] [--latency-ms 200] [--calls 300] [--cache-url URL]
                          [--workdir /tmp/fleetbench]

Without ``--cache-url`` it starts a throwaway PostgreSQL the way the tests do
(``tests/support/postgres.py``: initdb/pg_ctl, as the ``postgres`` user when root). Each
variant gets a fresh database, so nothing is served from an earlier variant's answers. The
books differ by their model seed: no book's requests are another's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def project(root: Path, books: int) -> Path:
    """dodo.py and the example workspace with ``books`` copies of the example book."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    shutil.copytree(REPO / "workspace", root / "workspace",
                    ignore=shutil.ignore_patterns("draft", ".scenemake", "artifacts"))
    example = root / "workspace/books/example"
    for i in range(books):
        dest = root / f"workspace/books/b{i}"
        shutil.copytree(example, dest)
        cfg = json.loads((dest / "book.json").read_text())
        cfg["model"]["seed"] = 100 + i
        (dest / "book.json").write_text(json.dumps(cfg, indent=2))
    return root


def timed(cmd: list[str], cwd: Path, env: dict, out: list[str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True,
                          text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    if out is not None:
        out.append(proc.stdout + proc.stderr)
    return took


def back(out: str) -> str:
    """What the units of a ``doit fleet`` output say came back through Dask."""
    return ", ".join(line.rsplit(", ", 1)[1].removesuffix(" back")
                     for line in out.splitlines() if line.endswith(" back"))


def bench_fleet(args, new_db) -> None:
    env = {"SCENEMAKE_OFFLINE_LATENCY_MS": str(args.latency_ms)}
    names = [f"b{i}" for i in range(args.books)]
    root = project(args.workdir / "serial", args.books)
    env_serial = {**env, "SCENEMAKE_CACHE_URL": new_db()}
    serial = sum(timed([sys.executable, "-m", "doit", f"book={b}", "-n", "2", "-P", "thread"],
                       root, env_serial) for b in names)
    outs: list[str] = []
    took = {}
    for flags in ((), ("--shared-fs",)):
        root = project(args.workdir / ("fleet" + "".join(flags)), args.books)
        took[flags] = timed([sys.executable, "-m", "doit", "fleet", "--local", "2", *flags,
                             *[f"book:{b}" for b in names]], root,
                            {**env, "SCENEMAKE_CACHE_URL": new_db()}, outs)
    fleet, shared = took[()], took[("--shared-fs",)]
    print(f"(a) {args.books} books x 30 calls at {args.latency_ms} ms: one after another "
          f"{serial:.1f} s; doit fleet --local 2 {fleet:.1f} s ({serial / fleet:.2f}x); "
          f"with --shared-fs {shared:.1f} s\n    back through Dask per unit: {back(outs[0])}; "
          f"with --shared-fs {back(outs[1])}")


def bench_per_call(args, new_db) -> None:
    from pipeline.llm import CallContext, LLMRequest, build_client

    def run(state: Path, env: dict) -> tuple[float, float]:
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            shutil.rmtree(state.parent, ignore_errors=True)
            state.mkdir(parents=True)
            client = build_client(state)
            reqs = [LLMRequest(provider="offline", model="offline-1",
                               params={"temperature": 0.7, "max_tokens": 200, "seed": 7},
                               messages=({"role": "user", "content": f"scene {i}"},))
                    for i in range(args.calls)]
            ctx = CallContext(run="bench", task="t", unit="s", step="p")
            out = []
            for _ in ("miss", "hit"):
                start = time.perf_counter()
                for r in reqs:
                    client.complete(r, ctx)
                out.append((time.perf_counter() - start) / len(reqs) * 1000)
            return out[0], out[1]
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    file_miss, file_hit = run(args.workdir / "percall-file/.scenemake", {})
    pg_miss, pg_hit = run(args.workdir / "percall-pg/.scenemake", {"SCENEMAKE_CACHE_URL":
                                                                   new_db()})
    print(f"(b) per call, {args.calls} calls, offline model at 0 ms: file cache miss "
          f"{file_miss:.2f} ms, hit {file_hit:.2f} ms; PostgreSQL miss {pg_miss:.2f} ms, hit "
          f"{pg_hit:.2f} ms (+{pg_miss - file_miss:.2f} / +{pg_hit - file_hit:.2f} ms)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--books", type=int, default=4)
    p.add_argument("--latency-ms", type=int, default=200)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--cache-url", help="an empty-able PostgreSQL database's URL (its owner)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/fleetbench"))
    args = p.parse_args()
    server = None
    counter = iter(range(1, 1000))
    if args.cache_url:
        def new_db() -> str:
            import psycopg

            with psycopg.connect(args.cache_url, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS llm_calls, llm_claims, llm_responses, "
                             "scenemake_migrations")
            return args.cache_url
    else:
        from support.postgres import _start

        server = _start()

        def new_db() -> str:
            return server.new_database(f"bench{next(counter)}")
    try:
        bench_fleet(args, new_db)
        bench_per_call(args, new_db)
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.data.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
