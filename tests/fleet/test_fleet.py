"""``doit fleet`` on a real local Dask cluster (2 worker processes) and a real PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from support.parts import require
from support.postgres import BUILDER_PASSWORD, fresh_db
from support.project import REPO, Project, executed, make_project, snapshot

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

PACK = "workspace/scenarios/packs/warehouse_basics.json"
L7 = ["--session-input", "workspace/l7/sample_session_input_l7.json",
      "--session-objective", "workspace/l7/sample_session_objective_l7_prompt_map.json",
      "--scenes-v2", "workspace/l7/l6_run_output/scenes_v2.json",
      "--out-dir", "workspace/l7/l7_run_output"]


def _dask() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def rows(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def fleet_project(tmp_path) -> Project:
    """The example project with three copies of the example book (a, b, c) and score_specs."""
    require(_dask(), "Dask", "pip install -e '.[fleet]'")
    root = make_project(tmp_path / "proj")
    shutil.copytree(REPO / "score_specs", root / "score_specs")
    for name in ("a", "b", "c"):
        shutil.copytree(root / "workspace/books/example", root / "workspace/books" / name)
    return Project(root)


def test_fleet_builds_books_and_an_l7_session_and_brings_them_home(pg, fleet_project,
                                                                   tmp_path):
    url = fresh_db(pg)
    temp = tmp_path / "tmp"  # this machine's temp folder for the caller and its local cluster
    temp.mkdir()
    # the copy a worker killed in an earlier fleet left: its lock file free, its PID gone
    dead = temp / "scenemake-fleet-999999999-0123abcd"
    (dead / "workspace").mkdir(parents=True)
    (temp / f"{dead.name}.lock").write_text("999999999\n")
    env = {"SCENEMAKE_CACHE_URL": url, "TMPDIR": str(temp)}
    proj = fleet_project
    proc = proj.doit("fleet", "--local", "2", "book:a", "book:b", "book:c", "l7:workspace/l7",
                     f"pack:{PACK}", env=env, timeout=600)
    assert proc.returncode == 0, proc.out
    assert list(temp.glob("scenemake-fleet-*")) == []  # swept by the next fleet
    assert "Traceback" not in proc.out and BUILDER_PASSWORD not in proc.out
    for unit in ("book:a", "book:b", "book:c", "l7:workspace/l7", f"pack:{PACK}"):
        assert f"fleet: {unit}: done" in proc.out
        assert f"fleet: {unit}: running on" in proc.out
    assert "fleet: 5 units: 5 done, 0 failed" in proc.out
    # nothing paid twice: the three books ask the same requests, the L7 session its own
    paid = [r[0] for r in rows(url, "SELECT request_hash FROM llm_calls WHERE cache = 'miss'")]
    assert len(paid) == len(set(paid)) and len(paid) > 30
    workers = rows(url, "SELECT DISTINCT machine FROM llm_calls")
    assert len(workers) == 5  # one machine name per unit's build
    assert rows(url, "SELECT count(*) FROM llm_claims") == [(0,)]

    # the results are here: the next local doit runs no task and makes no call
    before = rows(url, "SELECT count(*) FROM llm_calls")
    for book in ("a", "b", "c"):
        assert (proj.root / f"workspace/books/{book}/draft/context/phase_history/"
                "ch002_sc003.json").is_file()
        again = proj.build(f"book={book}", env=env)
        assert [t for t in executed(again) if t != "guard"] == []
    l7 = subprocess.run([sys.executable, "-m", "pipeline.l7", *L7], cwd=proj.root,
                        capture_output=True, text=True, env={**__import__("os").environ, **env})
    assert l7.returncode == 0, l7.stdout + l7.stderr
    pack = subprocess.run([sys.executable, "-m", "pipeline.scenario", "run-pack", "--pack", PACK,
                           "--base-url", "http://127.0.0.1:1"], cwd=proj.root,
                          capture_output=True, text=True,
                          env={**__import__("os").environ, **env})
    assert pack.returncode == 0, pack.stdout + pack.stderr
    assert "asked 0, resumed 9" in pack.stdout and "reviews: 0 ran" in pack.stdout, pack.stdout
    assert rows(url, "SELECT count(*) FROM llm_calls") == before  # no call, not even a hit
    assert proj.calls() == []  # and nothing on this machine's own log
    # doit cost here counts what this machine's fleet units did on the workers
    cost = proj.build("cost", "book=a", env=env).stdout
    assert [ln for ln in cost.splitlines() if "total" in ln][0].split("│")[2].strip() == "30"
    out = json.loads((proj.root / "workspace/l7/l7_run_output/session_output.json").read_text())
    assert out


def test_fleet_refuses_bad_input_in_one_line(pg, fleet_project):
    url = fresh_db(pg)
    proj = fleet_project
    cases = {
        ("book:nope",): "no book there",
        ("pack:x.json",): "scenario pack not found",
        ("pack:workspace/books/a/book.json",): "not a scenario pack",
        ("thing",): "is not a unit",
    }
    for args, expected in cases.items():
        proc = proj.doit("fleet", "--local", "1", *args, env={"SCENEMAKE_CACHE_URL": url})
        assert proc.returncode != 0 and expected in proc.out and "Traceback" not in proc.out
    proc = proj.doit("fleet", "--local", "1", "book:a")
    assert proc.returncode != 0 and "SCENEMAKE_CACHE_URL" in proc.out
    proc = proj.doit("fleet", "book:a", env={"SCENEMAKE_CACHE_URL": url})
    assert proc.returncode != 0 and "--local N" in proc.out
    # an unreachable shared cache: one line before any cluster starts, no password
    down = url.replace(f":{pg.port}/", ":1/")
    proc = proj.doit("fleet", "--local", "1", "book:a", env={"SCENEMAKE_CACHE_URL": down})
    assert proc.returncode != 0 and "Traceback" not in proc.out
    assert BUILDER_PASSWORD not in proc.out and "queued" not in proc.out
    assert [ln for ln in proc.out.splitlines() if "shared LLM cache" in ln][0].count(
        "unavailable") == 1


class Cluster:
    """A real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.file = tmp_path / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        # `python -m dask`: this python's Dask even in a venv that has no `dask` script
        # (one made with --system-site-packages)
        self.dask = [sys.executable, "-m", "dask"]
        self.procs.append(subprocess.Popen(
            [*self.dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(self.file)], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True))
        _wait(lambda: self.file.exists() and self.file.stat().st_size > 0)
        self.address = json.loads(self.file.read_text())["address"]

    def worker(self, env: dict, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        """A ``dask worker`` process (run under ``prefix``, e.g. in another mount namespace)."""
        proc = subprocess.Popen(
            [*prefix, *self.dask, "worker", "--scheduler-file", str(self.file), "--nworkers", "1",
             "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
            env={**__import__("os").environ, **env}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, cwd=self.tmp)
        self.procs.append(proc)
        return proc

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=60)

    def kill(self, proc: subprocess.Popen) -> None:
        import os
        import signal

        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker, its nanny and its unit's doit
        except ProcessLookupError:
            pass
        proc.wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.kill(proc)


def _wait(predicate, timeout: float = 60.0) -> None:
    import time

    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path, fleet_project):
    c = Cluster(tmp_path)
    yield c
    c.close()


