"""``scenemake-assistant``: run the reference assistant on 127.0.0.1 with uvicorn.

    scenemake-assistant --port 8765 --workspace workspace --run-id assistant-stage1-demo
    python -m pipeline.assistant.server --port 0   # any free port, printed on start

Sessions are saved under ``--runs-dir`` (default: the workspace) as a GUI run would save
them; answer rules are read from ``--rules`` (default
``<workspace>/scenarios/assistant_rules.json``) on every request.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from pipeline.core.cli import Cli

from .app import AssistantConfig, make_app
from .sessions import new_run_id, normalize_run_id

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scenemake-assistant",
                                description="The reference assistant (warehouse domain).")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--workspace", type=Path, default=Path("workspace"),
                   help="workspace root: LLM cache and call log, rules (default workspace)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="root of the GUI-style saves llm_normalizer/... (default: workspace)")
    p.add_argument("--rules", type=Path, default=None,
                   help="answer rules JSON (default <workspace>/scenarios/assistant_rules.json)")
    p.add_argument("--run-id", default=None,
                   help="run id assistant-stage1-<id> (default: a new one per start)")
    p.add_argument("--delay-ms", type=float, default=0.0,
                   help="answer every message this much later (simulates a slow backend)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level")
    return p.parse_args(argv)


def listening_socket() -> socket.socket:
    """The server's TCP socket, with Nagle's algorithm off for every connection.

    asyncio turns Nagle off only on sockets whose ``proto`` is IPPROTO_TCP; a socket made
    with ``proto`` 0 (the default) kept it on, and the server writes a response in two
    pieces (head, then body): the body waited for the client's delayed ACK of the head,
    about 40 ms per request on a kept-alive connection. Linux hands TCP_NODELAY from the
    listening socket down to the connections it accepts.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


CLI = Cli(interrupted_message="assistant stopped")


def main(argv: list[str] | None = None) -> int:
    """Start the assistant and serve until interrupted (bad input: one line, exit 2; a bug:
    one line and its traceback in ``<workspace>/.scenemake/assistant/last_error.txt``, 3)."""
    return CLI.main(lambda: parse_args(argv), _serve,
                    traceback_dir=lambda args: args.workspace / ".scenemake" / "assistant")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    try:
        run_id = normalize_run_id(args.run_id) if args.run_id else new_run_id()
    except ValueError as exc:
        print(f"error: --run-id: {exc}", file=sys.stderr)
        return 2
    workspace = args.workspace
    config = AssistantConfig(
        workspace=workspace, runs_dir=args.runs_dir or workspace,
        rules_path=args.rules or workspace / "scenarios" / "assistant_rules.json",
        run_id=run_id, delay_ms=args.delay_ms)
    sock = listening_socket()
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}",
              file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    app = make_app(config)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, lifespan="on",
                                           access_log=False))
    print(f"assistant {run_id} listening on http://{args.host}:{port}", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
