"""One llama.cpp server with parallel slots against one server per core (issue #21).

Usage::

    python bench/server_slots.py --server PATH/llama-server [--runs 3] [--model PATH.gguf]

llama-cpp-python's server (what the ``local`` provider starts) answers one request at a
time, so it cannot be asked the question "one server with two slots, or two servers?".
llama.cpp's own ``llama-server`` can: ``-np 2`` serves two requests at once from one model
copy with continuous batching. This script asks it, with six requests of equal length
(a 1000-token prompt, 200 tokens generated whatever the model would end with) so that
only the serving differs, three ways, interleaved, after one warm-up round each:

- **one**: one server, one slot, one thread, the six asked one after another (``-n 1``);
- **slots**: one server, two slots, two threads, two asked at a time;
- **two**: two servers, one slot and one thread each, two asked at a time (how the
  ``local`` provider serves ``-n 2``).

Prints the median wall time of the six answers and the ratio to **one**. bench/README.md
section 16 says how to build ``llama-server`` from the llama.cpp source that
llama-cpp-python's sdist carries.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PROMPT = ("The lighthouse keeper counted ships each night and wrote their names in a ledger "
          "that nobody read. ") * 60
HOWS = {"one": (1, [(1, 1)]), "slots": (2, [(2, 2)]), "two": (2, [(1, 1), (1, 1)])}


def start(server: Path, model: Path, port: int, slots: int, threads: int) -> subprocess.Popen:
    """A llama-server on 127.0.0.1:``port``, ready (its /health answers 200)."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(server.parent)}
    proc = subprocess.Popen(
        [str(server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
         "-np", str(slots), "-t", str(threads), "-tb", str(threads),
         "-c", str(4096 * slots), "--no-webui"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{server} exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{server} did not answer in 60 s")


def ask(port: int, i: int) -> int:
    """One completion of exactly 200 tokens; returns the tokens generated."""
    r = httpx.post(f"http://127.0.0.1:{port}/completion", json={
        "prompt": f"Scene {i}. {PROMPT}\nPlan the scene in five beats:", "n_predict": 200,
        "ignore_eos": True, "seed": i, "temperature": 0.7, "cache_prompt": False},
        timeout=600)
    r.raise_for_status()
    return r.json()["timings"]["predicted_n"]


def six(ports: list[int], at_once: int) -> float:
    """Wall seconds for six answers, ``at_once`` in flight, shared over ``ports``."""
    todo, lock, made = list(range(6)), threading.Lock(), []

    def worker(port: int) -> None:
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            made.append(ask(port, i))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(ports[k % len(ports)],))
               for k in range(at_once)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if sum(made) != 6 * 200:
        raise SystemExit(f"expected 1200 tokens, got {sum(made)}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", type=Path, required=True, help="llama.cpp's llama-server")
    ap.add_argument("--model", type=Path, help="a .gguf (default: the shipped SmolLM2)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if args.model is None:
        from pipeline.llm.providers.local import default_model_path

        args.model = default_model_path()
    walls: dict[str, list[float]] = {how: [] for how in HOWS}
    for run in range(args.runs + 1):  # the first round warms the page cache: not counted
        for how, (at_once, servers) in HOWS.items():
            procs = [start(args.server, args.model, 9101 + k, slots, threads)
                     for k, (slots, threads) in enumerate(servers)]
            try:
                wall = six([9101 + k for k in range(len(procs))], at_once)
            finally:
                for p in procs:
                    p.terminate()
                    p.wait()
            if run:
                walls[how].append(wall)
            print(f"run {run} {how}: {wall:.1f} s", file=sys.stderr)
    base = statistics.median(walls["one"])
    print(f"six answers of 200 tokens, {args.model.name}; medians of {args.runs}; "
          f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'how':8s} {'walls s':24s} {'median s':>9s} {'/ one':>7s}")
    for how, ws in walls.items():
        med = statistics.median(ws)
        print(f"{how:8s} {', '.join(f'{w:.1f}' for w in ws):24s} {med:9.1f} {med / base:7.2f}")


if __name__ == "__main__":
    main()
