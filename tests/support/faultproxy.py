"""A loopback HTTP proxy in front of a real OpenAI-compatible server that injects faults.

Each POST takes the next fault from ``faults`` ("" or an empty queue passes it through):
``429``, ``429-ra`` (with Retry-After: 1), ``500``/``502``/``503``, ``400`` (a client
error; its message echoes the request's Authorization header, to prove it is scrubbed),
``reset`` (connection reset), ``timeout`` (no answer for ``hang_s``), ``truncated`` (a body
shorter than its Content-Length, then the connection closes), ``stall`` (an answer that
begins, then nothing more, the socket left open until the client gives up: a streamed
answer's first pieces, or half of a whole answer's body), ``badjson`` (a 200 whose body is
not JSON), ``badcontent`` (a well-formed answer whose content is not valid JSON for the
schema). Faults never reach the upstream, so ``passed`` counts the responses really paid for.

``stream=False`` makes the upstream look like a server that does not stream: requests are
passed on without ``stream``, so each answer comes whole (as application/json) and the
client learns to ask without streaming. ``streamed`` records, per completion request,
whether the client asked for a stream, and ``statuses`` the upstream's answer (0: faulted).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class FaultProxy:
    def __init__(self, upstream: str, hang_s: float = 3.0, stream: bool = True):
        self.upstream = upstream.rstrip("/")  # e.g. http://127.0.0.1:8000/v1
        self.faults: deque[str] = deque()
        self.hang_s = hang_s
        self.stream = stream
        self.passed = 0
        self.seen: list[str] = []
        self.streamed: list[bool] = []
        self.statuses: list[int] = []  # per completion request: the upstream's status, 0 if faulted
        self._closing = threading.Event()  # releases the stalled answers at the end
        self.auth_headers: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                r = httpx.get(proxy.upstream + self.path.removeprefix("/v1"), timeout=30)
                self._send(r.status_code, r.content)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if not self.path.endswith("/chat/completions"):
                    # e.g. /extras/tokenize/count: no fault, not counted as a completion
                    r = httpx.post(proxy.upstream.removesuffix("/v1") + self.path,
                                   content=body, headers={"Content-Type": "application/json"},
                                   timeout=60)
                    self._send(r.status_code, r.content)
                    return
                with proxy._lock:
                    fault = proxy.faults.popleft() if proxy.faults else ""
                    proxy.seen.append(fault or "pass")
                    try:
                        proxy.streamed.append(bool(json.loads(body).get("stream")))
                    except ValueError:
                        proxy.streamed.append(False)
                    proxy.statuses.append(0)
                    index = len(proxy.statuses) - 1
                    proxy.auth_headers.append(self.headers.get("Authorization", ""))
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    self._answer(fault, body, index)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            def _answer(self, fault: str, body: bytes, index: int):
                err = {"error": {"message": f"injected {fault}"}}
                if fault in ("429", "429-ra"):
                    extra = {"Retry-After": "1"} if fault == "429-ra" else {}
                    self._send(429, json.dumps(err).encode(), extra)
                elif fault in ("500", "502", "503"):
                    self._send(int(fault), json.dumps(err).encode())
                elif fault == "400":
                    msg = f"bad request, got header {self.headers.get('Authorization')}"
                    self._send(400, json.dumps({"error": {"message": msg}}).encode())
                elif fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                elif fault == "timeout":
                    time.sleep(proxy.hang_s)
                    self.close_connection = True
                elif fault == "truncated":
                    full = json.dumps({"choices": [{"message": {"content": "{}"}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(full)))
                    self.end_headers()
                    self.wfile.write(full[: len(full) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif fault == "stall":
                    self._stall(body)
                elif fault == "badjson":
                    self._send(200, b"<html>gateway hiccup</html>")
                elif fault == "badcontent":
                    answer = {"choices": [{"message": {"role": "assistant",
                                                       "content": "Sure! Here it is: {"}}],
                              "usage": {"prompt_tokens": 5, "completion_tokens": 5}}
                    self._send(200, json.dumps(answer).encode())
                else:
                    if not proxy.stream:  # a server that does not stream
                        asked = json.loads(body)
                        asked.pop("stream", None)
                        asked.pop("stream_options", None)
                        body = json.dumps(asked).encode()
                    r = httpx.post(proxy.upstream + self.path.removeprefix("/v1"),
                                   content=body, headers={"Content-Type": "application/json"},
                                   timeout=300)
                    with proxy._lock:
                        proxy.statuses[index] = r.status_code
                        if r.status_code == 200:
                            proxy.passed += 1
                    # (a streamed answer is passed on whole, as text/event-stream)
                    self._send(r.status_code, r.content, {"Content-Type": r.headers.get(
                        "content-type", "application/json")})

            def _stall(self, body: bytes):
                """Begin an answer, then say nothing more until the proxy closes."""
                streamed = proxy.stream and bool(json.loads(body).get("stream"))
                self.send_response(200)
                if streamed:
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for word in ("The", " lamp"):
                        chunk = {"choices": [{"index": 0, "delta": {"content": word},
                                              "finish_reason": None}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                else:
                    full = json.dumps({"choices": [{"message": {"content": "{}"}}]}).encode()
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(full)))
                    self.end_headers()
                    self.wfile.write(full[: len(full) // 2])
                self.wfile.flush()
                proxy._closing.wait(600)
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
