"""Starting the reference assistant for a run when nothing answers at the default URL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

from pipeline.core.errors import UserError
from pipeline.core.processes import stop_child


def healthy(base_url: str) -> bool:
    """True when ``GET /api/health`` answers 200."""
    try:
        return httpx.get(base_url.rstrip("/") + "/api/health", timeout=2.0,
                         trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


class ManagedAssistant:
    """The reference assistant as a child process of this run; stopped when the run ends."""

    def __init__(self, base_url: str, workspace: Path):
        parsed = urlparse(base_url)
        if parsed.hostname not in ("127.0.0.1", "localhost") or not parsed.port:
            raise UserError(f"cannot start the reference assistant for {base_url}",
                            fix="start it yourself, or use a http://127.0.0.1:PORT base URL")
        self.base_url = base_url
        self.port = parsed.port
        self.workspace = Path(workspace)
        self.log = self.workspace / ".scenemake" / "assistant" / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait_s: float = 30.0) -> None:
        """Start it and wait until it answers; UserError (with its log) if it does not."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.assistant.server", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workspace", str(self.workspace)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if healthy(self.base_url):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise UserError(f"the reference assistant did not start on {self.base_url}",
                        path=str(self.log), fix="see its log")

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 10 s)."""
        stop_child(self.proc)
