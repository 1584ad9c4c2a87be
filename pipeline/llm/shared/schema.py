"""The shared cache's schema, as ordered migrations recorded in ``scenemake_migrations``.

They run on the one migration helper (``pipeline/core/migrations.py``, as the build DB's do):
a name per step, applied once, in order, each in the transaction that records it. Two
machines starting at once migrate one after the other (the helper locks the record table),
and a database migrated by a newer scenemake is refused rather than used half-understood.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.core.migrations import Migrations, NewerDatabase

from .connection import Connector, SharedCacheError

# Never edit a step once released: add a new one.
_STEPS: list[tuple[str, str]] = [
    ("001_responses", """
        CREATE TABLE llm_responses (
            request_hash text PRIMARY KEY,
            request      text NOT NULL,        -- canonical JSON, re-hashed on every read
            response     jsonb NOT NULL,
            machine      text NOT NULL,
            stored_at    timestamptz NOT NULL DEFAULT now())"""),
    ("002_calls", """
        CREATE TABLE llm_calls (
            id               bigserial PRIMARY KEY,
            machine          text NOT NULL,
            run              text,
            book             text,
            task             text,
            scene            text,
            phase            text,
            request_hash     text NOT NULL,
            cache            text NOT NULL CHECK (cache IN ('hit', 'miss')),
            provider         text,
            model            text,
            tokens_in        integer NOT NULL,
            tokens_out       integer NOT NULL,
            cost_usd         double precision NOT NULL,
            cost_avoided_usd double precision,
            latency_ms       double precision NOT NULL,
            attempt          integer NOT NULL,
            try              integer NOT NULL,
            at               text NOT NULL);
        CREATE INDEX llm_calls_book ON llm_calls (book);
        CREATE INDEX llm_calls_run ON llm_calls (run) WHERE run IS NOT NULL"""),
    ("003_claims", """
        CREATE TABLE llm_claims (
            request_hash text PRIMARY KEY,
            owner        text NOT NULL,
            run          text,
            reserved_usd double precision NOT NULL DEFAULT 0,
            claimed_at   timestamptz NOT NULL DEFAULT now(),
            lease_until  timestamptz NOT NULL)"""),
]



def _statements(sql: str) -> Callable[[Any], None]:
    def apply(conn: Any) -> None:
        with conn.cursor() as cur:
            for statement in sql.split(";"):
                if statement.strip():
                    cur.execute(statement)

    return apply


MIGRATIONS = Migrations("scenemake_migrations", refuse_newer=True)
for _name, _sql in _STEPS:
    MIGRATIONS.migration(_statements(_sql), name=_name)


def migrate(db: Connector) -> None:
    """Bring the database's schema up to date (idempotent; safe from several machines)."""

    def step(conn: Any) -> None:
        # The helper speaks DB-API transactions (commit/rollback); this connection is
        # autocommit for everything else, so it leaves it for the migration only.
        conn.autocommit = False
        try:
            MIGRATIONS.migrate(conn)
            conn.commit()  # what the last look at the record opened
        except NewerDatabase as exc:
            conn.rollback()
            raise SharedCacheError(
                f"shared LLM cache {db.shown} was migrated by a newer scenemake "
                f"({exc.names[-1]})", fix="upgrade scenemake on this machine") from None
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        finally:
            if not conn.closed and not conn.broken:
                conn.autocommit = True

    db.run("schema migration", step)


def check_writable(db: Connector) -> None:
    """Refuse a read-only server or a role that may not write the tables, before any call."""

    def probe(conn: Any) -> tuple[str, bool]:
        ro = conn.execute("SHOW transaction_read_only").fetchone()[0]
        ok = conn.execute(
            "SELECT has_table_privilege('llm_responses', 'SELECT, INSERT, UPDATE')"
            " AND has_table_privilege('llm_calls', 'SELECT, INSERT')"
            " AND has_table_privilege('llm_claims', 'SELECT, INSERT, UPDATE, DELETE')"
            " AND has_sequence_privilege('llm_calls_id_seq', 'USAGE')").fetchone()[0]
        return ro, bool(ok)

    read_only, allowed = db.run("permission check", probe)
    fix = "use a role that may write its tables, or unset SCENEMAKE_CACHE_URL for the local cache"
    if read_only == "on":
        raise SharedCacheError(f"shared LLM cache {db.shown} is read-only", fix=fix)
    if not allowed:
        raise SharedCacheError(f"shared LLM cache {db.shown}: this role may not write the "
                               "cache's tables", fix=fix)
