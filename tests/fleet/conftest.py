"""The fleet tests' servers: PostgreSQL (tests/support/postgres.py)."""

from support.postgres import pg, pg_session  # noqa: F401
