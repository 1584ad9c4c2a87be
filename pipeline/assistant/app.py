"""The reference assistant: a plain ASGI app (no web framework) over the warehouse domain.

Routes:
- ``POST /api/assistant/message`` ``{"session_id": str|null, "message": str}``
- ``GET /api/assistant/session/{session_id}``
- ``GET /api/health``

Answers follow ``pipeline/schemas/assistant_api.json``. Every error is a JSON object
``{"error": "..."}`` with a 4xx/5xx status, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema.exceptions import best_match

from pipeline.core.clock import now_iso
from pipeline.core.errors import UserError
from pipeline.core.store import append_line
from pipeline.llm import CallContext, LLMRequest, build_client

from .answers import Router, default_wording, layout, wording_schema
from .contract import contract_validator
from .domain import Warehouse
from .rules import AnswerRules, load_rules
from .sessions import SessionStore

MAX_BODY = 64 * 1024
_WORDING_SYSTEM = (
    "You choose the wording of a warehouse assistant's answer. The facts are fixed and "
    "already written; never change them. Pick a heading for the detail lines and one "
    "closing offer that fits the question. Answer with JSON only."
)


@dataclass
class AssistantConfig:
    """Where the assistant keeps its state and reads its rules."""

    workspace: Path
    runs_dir: Path
    rules_path: Path | None
    run_id: str
    delay_ms: float = 0.0

    @property
    def request_log(self) -> Path:
        return self.workspace / ".scenemake" / "assistant" / "requests.jsonl"


class HttpError(Exception):
    """An error answer: status code and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Assistant:
    """The service behind the routes; one lock serialises turns (sessions are stateful)."""

    def __init__(self, config: AssistantConfig):
        self.config = config
        self.warehouse = Warehouse()
        self.router = Router(self.warehouse)
        self.sessions = SessionStore(config.runs_dir, config.run_id)
        self._request_check = contract_validator("message_request")
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    # -- routes -----------------------------------------------------------------------
    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """(status, JSON body) for one HTTP request."""
        try:
            if path == "/api/health" and method == "GET":
                return 200, {"status": "ok", "run_id": self.config.run_id,
                             "data_as_of": self.warehouse.data_as_of}
            if path == "/api/assistant/message":
                if method != "POST":
                    raise HttpError(405, "use POST")
                return 200, self.message(self._json_body(body))
            prefix = "/api/assistant/session/"
            if path.startswith(prefix):
                if method != "GET":
                    raise HttpError(405, "use GET")
                return 200, self.session(path[len(prefix):])
            raise HttpError(404, f"no route {method} {path}")
        except HttpError as exc:
            return exc.status, {"error": exc.message}
        except UserError as exc:  # e.g. a broken rules file: the operator must fix it
            return 500, {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a server answers, it does not crash
            return 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}

    def _json_body(self, body: bytes) -> dict:
        try:
            data = json.loads(body.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(400, f"body is not JSON: {exc}") from None
        error = best_match(self._request_check.iter_errors(data))
        if error is not None:
            raise HttpError(400, f"{error.json_path}: {error.message}")
        return data

    def session(self, session_id: str) -> dict:
        """The whole session (GET)."""
        with self._lock:
            session = self.sessions.get(session_id)
            if session is None:
                raise HttpError(404, f"unknown session {session_id!r}")
            return json.loads(json.dumps(session))

    def message(self, body: dict) -> dict:
        """Answer one message within its session (POST)."""
        session_id = body.get("session_id")
        append_line(self.config.request_log, json.dumps(
            {"run_id": self.config.run_id, "session_id": session_id,
             "message": body["message"], "received_at": now_iso()}, ensure_ascii=False))
        if self.config.delay_ms > 0:
            time.sleep(self.config.delay_ms / 1000)  # a slow backend, for fault drills
        rules = load_rules(self.config.rules_path)
        with self._lock:
            if session_id:
                session = self.sessions.get(session_id)
                if session is None:
                    raise HttpError(404, f"unknown session {session_id!r}")
            else:
                session = self.sessions.create()
            return self._turn(session, body["message"], rules)

    # -- one turn -----------------------------------------------------------------------
    def _turn(self, session: dict, question: str, rules: AnswerRules) -> dict:
        started = time.perf_counter()
        answer = self.router.answer(question, session)
        turn_no = len(session["turns"]) + 1
        memory = dict(session.get("semantic_memory") or {})
        result_set_id = None
        if answer.kind and answer.capability == "answered":
            result_set_id = f"rs-{session['session_id'][1:7]}-{turn_no}"
            session["result_sets"][result_set_id] = {
                "kind": answer.kind, "route": answer.route, "turn": turn_no,
                "skus": answer.skus, "supplier_ids": answer.supplier_ids,
                "count": len(answer.entries)}
            memory.update(active_result_set_id=result_set_id, active_result_kind=answer.kind,
                          active_items=answer.skus)
        memory.update(last_route=answer.route, data_as_of=self.warehouse.data_as_of,
                      turns=turn_no)
        wording, llm_debug = self._wording(answer, question, rules, session["session_id"])
        reply = layout(answer, rules, wording, self.warehouse.data_as_of, result_set_id)
        debug = {"route": answer.route, "route_id": answer.route_id,
                 "targets_from": answer.targets_from, "targets": answer.skus,
                 "result_set_id": result_set_id, "llm": llm_debug,
                 "elapsed_ms": round((time.perf_counter() - started) * 1000, 1)}
        capability = {"status": answer.capability, "detail": answer.detail}
        session["semantic_memory"] = memory
        session["turns"].append({
            "turn": turn_no, "at": now_iso(), "message": question, "reply": reply,
            "entries": answer.entries, "capability": capability, "debug": debug,
            "semantic_memory": memory})
        self.sessions.save(session)
        return {
            "session_id": session["session_id"], "turn": turn_no, "reply": reply,
            "entries": answer.entries,
            "result": {"result_set_id": result_set_id, "kind": answer.kind,
                       "count": len(answer.entries)},
            "capability": capability, "debug": debug, "semantic_memory": memory,
            "data_as_of": self.warehouse.data_as_of,
        }

    def _client(self, rules: AnswerRules):
        key = rules.endpoint.model_dump_json()
        client = self._clients.get(key)
        if client is None:
            client = build_client(self.config.workspace / ".scenemake",
                                  rules.endpoint.model_dump(), {}, None)
            self._clients[key] = client
        return client

    def _wording(self, answer, question: str, rules: AnswerRules,
                 session_id: str) -> tuple[dict, dict]:
        """The LLM's wording choice, or the default wording if it cannot answer."""
        m = rules.model
        request = LLMRequest(
            provider=m.provider, model=m.model,
            messages=({"role": "system", "content": _WORDING_SYSTEM},
                      {"role": "user", "content": f"Question: {question}\n"
                                                  f"Answer (fixed): {answer.direct}"}),
            params={"temperature": m.temperature, "max_tokens": m.max_tokens, "seed": m.seed},
            output_schema=wording_schema(answer.kind))
        ctx = CallContext(run="assistant", task=f"assistant:{self.config.run_id}",
                          unit=session_id, step=answer.route)
        try:
            response = self._client(rules).complete(request, ctx)
        except UserError as exc:
            return default_wording(answer.kind), {"error": str(exc)}
        return response.data, {"request_hash": response.request_hash, "cache": response.cache,
                               "provider": response.provider, "model": response.model}


def make_app(config: AssistantConfig):
    """The ASGI application for ``config``."""
    assistant = Assistant(config)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        too_big = False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                too_big = True
            if not message.get("more_body"):
                break
        if too_big:
            status, payload = 413, {"error": f"body larger than {MAX_BODY} bytes"}
        else:
            # Sessions, SQLite and the LLM client are blocking: keep the event loop free.
            status, payload = await asyncio.to_thread(
                assistant.handle, scope["method"], scope["path"], body)
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json; charset=utf-8"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    app.assistant = assistant  # type: ignore[attr-defined]
    return app
