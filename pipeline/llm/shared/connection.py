"""Connections to the shared PostgreSQL cache, and its failures as one line without secrets.

One connection per thread (autocommit; a transaction only where several rows must commit
together), so ``doit -n K -P thread`` never interleaves two threads' transactions. A failure
is never a cache miss (here a miss costs money): it is a :class:`SharedCacheError`, printed as
one line naming the server without its password, and the run stops.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pipeline.core.errors import UserError

T = TypeVar("T")
_CONNECT_TIMEOUT_S = 10


class SharedCacheError(UserError):
    """The shared LLM cache cannot be used; nothing was asked, nothing built was lost."""


def redact(url: str) -> str:
    """``url`` without its password (the only form that may reach a message or a file)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable cache URL>"
    if parts.password is None and "password" not in (parts.query or ""):
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    query = re.sub(r"password=[^&]*", "password=***", parts.query or "")
    return urlunsplit((parts.scheme, user + host, parts.path, query, ""))


def _scrub(text: str, url: str) -> str:
    """The first useful line of a driver message, with the URL's password removed."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = " ".join(lines[-2:]) if lines else "unknown error"
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        line = line.replace(password, "***")
    return line.replace(url, redact(url))


class Connector:
    """Thread-local psycopg connections to one database, with errors made user-facing."""

    def __init__(self, url: str):
        if not url.startswith(("postgresql://", "postgres://")):
            raise SharedCacheError(
                f"shared cache URL '{redact(url)}' is not a postgresql:// URL",
                field="SCENEMAKE_CACHE_URL / cache_url",
                fix="use postgresql://USER@HOST[:PORT]/DB; the password from PGPASSWORD or "
                    "a pgpass file")
        self.url = url
        self.shown = redact(url)
        self._local = threading.local()

    def connection(self) -> Any:
        """This thread's open connection (a broken one is replaced)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            import psycopg

            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S,
                                   application_name="scenemake")
            self._local.conn = conn
        return conn

    def run(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(connection)``; a driver error becomes a :class:`SharedCacheError` on ``what``."""
        with self.errors(what):
            return fn(self.connection())

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Turn psycopg's errors inside the block into one line on ``what``."""
        import psycopg
        from psycopg import errors as pgerr

        try:
            yield
        except SharedCacheError:
            raise
        except (pgerr.InsufficientPrivilege, pgerr.ReadOnlySqlTransaction) as exc:
            raise SharedCacheError(
                f"shared LLM cache {self.shown}: not allowed to write ({what}: "
                f"{_scrub(exc, self.url)})",
                fix="use a role that may write its tables, or unset SCENEMAKE_CACHE_URL to use "
                    "the local cache") from None
        except psycopg.OperationalError as exc:
            # Unreachable, refused password, server gone mid-run: never a cache miss.
            self._drop()
            raise SharedCacheError(
                f"shared LLM cache {self.shown} unavailable ({what}: {_scrub(exc, self.url)})",
                fix="check the server and the credentials (PGPASSWORD or ~/.pgpass), then run "
                    "again: nothing built is lost") from None
        except psycopg.Error as exc:
            self._drop()
            raise SharedCacheError(
                f"shared LLM cache {self.shown}: {what} failed ({_scrub(exc, self.url)})",
                fix="run again; if it persists, check the server's log") from None

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a dead connection: nothing to save
                pass
