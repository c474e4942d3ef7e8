"""backend="dask": the engine's behaviours on a Dask cluster (batchkit/_dask.py).

Most tests share one LocalCluster (2 one-thread worker processes, allowed-failures 0,
as a user would start it) through its address, ``backend="dask://ADDRESS"``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import daskfns
import distributed
import polars as pl
import psutil
import pytest

import batchkit as bk
from batchkit.testing import FakeClock

QUIET = {"progress": False}


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """One LocalCluster for the module: 2 one-thread worker processes, allowed-failures 0."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=":0")
    yield cluster
    cluster.close()


@pytest.fixture
def dask_backend(cluster) -> str:
    """``backend=`` for the shared cluster."""
    return f"dask://{cluster.scheduler_address}"


def worker_pids(cluster) -> set[int]:
    """The process ids of the cluster's workers now."""
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        return set(client.run(os.getpid).values())


def frame(n: int, **extra) -> pl.DataFrame:
    """Rows ``n`` = 0..n-1 (plus constant columns)."""
    return pl.DataFrame({"n": list(range(n)), **{k: [v] * n for k, v in extra.items()}})


def make(tmp_path: Path, rows: pl.DataFrame, name: str = "items", **kwargs) -> bk.Batch:
    """A batch on a fresh store holding ``rows`` keyed by ``n``."""
    batch = bk.Batch(name, store=str(tmp_path / f"{name}.duckdb"), **kwargs)
    batch.add(rows, key="n")
    return batch


def run_options(batch: bk.Batch) -> dict:
    """The options recorded for the batch's last run."""
    runs = batch.store.query("SELECT options FROM _batchkit_runs ORDER BY started_at")
    return json.loads(runs["options"][-1])


# -- plain runs ----------------------------------------------------------------------------


def test_plain_run_computes_every_row_on_the_cluster(tmp_path, cluster, dask_backend):
    """Every row is done with the right value, computed in the cluster's worker processes."""
    batch = make(tmp_path, frame(500))
    report = batch.run(daskfns.square, backend=dask_backend, chunk_size=40, **QUIET)
    assert report.outcome == "completed" and report.succeeded == 500
    assert batch.counts() == {"pending": 0, "running": 0, "done": 500, "failed": 0}
    res = batch.results().sort("n")
    assert res["sq"].to_list() == [i * i for i in range(500)]
    assert set(res["pid"]) <= worker_pids(cluster)
    assert os.getpid() not in set(res["pid"])
    assert batch.items()["_attempts"].to_list() == [1] * 500
    batch.close()


def test_workers_default_to_the_clusters_threads(tmp_path, dask_backend):
    """Without workers=, a run on a cluster uses the cluster's thread count (2 here)."""
    batch = make(tmp_path, frame(10))
    batch.run(daskfns.square, backend=dask_backend, **QUIET)
    assert run_options(batch)["workers"] == 2
    assert run_options(batch)["backend"] == dask_backend
    batch.close()


def test_rate_limits_are_split_across_worker_processes(tmp_path, dask_backend):
    """Each worker process gets 1/processes of a rate limit; an unsplittable one is refused."""
    batch = make(tmp_path, frame(20))
    batch.run(daskfns.share, backend=dask_backend, chunk_size=5, **QUIET)
    assert set(batch.results()["share"]) == {2}
    with pytest.raises(bk.ConfigError, match="cannot be split across 2 processes"):
        batch.run(daskfns.make_limited_pipeline("1/min"), backend=dask_backend, workers=2,
                  **QUIET)
    batch.close()


def test_default_client_is_used(tmp_path, cluster):
    """backend='dask' runs on the default Dask client (an open Client()) when there is one."""
    batch = make(tmp_path, frame(60))
    with distributed.Client(cluster.scheduler_address) as client:
        assert distributed.default_client() is client
        batch.run(daskfns.square, backend="dask", chunk_size=10, **QUIET)
        pids = set(client.run(os.getpid).values())
    assert batch.counts()["done"] == 60
    assert set(batch.results()["pid"]) <= pids
    assert run_options(batch)["workers"] == 2
    batch.close()


def test_without_a_client_a_local_cluster_is_started_and_closed(tmp_path, cluster):
    """backend='dask' with no client starts `workers` worker processes and closes them after."""
    batch = make(tmp_path, frame(40))
    batch.run(daskfns.square, backend="dask", workers=2, chunk_size=5, **QUIET)
    pids = set(batch.results()["pid"])
    assert batch.counts()["done"] == 40
    assert 1 <= len(pids) <= 2
    assert os.getpid() not in pids and not pids & worker_pids(cluster)
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(psutil.pid_exists(p) for p in pids)
    batch.close()


