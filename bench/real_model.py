"""The example book built by the real model (SmolLM2 through the ``local`` provider): wall
time against the sum of the server's answer times (what scenemake adds around the model),
and time per scene.

    python bench/real_model.py [--runs 3] [--workdir /tmp/smb-real] [--scenes 6]

Each run builds a fresh copy of the example book (no response cache), so every call goes to
the model. The server's start (the ``local`` provider starts llama.cpp's server lazily) is
measured on its own and reported apart: it is paid once per run, not per call.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fresh_project(root: Path, scenes: int) -> Path:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    shutil.copytree(REPO / "workspace", root / "workspace",
                    ignore=shutil.ignore_patterns("draft", ".scenemake", "artifacts"))
    outline = root / "workspace" / "books" / "example" / "outline.json"
    data = json.loads(outline.read_text())
    left = scenes
    for chapter in data["chapters"]:
        chapter["scenes"] = chapter["scenes"][:max(left, 0)]
        left -= len(chapter["scenes"])
    data["chapters"] = [c for c in data["chapters"] if c["scenes"]]
    outline.write_text(json.dumps(data, indent=2))
    # as tests/book/test_real_model.py builds it: what a 135M model needs
    book = root / "workspace" / "books" / "example" / "book.json"
    cfg = json.loads(book.read_text())
    cfg["model"]["temperature"] = 0.3
    cfg.setdefault("endpoint", {})["max_reasks"] = 4
    book.write_text(json.dumps(cfg, indent=2))
    return root


def server_start_s() -> float:
    """Seconds from launching llama.cpp's server on the model to its first answer."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.llama import LlamaServer
    from support.smollm import model_path

    t0 = time.monotonic()
    with LlamaServer(model_path()):
        return time.monotonic() - t0


def one_run(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")}
    env["SCENEMAKE_MODEL"] = "local"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "doit"], cwd=root, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    calls = [json.loads(line) for line in
             (root / "workspace" / ".scenemake" / "llm_calls.jsonl").read_text().splitlines()]
    misses = [c for c in calls if c["cache"] == "miss"]
    answer_s = sum(c["latency_ms"] for c in misses) / 1000
    return {"wall_s": wall, "answers_s": answer_s, "calls": len(misses),
            "tokens_in": sum(c["tokens_in"] for c in misses),
            "tokens_out": sum(c["tokens_out"] for c in misses)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/smb-real"))
    args = ap.parse_args()
    start = statistics.median(server_start_s() for _ in range(3))
    rows = []
    for i in range(args.runs):
        rows.append(one_run(fresh_project(args.workdir / f"run{i}", args.scenes)))
        r = rows[-1]
        print(f"run {i + 1}: wall {r['wall_s']:.1f} s, answers {r['answers_s']:.1f} s, "
              f"{r['calls']} calls, {r['tokens_in']} tokens in, {r['tokens_out']} out",
              flush=True)
    wall = statistics.median(r["wall_s"] for r in rows)
    answers = statistics.median(r["answers_s"] for r in rows)
    overhead = statistics.median((r["wall_s"] - start - r["answers_s"]) / r["answers_s"]
                                 for r in rows)
    print(f"\nserver start (median of 3): {start:.2f} s")
    print(f"median of {args.runs}: wall {wall:.1f} s, server answers {answers:.1f} s, "
          f"time per scene {wall / args.scenes:.1f} s")
    print(f"scenemake around the model (wall - server start - answers) / answers: "
          f"{overhead * 100:.1f} %")
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
