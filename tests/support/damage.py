"""Fault points on disk: a real damaged page in a real sqlite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def damage_sqlite(db: Path, table: str | None = None) -> int:
    """Write garbage over the root page of ``table`` (default: the table with the most rows)
    of the sqlite file ``db``, after folding its write-ahead log into it, as a bad disk block
    or a torn write would leave it. Returns the page number damaged."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("pragma wal_checkpoint(truncate)")
        page_size = conn.execute("pragma page_size").fetchone()[0]
        tables = dict(conn.execute("select name, rootpage from sqlite_master "
                                   "where type = 'table' and name not like 'sqlite_%'"))
        if table is None:
            table = max(tables, key=lambda t: conn.execute(
                f'select count(*) from "{t}"').fetchone()[0])
        page = tables[table]
    finally:
        conn.close()
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    with open(db, "r+b") as fh:
        fh.seek((page - 1) * page_size)
        fh.write(bytes([0xDE, 0xAD, 0xBE, 0xEF]) * (page_size // 4))
    return page
