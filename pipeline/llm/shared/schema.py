"""The shared cache's schema, as an ordered list of migrations recorded in the database.

Written here because the build DB's migration helper (``pipeline/core/migrations.py``) does
not exist yet; the shape is the same (a name per step, applied once, in order). Two machines
starting at once migrate one after the other (a transaction-scoped advisory lock), and a
database migrated by a newer scenemake is refused rather than used half-understood.
"""

from __future__ import annotations

from typing import Any

from .connection import Connector, SharedCacheError

# Never edit a step once released: add a new one.
MIGRATIONS: list[tuple[str, str]] = [
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

_LOCK_KEY = 0x5CE7E3A1  # pg_advisory_xact_lock key of scenemake's schema changes


def migrate(db: Connector) -> None:
    """Bring the database's schema up to date (idempotent; safe from several machines)."""

    def step(conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            # Look before creating: a role without CREATE may still use a migrated database.
            if conn.execute("SELECT to_regclass('scenemake_migrations')").fetchone()[0] is None:
                conn.execute("CREATE TABLE scenemake_migrations ("
                             "name text PRIMARY KEY, applied_at timestamptz DEFAULT now())")
            done = {r[0] for r in conn.execute("SELECT name FROM scenemake_migrations")}
            known = [name for name, _ in MIGRATIONS]
            newer = sorted(done - set(known))
            if newer:
                raise SharedCacheError(
                    f"shared LLM cache {db.shown} was migrated by a newer scenemake "
                    f"({newer[-1]})", fix="upgrade scenemake on this machine")
            for name, sql in MIGRATIONS:
                if name not in done:
                    for statement in sql.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO scenemake_migrations (name) VALUES (%s)", (name,))

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
