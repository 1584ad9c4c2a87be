"""Ordered, recorded migrations for a database (the way simonw/llm's ``migrations.py`` does it).

A :class:`Migrations` list holds named steps in the order they were written. ``migrate``
applies, once per database, every step that its table of applied names does not list, in
order, and records each by name as it succeeds. A step never changes once released: a new
change is a new step at the end. A database from before the table existed simply has every
step pending, so the first steps must accept what such a database already holds
(``create table if not exists``): that is how an old database is recognised.

It speaks plain DB-API 2 (``execute``/``commit``/``rollback`` and the driver's
``paramstyle``), so a PostgreSQL connection (psycopg) can use it as well as sqlite3.
A step runs in the transaction that records it (``atomic=True``, the default) -- DDL
included, which both sqlite and PostgreSQL make transactional; a step that manages its
own transactions (``atomic=False``) must be idempotent: a crash between its work and its
record runs it again.

``Migrations(table, refuse_newer=True)``: a database whose record names a step this list
does not know was migrated by a newer scenemake, and is refused (:class:`NewerDatabase`)
rather than used half-understood. (Off by default: the build DB's record is shared by
steps that modules register as they load.)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.core.clock import now_iso
from pipeline.core.errors import UserError

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,120}$")


@dataclass(frozen=True)
class Step:
    """One migration: its recorded name, what it does, and whether it is one transaction."""

    name: str
    apply: Callable[[Any], None]
    atomic: bool = True


def _driver(conn: Any) -> str:
    """The DB-API module a connection comes from (``sqlite3``, ``psycopg`` ...)."""
    return type(conn).__module__.split(".")[0]


def _placeholder(conn: Any) -> str:
    """The driver's parameter marker: ``?`` (sqlite3 qmark) or ``%s`` (psycopg format)."""
    style = getattr(sys.modules.get(_driver(conn)), "paramstyle", "qmark")
    return "?" if style == "qmark" else "%s"


def _is_sqlite(conn: Any) -> bool:
    return _driver(conn) == "sqlite3"


def _is_postgres(conn: Any) -> bool:
    return _driver(conn) in ("psycopg", "psycopg2")


class NewerDatabase(UserError):
    """The database records steps this scenemake does not know (``names``)."""

    def __init__(self, names: list[str]):
        self.names = names
        super().__init__(f"the database was migrated by a newer scenemake ({names[-1]})",
                         fix="upgrade scenemake on this machine")


class Migrations:
    """An ordered list of migrations recorded in ``table`` (created on first use)."""

    def __init__(self, table: str, *, refuse_newer: bool = False):
        if not _NAME.match(table) or not table.replace("_", "").isalnum():
            raise ValueError(f"not a table name: {table!r}")
        self.table = table
        self.refuse_newer = refuse_newer
        self.steps: list[Step] = []

    def migration(self, fn: Callable[[Any], None] | None = None, *, name: str | None = None,
                  atomic: bool = True):
        """Add ``fn`` as the next step (a decorator; the name defaults to ``fn.__name__``).

        Adding a name twice keeps the first: modules that register steps on import or on
        load may run more than once per process.
        """
        def add(f: Callable[[Any], None]) -> Callable[[Any], None]:
            step_name = name or f.__name__
            if not _NAME.match(step_name):
                raise ValueError(f"not a migration name: {step_name!r}")
            if all(s.name != step_name for s in self.steps):
                self.steps.append(Step(step_name, f, atomic))
            return f

        return add(fn) if fn is not None else add

    def applied(self, conn: Any) -> set[str]:
        """The names this database has applied (creating the record table if needed).

        With ``refuse_newer``, a name no step here has raises :class:`NewerDatabase`.
        """
        cur = conn.cursor()
        # Look before creating: a role that may not create tables may still use a database
        # that is migrated already.
        if not self._has_table(cur, conn):
            if _is_postgres(conn):
                # two machines creating it at once would collide in the catalog: one at a time
                cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            cur.execute(f"create table if not exists {self.table} "
                        "(name text not null primary key, applied_at text not null)")
            conn.commit()
        cur.execute(f"select name from {self.table}")
        done = {row[0] for row in cur.fetchall()}
        if self.refuse_newer:
            known = {s.name for s in self.steps}
            newer = sorted(done - known)
            if newer:
                raise NewerDatabase(newer)
        return done

    def _has_table(self, cur: Any, conn: Any) -> bool:
        if _is_sqlite(conn):
            cur.execute("select 1 from sqlite_master where type = 'table' and name = ?",
                        (self.table,))
            return cur.fetchone() is not None
        if _is_postgres(conn):
            cur.execute("select to_regclass(%s)", (self.table,))
            return cur.fetchone()[0] is not None
        return False  # another driver: create if not exists

    def pending(self, conn: Any) -> list[str]:
        """The names of the steps this database has not applied yet, in order."""
        done = self.applied(conn)
        return [s.name for s in self.steps if s.name not in done]

    def migrate(self, conn: Any, target: Any = None) -> list[str]:
        """Apply every pending step to ``target`` (default: ``conn``); returns their names.

        Each step is checked again inside its own transaction, so two processes opening
        the same database at once apply it once.
        """
        done = self.applied(conn)
        ph = _placeholder(conn)
        ran: list[str] = []
        for step in self.steps:
            if step.name in done:
                continue
            if not step.atomic:
                step.apply(conn if target is None else target)
            cur = conn.cursor()
            try:
                # take the write lock now: a second process waits here, then sees the record
                if _is_sqlite(conn):
                    cur.execute("begin immediate")
                elif _is_postgres(conn):
                    cur.execute(f"lock table {self.table} in exclusive mode")
                cur.execute(f"select 1 from {self.table} where name = {ph}", (step.name,))
                if cur.fetchone() is None:
                    if step.atomic:
                        step.apply(conn if target is None else target)
                    cur.execute(f"insert into {self.table} (name, applied_at) values ({ph}, {ph})",
                                (step.name, now_iso()))
                    ran.append(step.name)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            done.add(step.name)
        return ran
