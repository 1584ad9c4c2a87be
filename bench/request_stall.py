"""Per-request latency of the reference assistant on loopback, over one kept-alive
connection, as the scenario runner talks to it (issue #14: a ~44 ms stall per request).

Usage::

    python bench/request_stall.py [--requests 40] [--workspace DIR] [--nodelay-client]
                                  [--code DIR ...]

Starts ``python -m pipeline.assistant.server --port 0`` on a scratch copy of the
workspace's scenario files, then times, interleaved, ``GET /api/health`` and
``POST /api/nowhere`` (a body, no work: 404) and ``POST /api/assistant/message`` (a
real turn, whose own work is mostly fsyncs) with an ``httpx.Client`` built exactly like
``pipeline.scenario.client.AssistantClient``'s (``--nodelay-client`` also sets TCP_NODELAY
on the client's socket, to tell a client-side cause from a server-side one). ``--code DIR``
also starts a server from that copy of the repo (another commit: ``git archive COMMIT
pipeline | tar -x -C DIR``), and the servers are asked in turn, one round each. Prints the
median and min..max per request, in ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def start_server(workspace: Path, code: Path | None) -> tuple[subprocess.Popen, str]:
    """The assistant on a free port (from ``code`` if given); returns it and its base URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if code is not None:
        env["PYTHONPATH"] = str(code.resolve())
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.assistant.server", "--port", "0",
         "--workspace", str(workspace), "--run-id", "assistant-stage1-bench"],
        # not run from the repo: ``-m`` puts the working folder first on sys.path
        stdout=subprocess.PIPE, text=True, env=env, cwd=workspace.parent)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"assistant did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def client(nodelay: bool) -> httpx.Client:
    """An httpx client like the scenario runner's (optionally with TCP_NODELAY)."""
    if not nodelay:
        return httpx.Client(timeout=httpx.Timeout(30.0), trust_env=False)
    transport = httpx.HTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(timeout=httpx.Timeout(30.0), trust_env=False, transport=transport)


KINDS = ("GET /api/health", "POST /api/nowhere (404)", "POST /api/assistant/message")


def one_round(http: httpx.Client, base: str, i: int, out: dict[str, list[float]]) -> None:
    """One request of each kind on ``http``'s kept-alive connection, timed in ms."""
    t0 = time.perf_counter()
    http.get(base + "/api/health").raise_for_status()
    out[KINDS[0]].append((time.perf_counter() - t0) * 1000)
    # a body but no work (404): a request-side stall shows here alone
    t0 = time.perf_counter()
    http.post(base + "/api/nowhere", json={"session_id": None, "message": "x"})
    out[KINDS[1]].append((time.perf_counter() - t0) * 1000)
    # a new session each time: a growing session would time its own growth
    t0 = time.perf_counter()
    http.post(base + "/api/assistant/message",
              json={"session_id": None, "message": f"how much tape is in stock? {i}"}
              ).raise_for_status()
    out[KINDS[2]].append((time.perf_counter() - t0) * 1000)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40, help="requests of each kind")
    ap.add_argument("--workspace", type=Path, default=REPO / "workspace",
                    help="workspace whose scenarios/ the assistant reads (copied)")
    ap.add_argument("--nodelay-client", action="store_true",
                    help="set TCP_NODELAY on the client socket too")
    ap.add_argument("--code", type=Path, action="append", default=[],
                    help="also a server from this repo copy, interleaved (repeatable)")
    args = ap.parse_args(argv)
    servers: list[tuple[str, Path | None]] = [("this repo", None)]
    servers += [(str(c), c) for c in args.code]
    results = {label: {k: [] for k in KINDS} for label, _ in servers}
    with tempfile.TemporaryDirectory(prefix="stall-") as tmp:
        procs, clients = [], []
        try:
            for n, (label, code) in enumerate(servers):
                ws = Path(tmp) / f"workspace{n}"
                shutil.copytree(args.workspace / "scenarios", ws / "scenarios")
                proc, base = start_server(ws, code)
                procs.append(proc)
                http = client(args.nodelay_client)
                http.get(base + "/api/health")  # connect first: only kept-alive requests count
                clients.append((label, http, base))
            for i in range(args.requests):  # interleaved: the servers share the machine's moods
                for label, http, base in clients:
                    one_round(http, base, i, results[label])
        finally:
            for _, http, _ in clients:
                http.close()
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
    print(f"{args.requests} requests of each kind per server, one kept-alive connection each"
          f"{', client TCP_NODELAY' if args.nodelay_client else ''}")
    for label, by_kind in results.items():
        print(f"server from {label}:")
        for kind, ms in by_kind.items():
            print(f"  {kind:32s} median {statistics.median(ms):7.2f} ms"
                  f"  ({min(ms):.2f}..{max(ms):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
