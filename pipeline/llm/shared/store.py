"""The response cache, the call log, request claims and a run's budget on PostgreSQL.

A request is paid for only under its claim: a row ``llm_claims(request_hash, owner,
lease_until)`` inserted if absent (or taken over once its lease has expired, on the
server's clock). The holder's heartbeat thread extends the lease; whoever else needs the
request waits until the row is gone, then finds the answer in ``llm_responses``: it LISTENs
on one channel, and the release NOTIFYs it in the same transaction, so a waiter wakes when
the answer commits; it also looks again every ``poll_s`` (a lease that ran out, or a server
that does not pass notifications on, as a transaction-pooling proxy). No row lock is held
while the model answers: the claim is a row, not a lock.

What a holder stores while it holds the claim (answers, call-log lines) is kept in memory and
committed in ONE short transaction with the claim's release, so another machine sees either
nothing (and waits) or the answer and what it cost, never the claim gone without the answer.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import cpu_turn
from pipeline.core.hashing import hash_json
from pipeline.core.jsonio import load_json
from pipeline.core.lock import pid_alive
from pipeline.core.store import append_line

from ..budget import Budget, BudgetExceeded
from ..cache import _HASH_RE, CachedResponse, ResponseCache
from ..calllog import CallLog
from ..claims import ThreadTurns
from ..request import CallContext
from .connection import Connector, SharedCacheError


@dataclass
class _Held:
    """A claim this thread holds, and what it will commit on release."""

    request_hash: str
    responses: list[tuple[str, str, dict]] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)


# The release of a claim notifies this channel with the request hash as the payload.
CHANNEL = "scenemake_claims"


class PgClaims:
    """Request claims shared by every machine on one database.

    The same interface as the workspace claims (``claim(request_hash)`` as a context
    manager): held for the ``with`` block; while another owner holds it, the caller waits for
    its release or for its lease to expire (``lease_s``, renewed every ``heartbeat_s``).
    """

    def __init__(self, db: Connector, owner: str, lease_s: float = 60.0,
                 heartbeat_s: float = 10.0, poll_s: float = 0.1, run: str | None = None,
                 spool: Path | None = None):
        if not 0 < heartbeat_s < lease_s:
            raise ValueError("claims need 0 < heartbeat_s < lease_s")
        self.db = db
        self.owner = owner
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.run = run
        self.spool = spool
        self._local = threading.local()
        self._guard = threading.Lock()
        self._turns = ThreadTurns()  # threads of this process wanting the same request
        self._held: set[str] = set()
        self._beat: threading.Thread | None = None
        self._beat_db = Connector(db.url)
        self._listen_db = Connector(db.url)  # a waiting thread's LISTENing connection

    # -- what the cache, the call log and the budget ask

    def current(self) -> _Held | None:
        """The claim this thread holds, if any."""
        return getattr(self._local, "held", None)

    # -- the interface

    @contextmanager
    def claim(self, request_hash: str) -> Iterator[None]:
        """Hold the claim on ``request_hash`` for the ``with`` block (see the class)."""
        if not _HASH_RE.fullmatch(request_hash):
            raise ValueError(f"not a request hash: {request_hash!r}")
        mine = self.current()
        if mine is not None and mine.request_hash == request_hash:
            yield  # this thread holds it already (the client may claim at two levels)
            return
        with self._turns.turn(request_hash):
            self._take(request_hash)
            held = _Held(request_hash)
            self._local.held = held
            try:
                yield
            finally:
                self._local.held = None
                with self._guard:
                    self._held.discard(request_hash)
                self._release(held)

    # -- steps

    def _take(self, request_hash: str) -> None:
        sql = ("INSERT INTO llm_claims (request_hash, owner, run, lease_until) "
               "VALUES (%s, %s, %s, now() + make_interval(secs => %s)) "
               "ON CONFLICT (request_hash) DO UPDATE SET owner = excluded.owner, "
               "run = excluded.run, reserved_usd = 0, claimed_at = now(), "
               "lease_until = excluded.lease_until "
               "WHERE llm_claims.lease_until < now() RETURNING owner")
        args = (request_hash, self.owner, self.run, self.lease_s)
        while True:
            row = self.db.run("claim a request",
                              lambda conn: conn.execute(sql, args).fetchone())
            if row is not None:
                with self._guard:
                    self._held.add(request_hash)
                self._start_heartbeat()
                return
            with cpu_turn.waiting():  # another machine is paying for it right now
                self._wait(request_hash)

    def _wait(self, request_hash: str) -> None:
        """Until the release of ``request_hash`` commits (its notification) or ``poll_s``
        passes. Never fails: without notifications this is the poll."""
        try:
            conn = self._listen_db.connection()
            if getattr(self._local, "listening", None) is not conn:
                conn.execute(f"LISTEN {CHANNEL}")
                self._local.listening = conn
                return  # a release just before the LISTEN sent nothing to us: look again now
            deadline = time.monotonic() + self.poll_s
            while (left := deadline - time.monotonic()) > 0:
                # others' releases wake us too (one channel): keep waiting for ours
                notes = conn.notifies(timeout=left, stop_after=1)
                try:
                    if any(note.payload == request_hash for note in notes):
                        return
                finally:
                    notes.close()  # the ones not read yet stay queued for the next wait
        except Exception:  # noqa: BLE001 - the claim's own query reports a dead server
            self._local.listening = None
            self._listen_db._drop()
            time.sleep(self.poll_s)

    def _release(self, held: _Held) -> None:
        def commit(conn: Any) -> None:
            with conn.transaction():
                with conn.cursor() as cur:
                    if held.responses:
                        cur.executemany(_PUT_SQL, [(h, req, json.dumps(resp), self.owner)
                                                   for h, req, resp in held.responses])
                    if held.calls:
                        cur.executemany(_CALL_SQL, held.calls)
                    cur.execute("DELETE FROM llm_claims WHERE request_hash = %s AND owner = %s",
                                (held.request_hash, self.owner))
                    # delivered at the commit, with the answer: the waiters look again now
                    cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, held.request_hash))

        try:
            self.db.run("store the answer and release its claim", commit)
        except SharedCacheError:
            # The server went away after the model answered: keep what was paid for on this
            # disk; the next run uploads it before asking anything (see upload_spool).
            if self.spool is not None:
                write_spool(self.spool, held.responses, held.calls)
            raise

    def reserve(self, amount: float) -> None:
        """Add ``amount`` to this thread's claim's budget reservation."""
        held = self.current()
        if held is None:
            return
        self.db.run("reserve budget", lambda conn: conn.execute(
            "UPDATE llm_claims SET reserved_usd = greatest(reserved_usd + %s, 0) "
            "WHERE request_hash = %s AND owner = %s", (amount, held.request_hash, self.owner)))

    def _start_heartbeat(self) -> None:
        with self._guard:
            if self._beat is not None and self._beat.is_alive():
                return
            self._beat = threading.Thread(target=self._heartbeat, name="scenemake-claims",
                                          daemon=True)
            self._beat.start()

    def _heartbeat(self) -> None:
        # Renews every claim this process holds; a failure here surfaces at the release.
        while True:
            time.sleep(self.heartbeat_s)
            with self._guard:
                held = sorted(self._held)
            if not held:
                continue
            try:
                self._beat_db.run("renew claims", lambda conn, held=held: conn.execute(
                    "UPDATE llm_claims SET lease_until = now() + make_interval(secs => %s) "
                    "WHERE owner = %s AND request_hash = ANY(%s)",
                    (self.lease_s, self.owner, held)))
            except Exception:  # noqa: BLE001 - the holder's own release reports the outage
                pass


_PUT_SQL = ("INSERT INTO llm_responses (request_hash, request, response, machine) "
            "VALUES (%s, %s, %s::jsonb, %s) ON CONFLICT (request_hash) DO UPDATE SET "
            "request = excluded.request, response = excluded.response, "
            "machine = excluded.machine, stored_at = now()")

_CALL_COLUMNS = ("machine", "run", "book", "task", "scene", "phase", "request_hash", "cache",
                 "provider", "model", "tokens_in", "tokens_out", "cost_usd", "cost_avoided_usd",
                 "latency_ms", "attempt", "try", "at")
_CALL_SQL = (f"INSERT INTO llm_calls ({', '.join(_CALL_COLUMNS)}) VALUES "
             f"({', '.join(['%(' + c + ')s' for c in _CALL_COLUMNS])})")


class PgResponseCache:
    """``llm_responses``: the same ``get``/``put`` as the file cache, shared by every machine.

    An answer is validated before it is stored (its request re-hashes to its address, the
    response has every field), and again when read: a row that does not match is a miss.
    """

    def __init__(self, db: Connector, claims: PgClaims, machine: str):
        self.db = db
        self.claims = claims
        self.machine = machine

    def get(self, request_hash: str) -> CachedResponse | None:
        """The stored answer, or None when absent or not for this hash."""
        if not _HASH_RE.fullmatch(request_hash):
            raise ValueError(f"not a request hash: {request_hash!r}")
        row = self.db.run("read a cached answer", lambda conn: conn.execute(
            "SELECT request, response FROM llm_responses WHERE request_hash = %s",
            (request_hash,)).fetchone())
        if row is None:
            return None
        try:
            if hash_json(json.loads(row[0])) != request_hash:
                return None
            return CachedResponse.from_json(row[1])
        except ValueError:
            return None

    def put(self, request_hash: str, request: dict, response: CachedResponse) -> None:
        """Store ``response`` (with its claim's release when this thread holds one)."""
        if not _HASH_RE.fullmatch(request_hash) or hash_json(request) != request_hash:
            raise ValueError(f"request does not hash to {request_hash!r}: not stored")
        body = CachedResponse.from_json(response.to_json()).to_json()  # every field, typed
        entry = (request_hash, json.dumps(request, ensure_ascii=False, sort_keys=True), body)
        held = self.claims.current()
        if held is not None:
            held.responses.append(entry)
            return
        self.db.run("store an answer", lambda conn: conn.execute(
            _PUT_SQL, (entry[0], entry[1], json.dumps(body), self.machine)))


class PgCallLog(CallLog):
    """The call log as the table ``llm_calls`` (and, as before, this machine's JSONL file).

    A line written under a claim commits with that claim's release; a hit's line at once.
    """

    def __init__(self, path: str | Path, db: Connector, claims: PgClaims, machine: str,
                 run: str | None):
        super().__init__(path)
        self.db = db
        self.claims = claims
        self.machine = machine
        self.run = run

    def record(self, ctx: CallContext, **fields: Any) -> dict:
        """Append the line locally, then to the table (see the class)."""
        line = super().record(ctx, **fields)
        row = {c: line.get(c) for c in _CALL_COLUMNS}
        row.update(machine=self.machine, run=self.run, at=line["timestamp"])
        held = self.claims.current()
        if held is not None:
            held.calls.append(row)
        else:
            self.db.run("write the call log", lambda conn: conn.execute(_CALL_SQL, row))
        return line


class SharedBudget(Budget):
    """``max_cost_usd`` for every machine of the run named by ``SCENEMAKE_RUN``.

    Spent = the run's paid calls in ``llm_calls``; reserved = the worst cases of calls in
    flight, kept on their claims (so a dead machine's reservation ends with its lease).
    Checking and reserving happen under a transaction-scoped advisory lock per run.
    """

    def __init__(self, max_cost_usd: float | None, db: Connector, claims: PgClaims, run: str):
        super().__init__(max_cost_usd)
        self.db = db
        self.claims = claims
        self.run = run

    def reserve(self, estimate: float, task: str) -> float:
        """Reserve ``estimate`` dollars of the run's budget or raise BudgetExceeded."""
        held = self.claims.current()
        if self.max_cost_usd is None or held is None:
            return super().reserve(estimate, task)
        cap = self.max_cost_usd

        def check(conn: Any) -> float | None:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                             ("scenemake-budget:" + self.run,))
                spent = conn.execute(
                    "SELECT coalesce(sum(cost_usd), 0) FROM llm_calls WHERE run = %s",
                    (self.run,)).fetchone()[0]
                reserved = conn.execute(
                    "SELECT coalesce(sum(reserved_usd), 0) FROM llm_claims "
                    "WHERE run = %s AND lease_until > now()", (self.run,)).fetchone()[0]
                if spent + reserved + estimate > cap + 1e-12:
                    return spent
                conn.execute("UPDATE llm_claims SET reserved_usd = reserved_usd + %s "
                             "WHERE request_hash = %s AND owner = %s",
                             (estimate, held.request_hash, self.claims.owner))
                return None

        spent = self.db.run("reserve budget", check)
        if spent is not None:
            raise BudgetExceeded(
                f"budget: ${spent:.4f} of ${cap:.4f} spent in run '{self.run}' (all machines); "
                f"the next call ({task or '?'}, up to ${estimate:.4f}) could exceed it. Nothing "
                "was lost", fix="run again to resume, or raise budget=... / max_cost_usd")
        with self._lock:
            self.reserved += estimate
        return estimate

    def settle(self, reserved: float, actual: float) -> None:
        """Replace the reservation by the real cost, held on the claim until its log line
        commits with the claim's release (so no machine ever sees it in neither place)."""
        super().settle(reserved, actual)
        if self.max_cost_usd is not None:
            self.claims.reserve(actual - reserved)


