"""The ``local`` provider against the real shipped SmolLM2 (llama.cpp's server): a structured
answer, a cache hit the second time, and no server left behind (closed client, process exit,
Ctrl-C, failure). Slow: each case starts a server (~2 s) and asks a real model."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator
from support.parts import require

from pipeline.llm import CallContext, LLMRequest, build_client, read_calls
from pipeline.llm.providers import local
from pipeline.llm.providers.openai import chatml
from pipeline.llm.settings import Endpoint, ModelSettings, apply_env_overrides

pytestmark = [pytest.mark.llama, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"},
                                           "mood": {"enum": ["calm", "wary", "tired"]}},
          "required": ["name", "mood"], "additionalProperties": False}


@pytest.fixture(autouse=True)
def smollm2():
    try:
        spec = importlib.util.find_spec(local.MODEL_PACKAGE)
    except ImportError:
        spec = None
    require(spec is not None, "the SmolLM2 model package", local.INSTALL_MODEL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by a parent that is gone) is not a running server
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _request(model: str, text: str = "Name the lighthouse keeper and say her mood. "
                                     "Answer in JSON.") -> LLMRequest:
    return LLMRequest("local", model, ({"role": "user", "content": text},),
                      {"temperature": 0.7, "max_tokens": 60, "seed": 7}, SCHEMA)


def test_a_structured_request_then_a_cache_hit_then_no_server(monkeypatch, tmp_path):
    monkeypatch.setenv("SCENEMAKE_MODEL", "local")
    model, endpoint = apply_env_overrides(ModelSettings(), Endpoint(), "book.json")
    assert model.model.startswith(local.MODEL_FILE + "@")
    client = build_client(tmp_path, endpoint.model_dump())
    ctx = CallContext(run="example", task="plan:ch001_sc001", unit="ch001_sc001", step="plan")
    first = client.complete(_request(model.model), ctx)
    assert list(Draft202012Validator(SCHEMA).iter_errors(first.data)) == []
    [server] = local._pools[local.default_model_path().resolve()].servers  # -n 1: one
    pid = server.proc.pid
    assert _alive(pid)
    again = client.complete(_request(model.model), ctx)
    assert (first.cache, again.cache) == ("miss", "hit") and again.data == first.data
    calls = read_calls(tmp_path / "llm_calls.jsonl")
    assert [(c["provider"], c["cache"]) for c in calls][-2:] == [("local", "miss"),
                                                                  ("local", "hit")]
    assert calls[-2]["tokens_out"] > 0 and calls[-2]["cost_usd"] == 0.0
    # the prompt counted by the model's own tokenizer (the stream carries no usage)
    counted = httpx.post(server.base_url.removesuffix("/v1") + "/extras/tokenize/count",
                         json={"input": chatml(list(_request(model.model).messages))},
                         timeout=10).json()["count"]
    assert calls[-2]["tokens_in"] == counted
    # a server that dies (killed, out of memory) is replaced on the next request
    os.kill(pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    other = client.complete(_request(model.model, "Name the ferryman and his mood. JSON."), ctx)
    assert other.cache == "miss" and set(other.data) == {"name", "mood"}
    [new] = local._pools[local.default_model_path().resolve()].servers
    new_pid = new.proc.pid
    assert new_pid != pid and _alive(new_pid)
    client.close()
    assert not _alive(new_pid) and local._pools == {} and local._live == set()


SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from pipeline.llm import CallContext, LLMRequest, build_client
    from pipeline.llm.providers import local
    from pipeline.llm.settings import Endpoint, ModelSettings, apply_env_overrides

    os.environ["SCENEMAKE_MODEL"] = "local"
    model, endpoint = apply_env_overrides(ModelSettings(), Endpoint(), "book.json")
    client = build_client(Path(sys.argv[1]), endpoint.model_dump())
    client.complete(LLMRequest("local", model.model, ({"role": "user", "content": "Hi."},),
                               {"max_tokens": 8, "seed": 1}), CallContext(task="t"))
    print(next(iter(local._live)).proc.pid, flush=True)
    how = sys.argv[2]
    if how == "fail":
        raise RuntimeError("a task failed")
    if how == "interrupt":
        time.sleep(120)  # until Ctrl-C
    # "exit": the process ends without closing the client
""")


@pytest.mark.parametrize("how", ["exit", "fail", "interrupt"])
def test_the_server_stops_when_the_process_ends(tmp_path, how):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), how], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline().strip() or 0)
        assert pid, proc.stderr.read()
        if how == "interrupt":
            assert _alive(pid)
            proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 15  # (the server's own shutdown is not instant)
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    # (Python ends an unhandled Ctrl-C by re-raising SIGINT: after atexit ran)
    assert proc.returncode == {"exit": 0, "fail": 1, "interrupt": -signal.SIGINT}[how]
    assert json.loads((tmp_path / "llm_calls.jsonl").read_text())["provider"] == "local"