# -- retries, crashes, timeouts --------------------------------------------------------------


def test_transient_errors_are_retried(tmp_path, dask_backend):
    """Rows failing transiently twice end done on their third attempt."""
    clock = FakeClock()
    batch = make(tmp_path, frame(30), clock=clock)
    report = batch.run(daskfns.flaky_square, backend=dask_backend, chunk_size=5,
                       retries=3, **QUIET)
    assert batch.counts()["done"] == 30
    assert report.retries == 60
    assert batch.items()["_attempts"].to_list() == [3] * 30
    assert clock.slept > 0  # backoff went through the injected clock
    batch.close()


@pytest.mark.chaos
def test_a_row_that_kills_its_worker_fails_alone(tmp_path, dask_backend):
    """os._exit on one row: that row ends failed (WorkerCrashed); its neighbours end done."""
    batch = make(tmp_path, frame(30))
    report = batch.run(daskfns.exit_on_seven, backend=dask_backend, workers=2, chunk_size=10,
                       retries=bk.RetryPolicy(retries=1, backoff=0), **QUIET)
    assert batch.counts() == {"pending": 0, "running": 0, "done": 29, "failed": 1}
    failed = batch.failed()
    assert failed["n"].to_list() == [7]
    assert failed["error_type"].to_list() == ["WorkerCrashed"]
    attempts = dict(batch.items().select("n", "_attempts").iter_rows())
    assert attempts.pop(7) == 2  # charged one attempt per crash it caused alone
    assert set(attempts.values()) == {1}  # re-run neighbours were not charged
    assert report.crashes >= 2
    batch.close()


def test_timeout_fails_the_row_and_stops_its_thread(tmp_path, dask_backend):
    """A row past timeout fails with ItemTimeout, the rest finish, and the row is stopped."""
    log = str(tmp_path / "log.txt")
    batch = make(tmp_path, frame(12, log=log))
    started = time.monotonic()
    report = batch.run(daskfns.hang_at_three, backend=dask_backend, workers=2, chunk_size=4,
                       timeout=0.5, retries=0, **QUIET)
    assert time.monotonic() - started < 30  # generous: the hung row never stalls the run
    assert report.outcome == "completed"
    assert batch.counts()["done"] == 11
    failed = batch.failed()
    assert failed["n"].to_list() == [3]
    assert failed["error_type"].to_list() == ["ItemTimeout"]
    deadline = time.monotonic() + 5
    while not daskfns.read_lines(log) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daskfns.read_lines(log) == ["stopped 3"]  # the abandoned thread did not run on
    batch.close()


# -- pipelines, halts and resume -------------------------------------------------------------


def test_pipeline_retries_and_reruns_resume_at_the_failed_step(tmp_path, dask_backend):
    """A two-step pipeline on Dask: step checkpoints, cost, and only='failed' skip done steps."""
    log = str(tmp_path / "calls.txt")
    n = 20
    batch = make(tmp_path, frame(n, log=log))
    report = batch.run(daskfns.make_pipeline(), backend=dask_backend, workers=2, chunk_size=5,
                       retries=0, **QUIET)
    busy = [i for i in range(n) if i % 5 == 0]
    assert batch.failed()["n"].sort().to_list() == busy
    assert set(batch.failed()["error_type"]) == {"Transient"}
    assert report.cost_usd == pytest.approx(0.01 * n)  # a failed call costs too

    again = batch.run(daskfns.make_pipeline(), backend=dask_backend, workers=2, only="failed",
                      retries=0, **QUIET)
    assert again.succeeded == len(busy)
    assert again.cost_usd == pytest.approx(0.01 * len(busy))
    assert batch.counts()["done"] == n
    calls = daskfns.read_lines(log)
    assert sorted(c for c in calls if c.startswith("double")) == sorted(
        f"double {i}" for i in range(n))  # step 1 ran once per row: its checkpoint served
    assert len([c for c in calls if c.startswith("label")]) == n + len(busy)
    res = batch.results().sort("n")
    assert res["label"].to_list() == [f"{2 * i}!" for i in range(n)]
    assert res["cost_usd"].to_list() == [pytest.approx(0.01)] * n
    batch.close()