def test_a_worker_running_another_scenemake_is_refused_in_one_line(pg, fleet_project, cluster,
                                                                    tmp_path):
    url = fresh_db(pg)
    # the worker imports a copy of scenemake whose default write template differs
    alt = tmp_path / "alt"
    for pkg in ("pipeline", "targets"):
        shutil.copytree(REPO / pkg, alt / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    template = alt / "pipeline/book/templates/write.j2"
    template.write_text(template.read_text() + "\n{# another version #}\n")
    cluster.worker({"SCENEMAKE_CACHE_URL": url, "PYTHONPATH": str(alt)})
    cluster.wait_for_workers(1)
    proc = fleet_project.doit("fleet", "--scheduler", cluster.address, "book:a",
                              env={"SCENEMAKE_CACHE_URL": url}, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.out
    lines = [ln for ln in proc.out.splitlines() if "version skew" in ln]
    assert len(lines) == 1 and "runs another scenemake" in lines[0]
    assert not (fleet_project.root / "workspace/books/a/draft").exists()  # nothing built


def test_a_killed_worker_gives_its_unit_to_the_other(pg, fleet_project, cluster, tmp_path):
    url = fresh_db(pg)
    temp = tmp_path / "workers-tmp"  # the machine's temp folder, as the workers see it
    temp.mkdir()
    workers = [cluster.worker({"SCENEMAKE_CACHE_URL": url, "TMPDIR": str(temp),
                               "SCENEMAKE_OFFLINE_LATENCY_MS": "150"}) for _ in range(2)]
    cluster.wait_for_workers(2)
    proj = fleet_project
    run = subprocess.Popen([sys.executable, "-m", "doit", "fleet", "--scheduler",
                            cluster.address, "book:a", "book:c"], cwd=proj.root,
                           env={**__import__("os").environ, "SCENEMAKE_CACHE_URL": url},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # kill a worker once a few calls are paid (both units are building by then)
        _wait(lambda: _count(url, "SELECT count(*) FROM llm_calls WHERE cache = 'miss'") >= 4)
        copies = sorted(p for p in temp.glob("scenemake-fleet-*") if p.is_dir())
        assert len(copies) == 2  # one copy per unit being built
        cluster.kill(workers[0])
        out = run.communicate(timeout=300)[0]
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out
    assert "fleet: 2 units: 2 done, 0 failed" in out
    # issue 25 item 8: the killed worker's copy was swept when the other worker took its
    # unit (the next unit on this machine); the other's own copies went when each unit ended
    assert list(temp.glob("scenemake-fleet-*")) == []
    paid = [r[0] for r in rows(url, "SELECT request_hash FROM llm_calls WHERE cache = 'miss'")]
    assert len(paid) == len(set(paid)) == 30  # the same 30 requests for both books, once
    for book in ("a", "c"):
        again = proj.build(f"book={book}", env={"SCENEMAKE_CACHE_URL": url})
        assert [t for t in executed(again) if t != "guard"] == []


def _count(url: str, sql: str) -> int:
    try:
        return rows(url, sql)[0][0]
    except Exception:  # noqa: BLE001 - no table before the first unit starts
        return 0


# -- --shared-fs: the project is on a file system every worker mounts at the same path ---------

def _draft_files(root, book: str) -> dict[str, bytes]:
    return snapshot(root / f"workspace/books/{book}/draft")


_WHEN = ("cache_hits", "cache", "timestamp", "latency_ms")


def _without_hits(files: dict[str, bytes]) -> dict[str, object]:
    """The files with the ledgers' times and cache-hit counts left out: when a call ran,
    and which of two books building at once paid for a request and which was served it,
    is not part of the result."""

    def drop(value):
        if isinstance(value, dict):
            return {k: drop(v) for k, v in value.items() if k not in _WHEN}
        if isinstance(value, list):
            return [drop(v) for v in value]
        return value

    return {name: drop(json.loads(data)) if name.endswith(".json") else data
            for name, data in files.items()}


def test_shared_fs_writes_results_in_place_and_only_records_travel(pg, fleet_project, tmp_path,
                                                                    monkeypatch):
    import pickle

    from pipeline.llm.shared.connection import redact
    from targets.fleet.sharedfs import write_probe
    from targets.fleet.units import parse_unit
    from targets.fleet.worker import build_unit, install_fingerprint

    url = fresh_db(pg)
    env = {"SCENEMAKE_CACHE_URL": url}
    proj = fleet_project
    proc = proj.doit("fleet", "--local", "2", "--shared-fs", "book:a", "book:b", env=env,
                     timeout=600)
    assert proc.returncode == 0, proc.out
    assert "Traceback" not in proc.out and BUILDER_PASSWORD not in proc.out
    assert "fleet: 2 units: 2 done, 0 failed" in proc.out
    paid = [r[0] for r in rows(url, "SELECT request_hash FROM llm_calls WHERE cache = 'miss'")]
    assert len(paid) == len(set(paid)) == 30  # the two books ask the same 30 requests, once
    assert not list((proj.root / "workspace/.scenemake/fleet").glob("probe-*"))  # cleaned up
    assert not list((proj.root / "workspace/.scenemake/fleet/pending").glob("*"))  # merged

    # the same files as a local build of the same book (its own file cache, no fleet)
    ref = Project(make_project(tmp_path / "ref"))
    local = {}
    for book in ("a", "b", "c"):
        shutil.copytree(ref.root / "workspace/books/example", ref.root / "workspace/books" / book)
        ref.build(f"book={book}")
        local[book] = _without_hits(_draft_files(ref.root, book))
    for book in ("a", "b"):
        assert _without_hits(_draft_files(proj.root, book)) == local[book], book

    # the caller merged the build-DB records: the next local doit runs no task, asks nothing
    before = rows(url, "SELECT count(*) FROM llm_calls")
    for book in ("a", "b"):
        again = proj.build(f"book={book}", env=env)
        assert [t for t in executed(again) if t != "guard"] == [], again.stdout
    assert rows(url, "SELECT count(*) FROM llm_calls") == before and proj.calls() == []

    # what a worker returns carries no file contents: build a third book as a worker does
    monkeypatch.setenv("SCENEMAKE_CACHE_URL", url)
    shared = write_probe(proj.root)
    result = build_unit(parse_unit("book:c", proj.root), b"", install_fingerprint(),
                        redact(url), None, "caller", shared)
    assert result["rc"] == 0, result["message"]
    assert result["files"] == b"" and result["written"] > 30
    assert set(result["records"]) == {"workspace/.scenemake/books/c.sqlite"}
    sent = pickle.dumps(result)
    draft = _draft_files(proj.root, "c")  # written straight into the project by the worker
    assert _without_hits(draft) == local["c"]
    assert not [name for name, data in draft.items() if len(data) > 80 and data in sent]
    assert len(sent) < sum(map(len, draft.values()))  # hashes and paths, not contents
    assert result["paid"] == 0 and result["calls"] == 30  # the shared cache had them all
    # no caller merged those rows (as if it had been killed): they wait beside the files,
    # and the next fleet merges them first; its worker then finds book c built
    assert (proj.root / result["pending"]).is_file()
    proc = proj.doit("fleet", "--local", "1", "--shared-fs", "book:c", env=env, timeout=600)
    assert proc.returncode == 0, proc.out
    assert "fleet: merged the build records an earlier fleet left for book:c" in proc.out
    assert "fleet: book:c: done; on " in proc.out and ", 0 calls, 0 paid" in proc.out, proc.out
    assert not (proj.root / result["pending"]).exists()
    again = proj.build("book=c", env=env)
    assert [t for t in executed(again) if t != "guard"] == [], again.stdout
    # a unit with nothing left to do writes nothing and sends back next to nothing
    result = build_unit(parse_unit("book:c", proj.root), b"", install_fingerprint(),
                        redact(url), None, "caller", shared)
    assert result["rc"] == 0 and result["removed"] == 0
    assert _draft_files(proj.root, "c") == draft  # not one draft file rewritten
    assert len(pickle.dumps(result)) < 2000, result["records"]  # only the rows that changed


def test_shared_fs_builds_an_l7_session_and_a_scenario_pack_in_place(pg, fleet_project):
    import os

    url = fresh_db(pg)
    env = {"SCENEMAKE_CACHE_URL": url}
    proj = fleet_project
    proc = proj.doit("fleet", "--local", "2", "--shared-fs", "l7:workspace/l7", f"pack:{PACK}",
                     env=env, timeout=600)
    assert proc.returncode == 0, proc.out
    assert "fleet: 2 units: 2 done, 0 failed" in proc.out and "Traceback" not in proc.out
    assert json.loads((proj.root / "workspace/l7/l7_run_output/session_output.json").read_text())
    # their build DBs' rows were merged here: the next local runs build and ask nothing
    before = rows(url, "SELECT count(*) FROM llm_calls")
    full = {**os.environ, **env}
    l7 = subprocess.run([sys.executable, "-m", "pipeline.l7", *L7], cwd=proj.root,
                        capture_output=True, text=True, env=full)
    assert l7.returncode == 0, l7.stdout + l7.stderr
    pack = subprocess.run([sys.executable, "-m", "pipeline.scenario", "run-pack", "--pack", PACK,
                           "--base-url", "http://127.0.0.1:1"], cwd=proj.root,
                          capture_output=True, text=True, env=full)
    assert pack.returncode == 0, pack.stdout + pack.stderr
    assert "asked 0, resumed 9" in pack.stdout and "reviews: 0 ran" in pack.stdout, pack.stdout
    assert rows(url, "SELECT count(*) FROM llm_calls") == before and proj.calls() == []


def test_shared_fs_worker_seeing_another_folder_refuses_in_one_line(pg, fleet_project, cluster,
                                                                     tmp_path):
    import os

    require(os.geteuid() == 0 and shutil.which("unshare") is not None,
            "a mount namespace (root and unshare)", "run the fleet tests as root")
    url = fresh_db(pg)
    proj = fleet_project
    # on this worker's machine another folder is mounted at the project's path
    other = tmp_path / "elsewhere"
    shutil.copytree(proj.root, other)
    mount = ("unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(other),
             str(proj.root.resolve()))
    cluster.worker({"SCENEMAKE_CACHE_URL": url}, prefix=mount)
    cluster.wait_for_workers(1)
    (proj.root / "workspace/books/a/draft").mkdir()
    (proj.root / "workspace/books/a/draft/mine.md").write_text("kept\n")
    here, there = snapshot(proj.root / "workspace"), snapshot(other)
    proc = proj.doit("fleet", "--scheduler", cluster.address, "--shared-fs", "book:a",
                     env={"SCENEMAKE_CACHE_URL": url}, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.out
    lines = [ln for ln in proc.out.splitlines() if "sees another folder" in ln]
    assert len(lines) == 1, proc.out
    assert str(proj.root.resolve()) in lines[0] and "worker " in lines[0]
    assert "fleet: 1 unit: 0 done, 1 failed" in proc.out
    # nothing lost or changed on either side, nothing asked
    assert snapshot(proj.root / "workspace") == here and snapshot(other) == there
    assert _count(url, "SELECT count(*) FROM llm_calls") == 0
