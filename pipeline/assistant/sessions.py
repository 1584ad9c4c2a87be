"""Assistant sessions, saved to disk the way a GUI run saves them.

A run (one assistant process, or several with the same ``--run-id``) is
``assistant-stage1-<id>``. Each session is written after every turn to
``<runs_dir>/llm_normalizer/data/assistant_sessions/<run_id>-<session_id>.json`` and the
run's readable report to ``<runs_dir>/llm_normalizer/reports/<run_id>.md``; the review
bridge reads exactly these. A session the process does not know is reloaded from its
file, so a restarted assistant continues a conversation where it stopped.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.core.clock import now_iso
from pipeline.core.jsonio import load_json
from pipeline.core.store import atomic_write_json, atomic_write_text

RUN_PREFIX = "assistant-stage1-"
RUN_ID_RE = re.compile(r"^assistant-stage1-[A-Za-z0-9][A-Za-z0-9_.]*(?:-[A-Za-z0-9_.]+)*$")
SESSION_ID_RE = re.compile(r"^s[0-9a-f]{12}$")


def sessions_dir(runs_dir: Path) -> Path:
    """Where session JSON files live under a runs root."""
    return Path(runs_dir) / "llm_normalizer" / "data" / "assistant_sessions"


def reports_dir(runs_dir: Path) -> Path:
    """Where run reports live under a runs root."""
    return Path(runs_dir) / "llm_normalizer" / "reports"


def new_run_id() -> str:
    """A fresh run id: ``assistant-stage1-<UTC date-time>-<4 hex>``."""
    return f"{RUN_PREFIX}{time.strftime('%Y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(2)}"


def normalize_run_id(value: str) -> str:
    """``x`` or ``assistant-stage1-x`` -> ``assistant-stage1-x``; ValueError when malformed."""
    run_id = value if value.startswith(RUN_PREFIX) else RUN_PREFIX + value
    if not RUN_ID_RE.match(run_id):
        raise ValueError(f"not a run id: {value!r} (expected assistant-stage1-<letters, "
                         f"digits, '.', '_' or '-'>)")
    return run_id


def session_order(session: dict) -> tuple:
    """Sort key: sessions in the order they were started."""
    return (str(session.get("created_at", "")), int(session.get("created_ns") or 0),
            str(session.get("session_id", "")))


def render_report(run_id: str, sessions: list[dict]) -> str:
    """The run's readable report: every session's questions and visible answers."""
    lines = [f"# Assistant run {run_id}", "",
             f"Sessions: {len(sessions)}; turns: {sum(len(s['turns']) for s in sessions)}.", ""]
    for s in sessions:
        lines += [f"## Session {s['session_id']}", "", f"Started {s['created_at']}.", ""]
        for t in s["turns"]:
            lines += [f"### Turn {t['turn']}", "", f"**User:** {t['message']}", "",
                      "**Assistant:**", "", t["reply"], ""]
    return "\n".join(lines)


class SessionStore:
    """Sessions of one run, in memory and on disk; thread-safe."""

    def __init__(self, runs_dir: Path, run_id: str):
        self.runs_dir = Path(runs_dir)
        self.run_id = run_id
        self._sessions: dict[str, dict] = {}
        self._lock = threading.RLock()

    def session_path(self, session: dict) -> Path:
        return sessions_dir(self.runs_dir) / f"{session['run_id']}-{session['session_id']}.json"

    def create(self) -> dict:
        """A new empty session of this run."""
        with self._lock:
            session_id = "s" + secrets.token_hex(6)
            session: dict[str, Any] = {
                "run_id": self.run_id, "session_id": session_id, "created_at": now_iso(),
                "created_ns": time.time_ns(),  # orders sessions started within one second
                "updated_at": now_iso(), "turns": [], "result_sets": {},
                "semantic_memory": {"active_result_set_id": None},
            }
            self._sessions[session_id] = session
            return session

    def get(self, session_id: str) -> dict | None:
        """The session, from memory or reloaded from its saved file; None when unknown."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None and SESSION_ID_RE.match(session_id):
                session = self._load(session_id)
                if session is not None:
                    self._sessions[session_id] = session
            return session

    def _load(self, session_id: str) -> dict | None:
        for path in sorted(sessions_dir(self.runs_dir).glob(f"*-{session_id}.json")):
            try:
                data = load_json(path)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("session_id") == session_id:
                return data
        return None

    def save(self, session: dict) -> None:
        """Write the session file, then rewrite its run's report (both atomically)."""
        with self._lock:
            session["updated_at"] = now_iso()
            atomic_write_json(self.session_path(session), session)
            run_id = session["run_id"]
            runs = []
            for path in sorted(sessions_dir(self.runs_dir).glob(f"{run_id}-s*.json")):
                try:
                    data = load_json(path)
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict) and data.get("run_id") == run_id:
                    runs.append(data)
            runs.sort(key=session_order)
            atomic_write_text(reports_dir(self.runs_dir) / f"{run_id}.md",
                              render_report(run_id, runs))
