"""Starting the reference assistant for a run when nothing answers at the default URL, and
only when the run has a question to ask."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path
from pipeline.core.processes import stop_child

from .client import AssistantClient, CallResult


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


class OnDemandAssistant:
    """The assistant as a capture reaches it: probed, started (when ``may_start``) and
    connected at the first question, so a resume whose steps are all captured starts
    nothing and opens no connection; it goes straight to the reviews.

    It answers what the capture asks of an :class:`AssistantClient` (``base_url``,
    ``send``, ``session``); :meth:`close` stops what it started.
    """

    def __init__(self, base_url: str, workspace: Path, may_start: bool, timeout_s: float,
                 retries: int, echo: Callable[[str], None] = print):
        self.base_url = base_url.rstrip("/")
        self.workspace = Path(workspace)
        self.may_start = may_start
        self.timeout_s = timeout_s
        self.retries = retries
        self.echo = echo
        self.managed: ManagedAssistant | None = None
        self._client: AssistantClient | None = None

    @property
    def opened(self) -> bool:
        """Whether anything was asked of the assistant (and so it was reached or started)."""
        return self._client is not None

    def client(self) -> AssistantClient:
        """The connected client, starting the reference assistant first when it must."""
        if self._client is None:
            if self.may_start and not healthy(self.base_url):
                managed = ManagedAssistant(self.base_url, self.workspace)
                self.echo(f"starting the reference assistant on {self.base_url} (log "
                          f"{display_path(managed.log)})")
                self.managed = managed  # stopped by close() even if it fails to come up
                managed.start()
            self._client = AssistantClient(self.base_url, timeout_s=self.timeout_s,
                                           retries=self.retries)
        return self._client

    def send(self, session_id: str | None, message: str) -> CallResult:
        """Ask one question (see :meth:`AssistantClient.send`)."""
        return self.client().send(session_id, message)

    def session(self, session_id: str) -> CallResult:
        """The whole session (see :meth:`AssistantClient.session`)."""
        return self.client().session(session_id)

    def close(self) -> None:
        """Close the connection and stop the assistant this run started, if any."""
        try:
            if self._client is not None:
                self._client.close()
        finally:
            if self.managed is not None:
                self.managed.stop()
