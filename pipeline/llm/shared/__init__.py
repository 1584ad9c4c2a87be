"""The shared LLM layer: response cache, call log, claims and budget on PostgreSQL.

Chosen by ``SCENEMAKE_CACHE_URL`` (or ``"cache_url"`` in ``workspace/scenemake.json``);
without either, the workspace's file cache stays in use and nothing here is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, read_json

ENV_URL = "SCENEMAKE_CACHE_URL"
ENV_RUN = "SCENEMAKE_RUN"
FLEET_MARK = " (fleet: "  # machine names of fleet units: "<caller> (fleet: <unit> on <worker>)"


@dataclass(frozen=True)
class SharedSettings:
    """Where the shared cache is and how claims behave (seconds)."""

    url: str
    lease_s: float = 60.0
    heartbeat_s: float = 10.0
    poll_s: float = 1.0  # a fallback: a waiter wakes when the answer commits (NOTIFY)


def _number(raw: Any, name: str, where: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not value > 0:
        raise UserError(f"'{name}' must be a positive number of seconds, not {raw!r}",
                        path=where, field=name)
    return value


def shared_settings(workspace_root: Path) -> SharedSettings | None:
    """The shared cache settings, or None for the local file cache.

    ``SCENEMAKE_CACHE_URL`` wins over ``cache_url`` in ``scenemake.json``; claim timings come
    from ``claim_lease_s`` / ``claim_heartbeat_s`` / ``claim_poll_s`` there, or the
    ``SCENEMAKE_CLAIM_LEASE_S`` / ``_HEARTBEAT_S`` / ``_POLL_S`` variables.
    """
    cfg_path = Path(workspace_root) / "scenemake.json"
    cfg: dict = {}
    if cfg_path.exists():
        data = read_json(cfg_path, "workspace config")
        if isinstance(data, dict):
            cfg = data
    url = os.environ.get(ENV_URL) or cfg.get("cache_url")
    if not url:
        return None
    where = display_path(cfg_path)
    if not isinstance(url, str):
        raise UserError("'cache_url' must be a postgresql:// URL", path=where, field="cache_url")
    timings: dict[str, float] = {}
    for key in ("lease_s", "heartbeat_s", "poll_s"):
        env = os.environ.get(f"SCENEMAKE_CLAIM_{key.upper()}")
        raw = env if env is not None else cfg.get(f"claim_{key}")
        if raw is not None:
            timings[key] = _number(raw, f"claim_{key}", where)
    settings = SharedSettings(url, **timings)
    if settings.heartbeat_s >= settings.lease_s:
        raise UserError("'claim_heartbeat_s' must be shorter than 'claim_lease_s'",
                        path=where, field="claim_heartbeat_s")
    return settings


def attach_shared(client: Any, state_dir: Path) -> None:
    """Point ``client`` (an ``LLMClient``) at the shared cache when one is configured.

    Opens it at once (schema migrated, write permission checked), so an unreachable, read-only
    or unauthorised cache stops the run before any call, in one line.
    """
    root = Path(state_dir).parent
    settings = shared_settings(root)
    if settings is None:
        return
    from .store import (
        PgCallLog,
        PgClaims,
        PgResponseCache,
        SharedBudget,
        drop_dead_claims,
        machine_name,
        new_owner,
        upload_spool,
    )

    db = open_shared(settings.url)
    run = os.environ.get(ENV_RUN) or None
    machine = machine_name(root)
    spool = Path(state_dir) / "llm_spool"
    upload_spool(db, spool, machine)
    drop_dead_claims(db, machine)
    claims = PgClaims(db, new_owner(machine), lease_s=settings.lease_s,
                      heartbeat_s=settings.heartbeat_s, poll_s=settings.poll_s, run=run,
                      spool=spool)
    client.claims = claims
    client.cache = PgResponseCache(db, claims, machine)
    client.log = PgCallLog(client.log.path, db, claims, machine, run)
    if run:
        client.budget = SharedBudget(client.budget.max_cost_usd, db, claims, run)
    client.shared = db.shown


def open_shared(url: str):
    """A connector to the shared cache at ``url``, its schema migrated and write access
    checked (a one-line :class:`SharedCacheError` otherwise)."""
    from .connection import Connector
    from .schema import check_writable, migrate

    db = Connector(url)
    migrate(db)
    check_writable(db)
    return db


def read_shared_calls(workspace_root: Path, book: str | None,
                      all_machines: bool = False) -> list[dict] | None:
    """The shared call log's lines (as ``read_calls`` gives them, plus ``machine`` and
    ``run``) of ``book`` (None: every book), from this machine or from all of them; None
    when no shared cache is configured. Reading needs no write permission."""
    settings = shared_settings(Path(workspace_root))
    if settings is None:
        return None
    from .connection import Connector
    from .schema import migrate
    from .store import _CALL_COLUMNS, machine_name

    db = Connector(settings.url)
    migrate(db)
    sql = f"SELECT {', '.join(_CALL_COLUMNS)} FROM llm_calls WHERE true"
    args: list = []
    if book is not None:
        sql += " AND book = %s"
        args.append(book)
    if not all_machines:
        # this machine's calls, and those its `doit fleet` units made on workers
        me = machine_name(Path(workspace_root))
        sql += " AND (machine = %s OR starts_with(machine, %s))"
        args += [me, me + FLEET_MARK]
    found = db.run("read the call log", lambda conn: conn.execute(sql + " ORDER BY id",
                                                                   args).fetchall())
    calls = []
    for row in found:
        line = dict(zip(_CALL_COLUMNS, row, strict=True))
        line["timestamp"] = line.pop("at")
        if line.get("cost_avoided_usd") is None:
            line.pop("cost_avoided_usd")
        calls.append(line)
    return calls
