"""Per-request latency of the reference assistant on loopback, over one kept-alive
connection, as the scenario runner talks to it (issue #14: a ~44 ms stall per request).

Usage::

    python bench/request_stall.py [--requests 40] [--workspace DIR] [--nodelay-client]

Starts ``python -m pipeline.assistant.server --port 0`` on a scratch copy of the
workspace's scenario files, then times, interleaved, ``GET /api/health`` and
``POST /api/nowhere`` (a body, no work: 404) and ``POST /api/assistant/message`` (a
real turn, whose own work is mostly fsyncs) with an ``httpx.Client`` built exactly like
``pipeline.scenario.client.AssistantClient``'s (``--nodelay-client`` also sets TCP_NODELAY
on the client's socket, to tell a client-side cause from a server-side one). Prints the
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


def start_server(workspace: Path) -> tuple[subprocess.Popen, str]:
    """The assistant on a free port; returns the process and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.assistant.server", "--port", "0",
         "--workspace", str(workspace), "--run-id", "assistant-stage1-bench"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
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


def measure(base: str, n: int, nodelay: bool) -> dict[str, list[float]]:
    """ms per request, per kind, interleaved on one kept-alive connection."""
    out: dict[str, list[float]] = {"GET /api/health": [], "POST /api/nowhere (404)": [],
                                   "POST /api/assistant/message": []}
    with client(nodelay) as http:
        http.get(base + "/api/health")  # connect first: only kept-alive requests are timed
        for i in range(n):
            t0 = time.perf_counter()
            r = http.get(base + "/api/health")
            out["GET /api/health"].append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            # a body but no work (404): a request-side stall shows here alone
            t0 = time.perf_counter()
            http.post(base + "/api/nowhere", json={"session_id": None, "message": "x"})
            out["POST /api/nowhere (404)"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            r = http.post(base + "/api/assistant/message",
                          json={"session_id": None, "message": f"how much tape is in stock? {i}"})
            out["POST /api/assistant/message"].append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            # a new session each time: a growing session would time its own growth
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40, help="requests of each kind")
    ap.add_argument("--workspace", type=Path, default=REPO / "workspace",
                    help="workspace whose scenarios/ the assistant reads (copied)")
    ap.add_argument("--nodelay-client", action="store_true",
                    help="set TCP_NODELAY on the client socket too")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stall-") as tmp:
        ws = Path(tmp) / "workspace"
        shutil.copytree(args.workspace / "scenarios", ws / "scenarios")
        proc, base = start_server(ws)
        try:
            results = measure(base, args.requests, args.nodelay_client)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"{args.requests} requests each, one kept-alive connection"
          f"{', client TCP_NODELAY' if args.nodelay_client else ''}")
    for kind, ms in results.items():
        print(f"  {kind:32s} median {statistics.median(ms):7.2f} ms"
              f"  ({min(ms):.2f}..{max(ms):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
