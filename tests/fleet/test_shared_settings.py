"""Choosing the shared cache and keeping its password out of messages (no server needed)."""

from __future__ import annotations

import json

import pytest

from pipeline.core.errors import UserError
from pipeline.llm.shared import shared_settings
from pipeline.llm.shared.connection import Connector, SharedCacheError, _scrub, redact

URL = "postgresql://builder:hunter2@db.internal:5433/scenemake"


def test_redact_keeps_everything_but_the_password():
    assert redact(URL) == "postgresql://builder@db.internal:5433/scenemake"
    assert "hunter2" not in redact(URL + "?password=hunter2&sslmode=require")
    assert redact("postgresql://db/x") == "postgresql://db/x"
    assert "hunter2" not in _scrub(f"failed for {URL}: hunter2 rejected", URL)


def test_not_a_postgres_url_is_one_line_without_the_password():
    with pytest.raises(SharedCacheError) as err:
        Connector("mysql://builder:hunter2@db/x")
    assert "hunter2" not in str(err.value) and "\n" not in str(err.value)
    assert "postgresql://" in str(err.value)


def test_the_file_cache_stays_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("SCENEMAKE_CACHE_URL", raising=False)
    assert shared_settings(tmp_path) is None
    (tmp_path / "scenemake.json").write_text(json.dumps({"default_book": "example"}))
    assert shared_settings(tmp_path) is None


def test_settings_from_the_workspace_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("SCENEMAKE_CACHE_URL", raising=False)
    for key in ("LEASE_S", "HEARTBEAT_S", "POLL_S"):
        monkeypatch.delenv(f"SCENEMAKE_CLAIM_{key}", raising=False)
    cfg = tmp_path / "scenemake.json"
    cfg.write_text(json.dumps({"cache_url": "postgresql://a@h/x", "claim_lease_s": 30,
                               "claim_heartbeat_s": 5}))
    got = shared_settings(tmp_path)
    assert (got.url, got.lease_s, got.heartbeat_s) == ("postgresql://a@h/x", 30, 5)
    monkeypatch.setenv("SCENEMAKE_CACHE_URL", "postgresql://b@h/y")
    monkeypatch.setenv("SCENEMAKE_CLAIM_LEASE_S", "8")
    got = shared_settings(tmp_path)
    assert (got.url, got.lease_s) == ("postgresql://b@h/y", 8)


@pytest.mark.parametrize("cfg, field", [
    ({"cache_url": 5}, "cache_url"),
    ({"cache_url": "postgresql://a@h/x", "claim_lease_s": "soon"}, "claim_lease_s"),
    ({"cache_url": "postgresql://a@h/x", "claim_lease_s": -1}, "claim_lease_s"),
    ({"cache_url": "postgresql://a@h/x", "claim_lease_s": 5, "claim_heartbeat_s": 5},
     "claim_heartbeat_s"),
])
def test_bad_settings_are_one_line_naming_the_field(tmp_path, monkeypatch, cfg, field):
    monkeypatch.delenv("SCENEMAKE_CACHE_URL", raising=False)
    for key in ("LEASE_S", "HEARTBEAT_S", "POLL_S"):
        monkeypatch.delenv(f"SCENEMAKE_CLAIM_{key}", raising=False)
    (tmp_path / "scenemake.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError) as err:
        shared_settings(tmp_path)
    assert f"field '{field}'" in str(err.value) and "scenemake.json" in str(err.value)