def test_halted_run_resumes(tmp_path, dask_backend):
    """on_error='halt' stops the run on Dask; the next run finishes what was left."""
    batch = make(tmp_path, frame(60))
    report = batch.run(daskfns.fails_at_five, backend=dask_backend, workers=1, chunk_size=2,
                       on_error="halt", **QUIET)
    assert report.outcome == "halted"
    counts = batch.counts()
    assert counts["failed"] == 1 and counts["running"] == 0 and counts["pending"] > 0
    again = batch.run(daskfns.fails_at_five, backend=dask_backend, workers=2, **QUIET)
    assert again.outcome == "completed"
    assert batch.counts() == {"pending": 0, "running": 0, "done": 59, "failed": 1}
    assert batch.items()["_attempts"].to_list() == [1] * 60  # nothing ran twice
    batch.close()


@pytest.mark.chaos
def test_workers_of_a_dead_driver_start_no_new_work(tmp_path, cluster):
    """kill -9 of the driver: the cluster's workers stop its chunks and start no new ones."""
    log = tmp_path / "starts.txt"
    child = subprocess.Popen(
        [sys.executable, daskfns.__file__, str(tmp_path / "s.duckdb"), str(log),
         cluster.scheduler_address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while len(daskfns.read_lines(str(log))) < 40 and time.monotonic() < deadline:
            assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout:
            child.stdout.close()
    killed = time.time()
    time.sleep(1.5)
    starts = [float(line.split()[2]) for line in daskfns.read_lines(str(log))]
    assert len(starts) >= 40
    # a chunk that was running stops at its next check between rows (~0.25 s)
    assert max(starts) < killed + 0.75
    assert len(starts) < 2000


# -- errors --------------------------------------------------------------------------------


def test_missing_dask_is_a_config_error_naming_the_install(tmp_path, monkeypatch):
    """Without Dask installed, backend='dask' raises ConfigError with the pip command."""
    batch = make(tmp_path, frame(3))
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    for backend in ("dask", "dask://10.0.0.5:8786"):
        with pytest.raises(bk.ConfigError, match=r"pip install 'batchkit\[dask\]'"):
            batch.run(daskfns.square, backend=backend, **QUIET)
    assert batch.counts()["pending"] == 3
    assert batch.store.query("SELECT count(*) AS n FROM _batchkit_runs")["n"][0] == 0
    batch.close()


@pytest.mark.parametrize(("backend", "expected"), [
    ("dask://", "names no scheduler"),
    ("dask://127.0.0.1:1", "cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'"),
    ("daskk", "or 'dask' / 'dask://HOST:PORT' for a Dask cluster"),
])
def test_bad_dask_backends_fail_before_any_work(tmp_path, monkeypatch, backend, expected):
    """An empty or unreachable scheduler address raises ConfigError before a run starts."""
    monkeypatch.setattr("batchkit._dask._CONNECT_TIMEOUT_S", 1)
    batch = make(tmp_path, frame(3))
    with pytest.raises(bk.ConfigError) as err:
        batch.run(daskfns.square, backend=backend, **QUIET)
    assert expected in str(err.value)
    assert batch.store.query("SELECT count(*) AS n FROM _batchkit_runs")["n"][0] == 0
    batch.close()


def test_unpicklable_function_is_refused(tmp_path, dask_backend):
    """A function that cannot be pickled is refused before work, as for processes."""
    import threading

    lock = threading.Lock()

    def guarded(row):
        with lock:
            return {"m": row["n"]}

    batch = make(tmp_path, frame(2))
    with pytest.raises(bk.ConfigError, match="cannot be sent to worker processes"):
        batch.run(guarded, backend=dask_backend, **QUIET)
    assert batch.counts()["pending"] == 2
    batch.close()


def test_task_the_workers_cannot_load_stops_the_run_clearly(tmp_path, dask_backend):
    """A function the workers cannot import ends the run with a ConfigError naming why."""
    batch = make(tmp_path, frame(8))
    with pytest.raises(bk.ConfigError) as err:
        batch.run(daskfns.Unloadable(), backend=dask_backend, workers=1, chunk_size=4, **QUIET)
    assert "No module named 'secret_lib'" in str(err.value)
    assert "installed" in str(err.value)
    assert batch.counts()["done"] == 0
    batch.run(daskfns.square, backend=dask_backend, **QUIET)  # the rows are not lost
    assert batch.counts()["done"] == 8
    batch.close()


def test_import_batchkit_does_not_import_dask():
    """`import batchkit` (and checking the backends) leaves Dask unimported."""
    code = ("import sys, batchkit, batchkit._executors as e; e.check_backend('threads'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
