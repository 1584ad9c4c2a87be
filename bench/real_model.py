"""The example book as shipped, built by the real model with the README's command
(``SCENEMAKE_MODEL=local doit``), for several seeds: what a real run costs.

    python bench/real_model.py [--seeds 7 11 23] [--workdir /tmp/smb-real]
    python bench/real_model.py --plans [--runs 3] [--hows n1 n2 one2]

Books: each seed builds a fresh copy of the shipped example (only ``model.seed`` in
book.json changed; no response cache), so every call goes to the model. Per seed: whether
all 8 phases of the 6 scenes were built, LLM calls per LLM task (every try counted, lint's
repair rounds too: 30 LLM tasks), tokens generated per scene, wall time per scene, and what
scenemake adds around the model: (wall - the model's answer time) / answer time, the answer
time being the call log's ``latency_ms`` of the paid calls (they are asked one after the
other here; the first one's holds the server's start, measured on its own too: median of
3).

``--plans``: the six plans, ``SCENEMAKE_MODEL=local doit -n 1 plan`` against ``-n 2 -P
thread plan`` (two servers, one per core) and against one server with two threads asked one
request at a time (``--n_threads 2``, through the ``openai`` provider), interleaved, a fresh
project per run; medians, the ratio to ``-n 1``, and the paid calls (each answer paid once).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENES = 6
LLM_TASKS = 30  # 5 LLM phases x 6 scenes
PHASES = ("plan", "preflight", "continuity_pack", "write", "repair", "state_repair", "lint",
          "commit")


def fresh_project(root: Path, seed: int | None) -> Path:
    """The shipped example (dodo.py, doit.cfg, workspace) with nothing built."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    shutil.copy(REPO / "doit.cfg", root / "doit.cfg")
    shutil.copytree(REPO / "workspace", root / "workspace",
                    ignore=shutil.ignore_patterns("draft", ".scenemake", "artifacts"))
    if seed is not None:
        book = root / "workspace" / "books" / "example" / "book.json"
        cfg = json.loads(book.read_text())
        cfg["model"]["seed"] = seed
        book.write_text(json.dumps(cfg, indent=2))
    return root


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")
           and not k.startswith("SCENEMAKE_")}
    env.update(extra)
    return env


