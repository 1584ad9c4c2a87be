"""The shared cache's schema on the one migration helper (pipeline/core/migrations.py):
a database migrated before the port is used as it is, a newer one is refused in one line,
and machines starting together apply each step once."""

from __future__ import annotations

import threading

import pytest
from support.postgres import fresh_db

from pipeline.llm.shared import open_shared
from pipeline.llm.shared.connection import SharedCacheError
from pipeline.llm.shared.schema import MIGRATIONS

pytestmark = [pytest.mark.fleet, pytest.mark.slow]
NAMES = ["001_responses", "002_calls", "003_claims"]


def _recorded(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM scenemake_migrations ORDER BY name")]


def test_the_steps_keep_their_names():
    assert [s.name for s in MIGRATIONS.steps] == NAMES


def test_a_database_migrated_before_the_port_is_used_as_is(pg):
    """The record table as the earlier runner made it (applied_at a timestamptz, filled by
    the server): nothing is applied again, and the cache works."""
    import psycopg

    url = fresh_db(pg)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE scenemake_migrations ("
                     "name text PRIMARY KEY, applied_at timestamptz DEFAULT now())")
        for step in MIGRATIONS.steps:
            step.apply(conn)
            conn.execute("INSERT INTO scenemake_migrations (name) VALUES (%s)", (step.name,))
    db = open_shared(url)
    assert _recorded(url) == NAMES
    assert db.run("count", lambda c: c.execute("SELECT count(*) FROM llm_calls").fetchone()[0]) == 0


def test_a_database_migrated_by_a_newer_scenemake_is_refused(pg):
    import psycopg

    url = fresh_db(pg)
    open_shared(url)
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO scenemake_migrations (name, applied_at) VALUES "
                     "('004_from_the_future', 'now')")
    with pytest.raises(SharedCacheError) as err:
        open_shared(url)
    text = str(err.value)
    assert "\n" not in text
    assert "was migrated by a newer scenemake (004_from_the_future)" in text
    assert "upgrade scenemake on this machine" in text


def test_machines_starting_together_apply_each_step_once(pg):
    url = fresh_db(pg)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_shared(url)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert _recorded(url) == NAMES
