"""Request claims: a request being paid for by any process of the workspace is never paid
again (issue 15, item 1b)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.llm.claims import WorkspaceClaims

# One process of a workspace: asks the same requests as its twin, at the same time, through
# a slow offline model (each call takes 150 ms, so the twins overlap on every request).
ASKER = r"""
import sys, time
from pathlib import Path
from pipeline.llm.client import build_client
from pipeline.llm.request import CallContext, LLMRequest

state, order, go = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
client = build_client(state, {"offline_latency_ms": 150})
prompts = [f"scene {i}" for i in range(6)]
if order == "reversed":
    prompts.reverse()
while time.time() < go:  # start together
    time.sleep(0.005)
for p in prompts:
    req = LLMRequest("offline", "offline-1", ({"role": "user", "content": p},),
                     {"max_tokens": 40})
    client.complete(req, CallContext(run=order, task="t"))
"""


def _paid(state: Path) -> list[str]:
    lines = (state / "llm_calls.jsonl").read_text().splitlines()
    return [json.loads(x)["request_hash"] for x in lines if json.loads(x)["cache"] == "miss"]


@pytest.mark.slow
def test_two_processes_pay_each_request_once(tmp_path: Path):
    import time

    state = tmp_path / ".scenemake"
    go = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", ASKER, str(state), order, go],
                              stderr=subprocess.PIPE, text=True)
             for order in ("forward", "forward", "reversed")]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    paid = _paid(state)
    assert len(paid) == 6 and len(set(paid)) == 6  # 18 asks, 6 distinct: 6 paid
    assert list((state / "claims").iterdir()) == []  # every claim ended with its answer


def test_a_dead_holders_claim_is_free(tmp_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom pipeline.llm.claims import WorkspaceClaims\n"
         "with WorkspaceClaims(sys.argv[1]).claim('ab' * 16):\n"
         "    print('held', flush=True); time.sleep(60)\n", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    claims = WorkspaceClaims(tmp_path)
    got = threading.Event()

    def take():
        with claims.claim("ab" * 16):
            got.set()

    waiter = threading.Thread(target=take, daemon=True)
    waiter.start()
    assert not got.wait(0.5)  # the living holder keeps it
    holder.kill()  # kill -9: no clean-up ran
    holder.wait()
    assert got.wait(10)  # the kernel dropped the dead holder's claim
    waiter.join()


def test_a_dead_holders_claim_file_is_swept(tmp_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom pipeline.llm.claims import WorkspaceClaims\n"
         "with WorkspaceClaims(sys.argv[1]).claim(sys.argv[2]):\n"
         "    print('held', flush=True); time.sleep(60)\n", str(tmp_path), "ef" * 16],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    claims = WorkspaceClaims(tmp_path)
    assert claims.sweep() == 0  # a live holder's claim stays
    assert (tmp_path / f"{'ef' * 16}.claim").exists()
    holder.kill()
    holder.wait()
    assert claims.sweep() == 1
    assert list(tmp_path.iterdir()) == []


def test_threads_of_one_process_wait_for_the_holder(tmp_path: Path):
    claims = WorkspaceClaims(tmp_path)
    inside, most = [0], [0]
    lock = threading.Lock()

    def work():
        with claims.claim("cd" * 16):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            threading.Event().wait(0.02)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
