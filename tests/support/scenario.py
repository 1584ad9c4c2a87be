"""Helpers for the scenario-loop and assistant tests: a project copy, the reference
assistant as a real subprocess on 127.0.0.1, and the scenario CLI as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipeline.core.processes import stop_child

REPO = Path(__file__).resolve().parents[2]
PACK = "workspace/scenarios/packs/warehouse_basics.json"
RULES = "workspace/scenarios/assistant_rules.json"


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Assistant:
    """The reference assistant as a subprocess of a test, on a free port."""

    def __init__(self, root: Path, run_id: str = "assistant-stage1-test", delay_ms: float = 0,
                 port: int | None = None):
        self.root = root
        self.run_id = run_id
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.delay_ms = delay_ms
        self.proc: subprocess.Popen | None = None

    def start(self) -> Assistant:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.assistant.server", "--port", str(self.port),
             "--workspace", "workspace", "--run-id", self.run_id,
             "--delay-ms", str(self.delay_ms)],
            cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Waiting for a server to come up is not a timing assertion: give it a minute.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"assistant exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1, trust_env=False).is_success:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("assistant did not start")

    def kill(self) -> None:
        """SIGKILL: no goodbye, as a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        stop_child(self.proc, grace_s=20)

    def ask(self, message: str, session_id: str | None = None) -> httpx.Response:
        return httpx.post(self.url + "/api/assistant/message", trust_env=False, timeout=30,
                          json={"session_id": session_id, "message": message})

    def requests(self) -> list[dict]:
        """Messages this assistant run received (its request log)."""
        log = self.root / "workspace" / ".scenemake" / "assistant" / "requests.jsonl"
        if not log.exists():
            return []
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return [r for r in rows if r["run_id"] == self.run_id]


class Project:
    """A scenemake project copy with the scenario inputs, driven by real commands."""

    def __init__(self, root: Path):
        self.root = root
        self.ws = root / "workspace"
        self.runs = self.ws / "artifacts" / "domain_runs"
        self._assistants: list[Assistant] = []

    def assistant(self, **kw) -> Assistant:
        a = Assistant(self.root, **kw).start()
        self._assistants.append(a)
        return a

    def close(self) -> None:
        for a in self._assistants:
            a.stop()

    def cli_cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pipeline.scenario", *args]

    def cli(self, *args: str, check: bool | None = None, timeout: float = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
        """``python -m pipeline.scenario ARGS`` in the project (``env`` added)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.run(self.cli_cmd(*args), cwd=self.root, capture_output=True,
                              text=True, env=env, timeout=timeout)
        proc.out = proc.stdout + proc.stderr  # type: ignore[attr-defined]
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} -> {proc.returncode}:\n{proc.out}")
        return proc

    def read(self, rel: str | Path) -> dict:
        return json.loads((self.root / rel).read_text())

    def write(self, rel: str, data) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
        return path

    def rules(self, **changes) -> None:
        data = self.read(RULES)
        data.update(changes)
        self.write(RULES, data)

    def calls(self) -> list[dict]:
        log = self.ws / ".scenemake" / "llm_calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def make_project(root: Path) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "workspace" / "scenarios", root / "workspace" / "scenarios")
    shutil.copytree(REPO / "score_specs", root / "score_specs")
    return Project(root)


@pytest.fixture
def sproject(tmp_path: Path):
    project = make_project(tmp_path / "proj")
    yield project
    project.close()


def one_line_error(proc, *needles: str) -> str:
    """The command failed with exactly one stderr line, no traceback, containing needles."""
    assert proc.returncode not in (0, 1), proc.out
    assert "Traceback" not in proc.out, proc.out
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def step_dir(run_dir: Path, scenario: str | None, step: str) -> Path:
    base = run_dir / "scenarios" / scenario if scenario else run_dir
    return base / "steps" / step


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}