def machine_name(workspace_root: Path) -> str:
    """Who this is in the shared log: ``SCENEMAKE_MACHINE``, else host and workspace."""
    return (os.environ.get("SCENEMAKE_MACHINE")
            or f"{socket.gethostname()}:{Path(workspace_root).resolve()}")


def new_owner(machine: str) -> str:
    """A claim owner unique to this process."""
    return f"{machine}#{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_spool(spool: Path, responses: list[tuple[str, str, dict]], calls: list[dict]) -> None:
    """Keep answers and call lines that could not be committed, under ``spool``."""
    cache = ResponseCache(spool / "responses")
    for request_hash, request, response in responses:
        cache.put(request_hash, json.loads(request), CachedResponse.from_json(response))
    for row in calls:
        append_line(spool / "calls.jsonl", json.dumps(row, ensure_ascii=False))


def upload_spool(db: Connector, spool: Path, machine: str) -> int:
    """Commit what an earlier run kept in ``spool`` (answers checked again); returns how many
    answers. Call lines are taken by renaming their file first, so two runs never upload
    the same lines twice."""
    if not spool.is_dir():
        return 0
    entries = []
    cache = ResponseCache(spool / "responses")
    files = sorted((spool / "responses").glob("*/*.json"))
    for path in files:
        request_hash = path.stem
        found = cache.get(request_hash) if _HASH_RE.fullmatch(request_hash) else None
        if found is not None:
            request = load_json(path)["request"]
            entries.append((request_hash, json.dumps(request, ensure_ascii=False,
                                                     sort_keys=True),
                            json.dumps(found.to_json()), machine))
    calls: list[dict] = []
    taken = spool / f"calls.{os.getpid()}.uploading"
    try:
        os.rename(spool / "calls.jsonl", taken)
    except FileNotFoundError:
        taken = None  # type: ignore[assignment]
    if taken is not None:
        for line in taken.read_text(encoding="utf-8").splitlines():
            try:
                calls.append(json.loads(line))
            except ValueError:
                continue  # a line cut by the crash: its answer is still uploaded

    def commit(conn: Any) -> None:
        with conn.transaction(), conn.cursor() as cur:
            if entries:
                cur.executemany(_PUT_SQL.split(" ON CONFLICT")[0]
                                + " ON CONFLICT (request_hash) DO NOTHING", entries)
            if calls:
                cur.executemany(_CALL_SQL, calls)

    db.run("upload answers kept while the server was away", commit)
    for path in files:
        path.unlink(missing_ok=True)
    if taken is not None:
        taken.unlink(missing_ok=True)
    return len(entries)


def drop_dead_claims(db: Connector, machine: str) -> None:
    """Release claims left by processes of this machine that are gone (no lease to wait)."""
    owners = db.run("list this machine's claims", lambda conn: conn.execute(
        "SELECT DISTINCT owner FROM llm_claims WHERE starts_with(owner, %s)",
        (machine + "#",)).fetchall())
    for (owner,) in owners:
        pid = owner[len(machine) + 1:].partition("-")[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        db.run("release a dead process's claims", lambda conn, o=owner: conn.execute(
            "WITH gone AS (DELETE FROM llm_claims WHERE owner = %s RETURNING request_hash) "
            "SELECT pg_notify(%s, request_hash) FROM gone", (o, CHANNEL)))
