"""A misbehaving assistant for fault tests: 500s, HTML, broken contract, slowness.

It answers by the words in the message: ``BOOM`` -> HTTP 500, ``HTML`` -> 200 with an
HTML body, ``BREAK`` -> 200 JSON without the contract's fields, ``SLOW`` -> a valid answer
after ``slow_s`` seconds, ``FLAKY`` -> 503 the first time, then a valid answer; anything
else -> a valid answer. It counts what it received.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeAssistant:
    """A threaded HTTP server on 127.0.0.1 with scripted faults."""

    def __init__(self, slow_s: float = 3.0):
        self.slow_s = slow_s
        self.received: list[str] = []
        self._flaky_seen: set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json"):
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/api/health":
                    return self._send(200, b'{"status": "ok"}')
                sid = self.path.rsplit("/", 1)[-1]
                self._send(200, json.dumps({"session_id": sid, "turns": []}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                message = body["message"]
                fake.received.append(message)
                if "BOOM" in message:
                    return self._send(500, b'{"error": "database is on fire"}')
                if "HTML" in message:
                    return self._send(200, b"<html><body>Oops</body></html>", "text/html")
                if "BREAK" in message:
                    return self._send(200, b'{"answer": "42"}')
                if "SLOW" in message:
                    time.sleep(fake.slow_s)
                if "FLAKY" in message and message not in fake._flaky_seen:
                    fake._flaky_seen.add(message)
                    return self._send(503, b'{"error": "warming up"}')
                answer = {
                    "session_id": body.get("session_id") or "sfake00000001", "turn": 1,
                    "reply": "42 items are in stock.\n\nData as of 2024-06-30.",
                    "entries": [{"item": "Widget", "on_hand": 42}],
                    "capability": {"status": "answered", "detail": None},
                    "debug": {"route": "fake.route"},
                    "semantic_memory": {"active_result_set_id": "rs-fake-1"},
                }
                self._send(200, json.dumps(answer).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeAssistant:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, word: str) -> int:
        return sum(1 for m in self.received if word in m)
