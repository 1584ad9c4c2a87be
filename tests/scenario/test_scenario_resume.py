"""A resume that asks nothing starts nothing: with every step of a run captured, the runner
neither starts the reference assistant nor connects to the one it is pointed at, and goes
straight to the reviews and the final status, with the exit code of the first run. A
resume with a step left to ask still starts it."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from support.scenario import free_port, snapshot, sproject  # noqa: F401

pytestmark = pytest.mark.slow  # real subprocesses and servers

SCENARIO = "workspace/scenarios/supplier_overview.json"
SERVER_LOG = "workspace/.scenemake/assistant/server.log"


class Doorbell:
    """A TCP listener on 127.0.0.1 that counts the connections made to it (and drops them,
    so a runner that did ask would fail its steps)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.rings = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.rings += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def doorbell():
    bell = Doorbell()
    yield bell
    bell.close()


def _final(run) -> dict:
    return json.loads((run / "scenario_state.json").read_text())


def test_a_fully_captured_run_resumes_without_the_assistant(sproject, doorbell):  # noqa: F811
    a = sproject.assistant()
    args = ("run-scenario", "--scenario", SCENARIO)
    first = sproject.cli(*args, "--base-url", a.url)
    assert first.returncode == 0, first.out
    a.stop()
    run = sproject.runs / "scenario-supplier_overview"
    steps = snapshot(run / "steps")

    # pointed at a server: no connection is opened, not even a health probe
    again = sproject.cli(*args, "--base-url", doorbell.url)
    assert again.returncode == first.returncode, again.out
    assert doorbell.rings == 0
    assert "asked 0, resumed 3" in again.out and f"nothing to ask: {doorbell.url}" in again.out
    assert "reviews: 0 ran, 3 up to date" in again.out
    assert _final(run)["final_status"] == "accepted"
    assert snapshot(run / "steps") == steps

    # told to start the reference assistant on a free port: it is never started
    url = f"http://127.0.0.1:{free_port()}"
    started = sproject.cli(*args, "--base-url", url, "--start-assistant")
    assert started.returncode == first.returncode, started.out
    assert "starting the reference assistant" not in started.out
    assert not (sproject.root / SERVER_LOG).exists()
    assert "asked 0, resumed 3" in started.out
    assert snapshot(run / "steps") == steps


def test_a_finished_run_that_failed_its_gate_keeps_exit_1(sproject, doorbell):  # noqa: F811
    a = sproject.assistant()
    question = ("--question", "What will demand be next quarter?", "--run-id", "case-demand")
    first = sproject.cli("run-case", *question, "--base-url", a.url)
    assert first.returncode == 1, first.out
    assert "final status: needs_exact_capability" in first.out
    a.stop()

    again = sproject.cli("run-case", *question, "--base-url", doorbell.url)
    assert again.returncode == 1, again.out
    assert doorbell.rings == 0
    assert "final status: needs_exact_capability" in again.out
    assert "asked 0, resumed 1" in again.out


def test_a_resume_with_a_step_left_to_ask_starts_the_assistant(sproject, doorbell):  # noqa: F811
    args = ("run-scenario", "--scenario", SCENARIO, "--retries", "0")
    # nothing answers: every step is blocked, none is finished
    first = sproject.cli(*args, "--base-url", doorbell.url)
    assert first.returncode == 1, first.out
    assert doorbell.rings >= 1
    run = sproject.runs / "scenario-supplier_overview"
    assert _final(run)["final_status"] == "blocked"

    url = f"http://127.0.0.1:{free_port()}"
    again = sproject.cli(*args, "--base-url", url, "--start-assistant")
    assert again.returncode == 0, again.out
    assert "starting the reference assistant" in again.out
    assert (sproject.root / SERVER_LOG).exists()
    assert "asked 3, resumed 0" in again.out and "nothing to ask" not in again.out
    assert _final(run)["final_status"] == "accepted"