def _calls(root: Path) -> list[dict]:
    log = root / "workspace" / ".scenemake" / "llm_calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def server_start_s() -> float:
    """Seconds from launching llama.cpp's server on the model to its first answer."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.llama import LlamaServer
    from support.smollm import model_path

    t0 = time.monotonic()
    with LlamaServer(model_path()):
        return time.monotonic() - t0


def book_run(root: Path) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "doit"], cwd=root, capture_output=True,
                          text=True, env=_env(SCENEMAKE_MODEL="local"))
    wall = time.monotonic() - t0
    built = 0
    for sid in ("ch001_sc001", "ch001_sc002", "ch001_sc003", "ch002_sc001", "ch002_sc002",
                "ch002_sc003"):
        ledger = root / "workspace/books/example/draft/context/phase_history" / f"{sid}.json"
        if ledger.exists():
            phases = json.loads(ledger.read_text())["phases"]
            built += sum(1 for p in PHASES if phases.get(p, {}).get("status") == "success")
    misses = [c for c in _calls(root) if c["cache"] == "miss"]
    refused = Counter(f"{c['phase']}: {(c.get('finding') or '')[:60]}" for c in misses
                      if c.get("finding"))
    return {"code": proc.returncode, "wall_s": wall, "built": built,
            "answers_s": sum(c["latency_ms"] for c in misses) / 1000, "calls": len(misses),
            "rounds": sum(1 for c in misses if c["phase"] == "lint" and c["try"] == 0) // 2,
            "tokens_in": sum(c["tokens_in"] for c in misses),
            "tokens_out": sum(c["tokens_out"] for c in misses), "refused": refused,
            "last": (proc.stdout.strip().splitlines() or [""])[-1],
            "error": "" if proc.returncode == 0 else (proc.stdout + proc.stderr)[-600:]}


def books(args) -> None:
    start = statistics.median(server_start_s() for _ in range(3))
    print(f"server start (median of 3): {start:.2f} s", flush=True)
    rows = []
    for seed in args.seeds:
        r = book_run(fresh_project(args.workdir / f"seed{seed}", seed))
        r["seed"] = seed
        rows.append(r)
        print(f"seed {seed}: exit {r['code']}, {r['built']}/48 phases built, wall "
              f"{r['wall_s']:.1f} s, answers {r['answers_s']:.1f} s, {r['calls']} paid calls "
              f"({r['calls'] / LLM_TASKS:.2f} per LLM task, {r['rounds']} repair round(s)), "
              f"{r['tokens_in']} tokens in, {r['tokens_out']} out", flush=True)
        for what, n in r["refused"].most_common():
            print(f"    refused {n}x  {what}")
        if r["error"]:
            print("    " + r["error"].replace("\n", "\n    "))
    print("\n| seed | built | paid calls | calls per LLM task | tokens out per scene | wall per "
          "scene | scenemake around the model |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        # (the first answer's latency holds the server's start: the provider starts it)
        around = (r["wall_s"] - r["answers_s"]) / r["answers_s"]
        print(f"| {r['seed']} | {r['built']}/48 | {r['calls']} | {r['calls'] / LLM_TASKS:.2f} | "
              f"{r['tokens_out'] / SCENES:.0f} | {r['wall_s'] / SCENES:.1f} s | "
              f"{around * 100:.1f} % |")
    if args.keep:
        return
    shutil.rmtree(args.workdir, ignore_errors=True)


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) of process ``pid``, or of this process's reaped children
    and their reaped descendants (a doit run and the servers it started and stopped)."""
    if pid is None:
        import resource

        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plans_run(root: Path, how: str, server=None) -> tuple[float, int, float]:
    """(wall s, paid calls, CPU s of the run and of the model servers that answered it)."""
    args = {"n1": ["-n", "1"], "n2": ["-n", "2", "-P", "thread"], "one2": ["-n", "1"]}[how]
    env = (_env(SCENEMAKE_MODEL="local") if server is None else
           _env(SCENEMAKE_MODEL="openai:smollm2", SCENEMAKE_BASE_URL=server.base_url))
    cpu0 = _cpu_s() + (_cpu_s(server.proc.pid) if server else 0.0)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "doit", *args, "plan"], cwd=root,
                          capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    cpu = _cpu_s() + (_cpu_s(server.proc.pid) if server else 0.0) - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{how} failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return wall, len([c for c in _calls(root) if c["cache"] == "miss"]), cpu


def plans(args) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from support.llama import LlamaServer
    from support.smollm import model_path

    walls: dict[str, list[float]] = {"n1": [], "n2": [], "one2": []}
    cpus: dict[str, list[float]] = {"n1": [], "n2": [], "one2": []}
    paid: dict[str, list[int]] = {"n1": [], "n2": [], "one2": []}
    two = ("--n_threads", "2", "--n_threads_batch", "2")  # (the last of a repeated flag wins)
    with LlamaServer(model_path(), extra_args=two) as two_threads:
        for i in range(args.runs):
            for how in args.hows:
                root = fresh_project(args.workdir / f"{how}-{i}", None)
                wall, n, cpu = plans_run(root, how, two_threads if how == "one2" else None)
                walls[how].append(wall)
                cpus[how].append(cpu)
                paid[how].append(n)
                print(f"run {i + 1} {how}: {wall:.1f} s, {cpu:.1f} CPU s, {n} paid calls, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
    base = statistics.median(walls["n1"])
    print("\n| how | median wall | ratio to -n 1 | median CPU s (run + servers) | paid calls |")
    print("|---|---|---|---|---|")
    for how, label in (("n1", "`-n 1 plan` (one server, one thread)"),
                       ("n2", "`-n 2 -P thread plan` (two servers, one thread each)"),
                       ("one2", "one server with two threads, `-n 1` (started before)")):
        if how not in args.hows:
            continue
        med = statistics.median(walls[how])
        print(f"| {label} | {med:.1f} s | {med / base:.2f} | "
              f"{statistics.median(cpus[how]):.1f} | {paid[how]} |")
    shutil.rmtree(args.workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 23])
    ap.add_argument("--plans", action="store_true", help="-n 1 against -n 2 for the plans")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hows", nargs="+", choices=("n1", "n2", "one2"),
                    default=["n1", "n2", "one2"], help="--plans: which ways to run them")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/smb-real"))
    ap.add_argument("--keep", action="store_true", help="keep the built projects")
    args = ap.parse_args()
    (plans if args.plans else books)(args)


if __name__ == "__main__":
    main()
