"""A real PostgreSQL server on 127.0.0.1 for the fleet tests (session-scoped).

The system's ``initdb``/``pg_ctl`` (PostgreSQL refuses to run as root, and CI runs as root:
as root they run as the unprivileged ``postgres`` user through ``runuser``). The data folder
lives outside pytest's 0700 temporary folders (``/tmp/scenemake-pg-XXXX``, owned by that
user) and is removed at the end. Loopback connections need a password (scram), so the tests
can check that a wrong or missing one is refused in one line.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.parts import require

SUPERUSER_PASSWORD = "su-pw-7c1d"
BUILDER_PASSWORD = "builder-s3cret-91"  # the tests assert it never appears anywhere
READER_PASSWORD = "reader-pw-55"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(tool: str) -> str | None:
    """``tool`` on PATH, else in Debian's versioned folder (``/usr/lib/postgresql/N/bin``)."""
    found = shutil.which(tool)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return str(versions[-1]) if versions else None


def available() -> tuple[bool, str]:
    """Whether this machine can start a server (and why not)."""
    for tool in ("initdb", "pg_ctl"):
        if _bin(tool) is None:
            return False, f"{tool} is not on PATH (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False, "running as root and there is no 'postgres' user to run the server"
        if shutil.which("runuser") is None:
            return False, "running as root without runuser"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False, "psycopg is not installed (pip install -e '.[fleet]')"
    return True, ""


@dataclass
class PgServer:
    """A running server: its folder, port and the URLs of its roles."""

    data: Path
    port: int
    as_user: list[str]

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{self.port}/postgres"

    def url(self, db: str, user: str = "builder", password: str | None = BUILDER_PASSWORD) -> str:
        """A connection URL (with the password in it, as a careless user would write it)."""
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        pg_ctl = _bin("pg_ctl") or "pg_ctl"
        return subprocess.run([*self.as_user, pg_ctl, "-D", str(self.data), *args],
                              capture_output=True, text=True, check=check, timeout=60)

    def start(self) -> None:
        """Start (or restart) the server and wait until it accepts connections."""
        self._ctl("-w", "-l", str(self.data / "server.log"), "start")

    def stop(self) -> None:
        """Stop it at once (open connections are cut, as when a server goes away)."""
        self._ctl("-w", "-m", "immediate", "stop", check=False)

    def admin(self, sql: str, db: str = "postgres") -> None:
        """Run ``sql`` as the superuser (autocommit: CREATE DATABASE needs it)."""
        import psycopg

        url = self.admin_url.rsplit("/", 1)[0] + f"/{db}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self, name: str) -> str:
        """A fresh database owned by ``builder``; returns builder's URL for it."""
        self.admin(f'CREATE DATABASE "{name}" OWNER builder')
        return self.url(name)


def _start() -> PgServer:
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="scenemake-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        entry = pwd.getpwnam("postgres")
        os.chown(data, entry.pw_uid, entry.pw_gid)
    pwfile = data / "pw"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    if as_user:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    pgdata = data / "pgdata"
    initdb = _bin("initdb") or "initdb"
    subprocess.run([*as_user, initdb, "-D", str(pgdata), "-U", "postgres", "--no-sync",
                    "--auth-host=scram-sha-256", "--auth-local=trust", f"--pwfile={pwfile}",
                    "-E", "UTF8", "--locale=C"], capture_output=True, text=True, check=True,
                   timeout=120)
    pwfile.unlink()
    port = _free_port()
    with open(pgdata / "postgresql.conf", "a") as conf:
        # Its own socket folder (the system's may not exist or be writable), loopback only,
        # and no fsync: a test server need not survive a power cut.
        conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
                   f"unix_socket_directories = '{pgdata}'\nfsync = off\n"
                   "max_connections = 200\n")
    server = PgServer(pgdata, port, as_user)
    server.start()
    server.admin(f"CREATE ROLE builder LOGIN PASSWORD '{BUILDER_PASSWORD}'")
    server.admin(f"CREATE ROLE reader LOGIN PASSWORD '{READER_PASSWORD}'")
    return server


@pytest.fixture(scope="session")
def pg_session() -> Iterator[PgServer]:
    """One server for the whole session, stopped and removed at the end."""
    ok, why = available()
    if not ok:
        yield None  # type: ignore[misc]
        return
    try:
        server = _start()
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        pytest.fail(f"PostgreSQL did not start: {detail.strip()[-500:]}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data.parent, ignore_errors=True)


_counter = iter(range(1, 10**6))


@pytest.fixture
def pg(pg_session: PgServer | None) -> PgServer:
    """The session's server, or a skip (a failure under CI) when this machine has none."""
    ok, why = available()
    require(ok and pg_session is not None, "PostgreSQL", why)
    # A server a test stopped is started again for the next one.
    try:
        import psycopg

        psycopg.connect(pg_session.admin_url, connect_timeout=2).close()
    except Exception:
        pg_session.start()
        time.sleep(0.1)
    return pg_session


def fresh_db(pg: PgServer) -> str:
    """builder's URL for a new, empty database."""
    return pg.new_database(f"t{os.getpid()}_{next(_counter)}")
