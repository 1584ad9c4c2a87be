"""The one clock: every record's timestamp, in UTC, in one of two documented forms."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_iso() -> str:
    """Now to the second, e.g. ``2024-05-01T12:00:00Z`` (ledgers, build DB, scenario records)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def now_iso_ms() -> str:
    """Now to the millisecond, e.g. ``2024-05-01T12:00:00.123Z`` (the call log, L7 stage times:
    several calls fit in one second and their order must show)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
