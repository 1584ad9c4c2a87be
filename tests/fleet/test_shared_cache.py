"""The shared LLM layer on a real PostgreSQL server: responses, call log, claims, budget,
and loud failures. Each "machine" is its own workspace copy driven by real ``doit`` runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.postgres import BUILDER_PASSWORD, READER_PASSWORD, fresh_db
from support.project import Project, executed, make_project, snapshot

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

BOOK = "workspace/books/example/book.json"
PRICE = {"offline-1": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}}


def machine(tmp_path: Path, name: str) -> Project:
    return Project(make_project(tmp_path / name))


def rows(url: str, sql: str, *args) -> list[tuple]:
    import psycopg  # the fleet extra: a machine without it skips at the pg fixture

    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def claims(url: str) -> int:
    """Claims held now (0 before the first run created the table)."""
    try:
        return rows(url, "SELECT count(*) FROM llm_claims")[0][0]
    except Exception:  # noqa: BLE001 - UndefinedTable until the schema exists
        return 0


def paid(url: str) -> list[str]:
    """request hashes of paid calls in the shared call log."""
    return [r[0] for r in rows(url, "SELECT request_hash FROM llm_calls WHERE cache = 'miss'")]


def env(url: str, **extra: str) -> dict:
    return {"SCENEMAKE_CACHE_URL": url, **extra}


def test_second_machine_pays_nothing(pg, tmp_path):
    url = fresh_db(pg)
    one, two = machine(tmp_path, "one"), machine(tmp_path, "two")
    one.build(env=env(url))
    first = paid(url)
    assert len(first) == 30 and len(set(first)) == 30
    two.build(env=env(url))
    assert paid(url) == first  # the second machine paid nothing
    assert two.misses() == [] and len(two.calls()) == 30  # its own log: all hits
    # same artifacts as the first machine's
    a, b = snapshot(one.draft / "scenes"), snapshot(two.draft / "scenes")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a if k.endswith(".md"))
    machines = rows(url, "SELECT machine, count(*) FROM llm_calls GROUP BY machine")
    assert len(machines) == 2
    # nothing left claimed; no password anywhere on disk
    assert rows(url, "SELECT count(*) FROM llm_claims") == [(0,)]
    for p in (one.root, two.root):
        for f in p.rglob("*"):
            if f.is_file():
                assert BUILDER_PASSWORD.encode() not in f.read_bytes(), f


def test_two_machines_at_once_pay_each_request_once(pg, tmp_path):
    url = fresh_db(pg)
    one, two = machine(tmp_path, "one"), machine(tmp_path, "two")
    slow = env(url, SCENEMAKE_OFFLINE_LATENCY_MS="150")
    procs = [subprocess.Popen([sys.executable, "-m", "doit", "-n", "3", "-P", "thread"],
                              cwd=m.root, env={**os.environ, **slow}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for m in (one, two)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    hashes = paid(url)
    assert len(hashes) == len(set(hashes)) == 30  # every distinct request paid exactly once
    # between them the machines asked 60 times; whatever one paid, the other got for free
    assert len(one.calls()) == len(two.calls()) == 30
    assert len(one.misses()) + len(two.misses()) == 30
    assert rows(url, "SELECT count(*) FROM llm_calls") == [(60,)]


def _wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_claim_of_a_killed_holder_is_taken_over_after_its_lease(pg, tmp_path):
    url = fresh_db(pg)
    one, two = machine(tmp_path, "one"), machine(tmp_path, "two")
    lease = {"SCENEMAKE_CLAIM_LEASE_S": "2", "SCENEMAKE_CLAIM_HEARTBEAT_S": "0.5",
             "SCENEMAKE_CLAIM_POLL_S": "0.05"}
    # machine one's model takes a minute: it is killed while it holds its first claim
    holder = subprocess.Popen([sys.executable, "-m", "doit"], cwd=one.root,
                              env={**os.environ, **env(url, SCENEMAKE_OFFLINE_LATENCY_MS="60000",
                                                       **lease)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: claims(url) == 1)
        time.sleep(1.5)  # a heartbeat or two: the lease is renewed while the holder lives
        (claimed, owner), = rows(url, "SELECT request_hash, owner FROM llm_claims")
        assert rows(url, "SELECT lease_until > now() FROM llm_claims") == [(True,)]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    start = time.monotonic()
    two.build(env=env(url, **lease))
    assert time.monotonic() - start >= 0.5  # it waited for the lease to run out
    hashes = paid(url)
    assert claimed in hashes and len(hashes) == len(set(hashes)) == 30
    assert [c["request_hash"] for c in two.misses()].count(claimed) == 1
    assert rows(url, "SELECT count(*) FROM llm_claims") == [(0,)]


def test_server_stopped_mid_run_is_one_line_and_the_run_resumes(pg, tmp_path):
    url = fresh_db(pg)
    one = machine(tmp_path, "one")
    run = subprocess.Popen([sys.executable, "-m", "doit"], cwd=one.root,
                           env={**os.environ, **env(url, SCENEMAKE_OFFLINE_LATENCY_MS="200")},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: claims(url) and len(paid(url)) >= 6)
        pg.stop()
        out = run.communicate(timeout=120)[0]
    finally:
        if run.poll() is None:
            run.kill()
        pg.start()
    assert run.returncode != 0
    assert "Traceback" not in out and BUILDER_PASSWORD not in out
    errors = [ln for ln in out.splitlines() if "shared LLM cache" in ln]
    assert errors and "unavailable" in errors[0] and "builder@127.0.0.1" in errors[0]
    done = one.db_tasks() - {"guard"}
    paid_before = len(one.misses())
    assert done and paid_before >= 6

    again = one.build(env=env(url))
    assert not (set(executed(again)) & done)  # nothing built is lost
    hashes = paid(url)
    assert len(hashes) == len(set(hashes)) == 30  # nothing paid twice, none lost from the log
    # the answer paid for while the server went away was kept, not paid again
    assert len(one.misses()) == 30


@pytest.mark.parametrize("case", ["unreachable", "wrong password", "read-only"])
def test_unusable_cache_stops_the_run_in_one_line(pg, tmp_path, case):
    url = fresh_db(pg)
    one = machine(tmp_path, "one")
    if case == "unreachable":
        url = url.replace(f":{pg.port}/", ":1/")
    elif case == "wrong password":
        url = url.replace(BUILDER_PASSWORD, "not-" + BUILDER_PASSWORD)
    else:
        machine(tmp_path, "seed").build(env=env(url))  # the schema exists; reader may only read
        db = url.rsplit("/", 1)[1]
        pg.admin("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader", db=db)
        url = pg.url(db, user="reader", password=READER_PASSWORD)
    proc = one.doit(env=env(url))
    assert proc.returncode != 0
    assert "Traceback" not in proc.out
    lines = [ln for ln in proc.out.splitlines() if "shared LLM cache" in ln]
    assert len(lines) == 1, proc.out
    assert {"unreachable": "unavailable", "wrong password": "password authentication failed",
            "read-only": "may not write"}[case] in lines[0]
    assert BUILDER_PASSWORD not in proc.out and READER_PASSWORD not in proc.out
    assert one.calls() == []  # never a miss: nothing was asked
    assert not list((one.draft / "scenes").rglob("response*"))


def _priced(m: Project, seed: int = 7) -> Project:
    m.edit_json(BOOK, lambda d: (d.update(prices=PRICE), d["model"].update(seed=seed)))
    return m


def test_cost_reads_the_shared_log_and_all_machines_shows_the_team(pg, tmp_path):
    url = fresh_db(pg)
    one, two = _priced(machine(tmp_path, "one")), _priced(machine(tmp_path, "two"))
    one.build(env=env(url, SCENEMAKE_MACHINE="one"))
    two.build(env=env(url, SCENEMAKE_MACHINE="two"))
    spent = sum(c["cost_usd"] for c in one.misses())
    assert spent > 0
    mine = two.build("cost", env=env(url, SCENEMAKE_MACHINE="two")).stdout
    total_line = [ln for ln in mine.splitlines() if "total" in ln][0]
    assert "0.0000" in total_line and f"{spent:.4f}" in total_line  # spent 0, avoided all
    team = two.build("cost", "--all-machines", env=env(url, SCENEMAKE_MACHINE="two")).stdout
    per_machine = {ln.split("│")[1].strip(): ln for ln in team.splitlines()
                   if ln.count("│") >= 5 and ln.split("│")[1].strip() in ("one", "two",
                                                                          "all machines")}
    assert f"{spent:.4f}" in per_machine["one"].split("│")[4]  # one paid
    assert f"{spent:.4f}" in per_machine["two"].split("│")[5]  # two was served for free
    assert "60" in per_machine["all machines"].split("│")[2]
    # a database no machine has called through yet: said, not two empty tables
    empty = two.build("cost", "--all-machines", env=env(fresh_db(pg))).stdout
    assert empty.startswith("cost: no LLM calls of book 'example' yet in the shared call log "
                            "(every machine)")
    # without a shared cache, --all-machines says what it needs in one line
    alone = two.doit("cost", "--all-machines")
    assert alone.returncode != 0 and "SCENEMAKE_CACHE_URL" in alone.out
    assert "Traceback" not in alone.out


def test_budget_of_a_named_run_counts_every_machine(pg, tmp_path):
    url = fresh_db(pg)
    one, two = _priced(machine(tmp_path, "one")), _priced(machine(tmp_path, "two"), seed=8)
    first = one.doit("budget=3", env=env(url, SCENEMAKE_RUN="nightly"))
    assert first.returncode != 0 and "spent in run 'nightly' (all machines)" in first.out
    run_spent = rows(url, "SELECT sum(cost_usd) FROM llm_calls WHERE run = 'nightly'")[0][0]
    assert 0 < run_spent <= 3
    # another machine of the same run (other requests: another seed) finds the budget used
    second = two.doit("budget=3", env=env(url, SCENEMAKE_RUN="nightly"))
    assert second.returncode != 0 and "Traceback" not in second.out
    run_spent = rows(url, "SELECT sum(cost_usd) FROM llm_calls WHERE run = 'nightly'")[0][0]
    assert run_spent <= 3 + 1e-9
    assert rows(url, "SELECT count(*) FROM llm_claims") == [(0,)]
    # a run of another name has its own budget
    third = two.doit("budget=3", env=env(url, SCENEMAKE_RUN="other"))
    assert "spent in run 'other'" in third.out
    assert 0 < rows(url, "SELECT sum(cost_usd) FROM llm_calls WHERE run = 'other'")[0][0] <= 3
