"""Chaos tests: kill -9, segfaults, hung rows, Ctrl-C and orphaned workers.

Each test bounds its own time (subprocess timeouts, generous upper bounds only) and
checks the store afterwards: every key done exactly once, executions (logged by the
row function to an append-only side file) never more than the attempts recorded.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import chaosfns
import polars as pl
import psutil
import pytest

import batchkit as bk
from batchkit.testing import Poison

pytestmark = pytest.mark.chaos

HERE = Path(__file__).resolve().parent
SCRIPT = str(HERE / "chaosfns.py")
PR_SET_CHILD_SUBREAPER = 36


# -- helpers ----------------------------------------------------------------------------


def spawn(store: Path, side: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start the chaos driver script in a child process.

    Its stdout and stderr go to files next to the store, not to pipes: orphaned loky
    workers inherit them and would keep a pipe open after the driver died. It leads
    its own process group, so a Ctrl-C sent to the group reaches it and its workers
    only.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    with open(store.parent / "child.out", "wb") as out, \
            open(store.parent / "child.err", "wb") as err:
        return subprocess.Popen([sys.executable, SCRIPT, str(store), str(side), *args],
                                stdout=out, stderr=err, env=env, start_new_session=True)


def finish(child: subprocess.Popen[bytes], store: Path, timeout: float) -> tuple[str, str]:
    """Wait for the child (killing it after ``timeout``); return its stdout and stderr."""
    try:
        child.wait(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return ((store.parent / "child.out").read_text(), (store.parent / "child.err").read_text())


def log_lines(side: Path) -> int:
    """Lines written to the side file so far."""
    return side.read_bytes().count(b"\n") if side.exists() else 0


def wait_for_progress(child: subprocess.Popen[bytes], store: Path, side: Path,
                      start_lines: int, *, timeout: float = 60.0) -> None:
    """Block until the child has started rows beyond ``start_lines`` (fail on timeout)."""
    deadline = time.monotonic() + timeout
    while log_lines(side) <= start_lines:
        if child.poll() is not None:
            _, err = finish(child, store, 0)
            pytest.fail(f"the child exited ({child.returncode}) before starting rows:\n{err}")
        if time.monotonic() > deadline:
            finish(child, store, 0)
            pytest.fail(f"no row started within {timeout} s")
        time.sleep(0.005)


def kill9(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child and reap it."""
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


def snapshot(store: Path) -> pl.DataFrame:
    """Every item with its status columns, read while no other process holds the store."""
    with bk.Batch(chaosfns.BATCH, store=store) as batch:
        return batch.items()


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """Adopt orphaned grandchildren (Linux), so the test can reap what it kills.

    Without it the orphaned loky workers go to PID 1, which may not reap them here.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
    if prctl is not None:
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        if prctl is not None:
            prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def stop_processes(procs: list[psutil.Process]) -> None:
    """Kill the given processes (ones this test started) that still run; reap ours."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    deadline = time.monotonic() + 10
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in procs:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, os.WNOHANG)


def alive(procs: list[psutil.Process]) -> list[int]:
    """Pids of the processes that are still running (zombies count as exited)."""
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def assert_all_done_once(items: pl.DataFrame, rows: int) -> None:
    """Every key is in the store once, done, with the right value."""
    assert items.height == rows
    assert items["_key"].n_unique() == rows
    assert items["_status"].value_counts().to_dicts() == [{"_status": "done", "count": rows}]
    assert (items["sq"] == items["n"] * items["n"]).all()


def assert_executions_within_attempts(log: list[tuple[str, int, int, int, float]],
                                      items: pl.DataFrame) -> None:
    """Each logged execution has its own attempt number, within the attempts recorded."""
    pairs = Counter((key, attempt) for key, attempt, *_ in log)
    repeated = {p: n for p, n in pairs.items() if n > 1}
    assert not repeated, f"one attempt executed more than once: {list(repeated.items())[:5]}"
    attempts = dict(zip(items["_key"].to_list(), items["_attempts"].to_list(), strict=True))
    runs = Counter(key for key, *_ in log)
    over = {k: (runs[k], attempts[k]) for k in runs if runs[k] > attempts[k]}
    assert not over, f"keys executed more often than attempts allow: {list(over.items())[:5]}"
    beyond = [(k, a) for k, a in pairs if a > attempts[k]]
    assert not beyond, f"executions logged under an attempt never recorded: {beyond[:5]}"


def assert_done_not_rerun(log: list[tuple[str, int, int, int, float]], lines: int,
                          done: set[str]) -> None:
    """No key that was done when the log had ``lines`` lines was executed after that."""
    again = [key for key, *_ in log[lines:] if key in done]
    assert not again, f"committed rows executed again: {again[:10]}"


# -- (a) kill -9 at random moments, then resume ---------------------------------------


@pytest.mark.slow
def test_sigkill_ten_times_then_resume_runs_each_committed_row_once(tmp_path: Path) -> None:
    """After 12 kill -9s and a resume every key is done once and no committed row re-ran."""
    rows, early_kills, kills = 3000, 2, 10
    store, side = tmp_path / "chaos.duckdb", tmp_path / "side.log"
    args = ["--rows", str(rows), "--sleep", "0.004", "--workers", "4", "--chunk-size", "10"]
    rng = random.Random(20260)
    snapshots: list[tuple[int, set[str]]] = []
    started = time.monotonic()
    for k in range(early_kills + kills):
        before = log_lines(side)
        child = spawn(store, side, *args)
        if k < early_kills:  # anywhere: starting up, adding rows, claiming, running
            time.sleep(rng.uniform(0.6, 1.4))
        else:  # mid-run: rows are being executed and committed
            wait_for_progress(child, store, side, before)
            time.sleep(rng.uniform(0.02, 0.3))
        assert child.poll() is None, f"run {k + 1} finished before its kill; make it longer"
        kill9(child)
        assert child.returncode == -signal.SIGKILL
        items = snapshot(store)
        if k >= early_kills:
            assert items.height == rows  # the add is never lost or doubled
        done = (set(items.filter(pl.col("_status") == "done")["_key"].to_list())
                if items.height else set())
        assert len(done) < rows
        snapshots.append((log_lines(side), done))
    child = spawn(store, side, *args)
    out, _ = finish(child, store, 120)
    assert child.returncode == 0, (store.parent / "child.err").read_text()
    assert out.strip() == "completed"
    elapsed = time.monotonic() - started

    items = snapshot(store)
    log = chaosfns.read_log(side)
    assert_all_done_once(items, rows)
    assert_executions_within_attempts(log, items)
    for lines, done in snapshots:
        assert_done_not_rerun(log, lines, done)
    # done never shrinks between kills, and the mid-run kills left work behind
    sizes = [len(done) for _, done in snapshots]
    assert sizes == sorted(sizes) and sizes[-1] > 0
    assert elapsed < 90


# -- (b) a poison row kills its worker process ----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["segfault", "exit"])
def test_poison_row_that_kills_its_worker_fails_alone(tmp_path: Path, mode: str) -> None:
    """A row that kills its worker ends failed (WorkerCrashed); every neighbour is done once."""
    batch = bk.Batch("poison", store=tmp_path / "p.duckdb")
    batch.add(pl.DataFrame({"n": list(range(200))}), key="n")
    fn = Poison(chaosfns.square, chaosfns.is_poison, mode=mode)
    report = batch.run(fn, backend="processes", workers=2, chunk_size=5,
                       retries=bk.RetryPolicy(retries=1, backoff=0), progress=False)
    assert batch.counts() == {"pending": 0, "running": 0, "done": 199, "failed": 1}
    failed = batch.failed()
    assert failed["key"].to_list() == ["137"]
    assert failed["error_type"].to_list() == ["WorkerCrashed"]
    assert failed["retryable"].to_list() == [True]
    assert failed["attempts"].to_list() == [2]  # its first attempt and one retry
    items = batch.items()
    neighbours = items.filter(pl.col("n") != 137)
    assert neighbours["_attempts"].unique().to_list() == [1]
    assert (neighbours["sq"] == neighbours["n"] * neighbours["n"]).all()
    assert report.crashes >= 2
    batch.close()


# -- (c) a hung row under a timeout ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend,how,error,bound", [
    ("threads", "sleep", "ItemTimeout", 20),  # the thread is abandoned, its result fenced
    ("processes", "sleep", "ItemTimeout", 20),  # SIGALRM interrupts the row
    # stuck in C the soft timeout cannot fire: the hard watchdog (timeout + 2 s) kills
    # the worker twice (in its chunk, then alone), each time followed by a pool restart
    ("processes", "csleep", "WorkerCrashed", 30),
])
def test_hung_row_times_out_without_stalling_the_run(tmp_path: Path, backend: str, how: str,
                                                     error: str, bound: float) -> None:
    """A row hung for 60 s fails after timeout=1 and the run ends long before it wakes."""
    batch = bk.Batch("hung", store=tmp_path / "h.duckdb")
    batch.add(pl.DataFrame({"n": list(range(40))}), key="n")
    t0 = time.monotonic()
    report = batch.run(chaosfns.Hang(7, 60, how), backend=backend, workers=2, chunk_size=5,
                       timeout=1, retries=0, progress=False)
    elapsed = time.monotonic() - t0
    assert elapsed < bound, f"the run took {elapsed:.1f} s"
    assert report.outcome == "completed"
    assert batch.counts() == {"pending": 0, "running": 0, "done": 39, "failed": 1}
    failed = batch.failed()
    assert failed["key"].to_list() == ["7"]
    assert failed["error_type"].to_list() == [error]
    assert failed["attempts"].to_list() == [1]
    items = batch.items()
    assert items["_attempts"].unique().to_list() == [1]
    done = batch.results()
    assert (done["sq"] == done["n"] * done["n"]).all()
    batch.close()


# -- (d) Ctrl-C -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend,target", [
    ("threads", "group"),
    ("processes", "group"),  # Ctrl-C in a terminal: the driver and its workers get SIGINT
    ("processes", "driver"),  # kill -INT of the driver alone: it must stop its workers
])
def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path, backend: str,
                                                  target: str) -> None:
    """SIGINT stops the run within seconds, keeps finished rows, leaves the rest pending."""
    rows = 400
    store, side = tmp_path / "c.duckdb", tmp_path / "side.log"
    workers: list[psutil.Process] = []
    with subreaper():
        child = spawn(store, side, "--backend", backend, "--rows", str(rows), "--sleep",
                      "0.05", "--workers", "2", "--chunk-size", "5")
        try:
            wait_for_progress(child, store, side, 0)
            time.sleep(1.5)
            workers = psutil.Process(child.pid).children(recursive=True)
            assert child.poll() is None
            t_int = time.monotonic()
            if target == "group":
                os.killpg(child.pid, signal.SIGINT)
            else:
                child.send_signal(signal.SIGINT)
            _, err = finish(child, store, 30)
            stopped = time.monotonic() - t_int
            # the processes backend kills its loky workers on Ctrl-C
            deadline = time.monotonic() + 10
            while alive(workers) and time.monotonic() < deadline:
                time.sleep(0.1)
            leftover = alive(workers)
        finally:
            finish(child, store, 0)
            stop_processes(workers)
    assert stopped < 5, f"the run took {stopped:.1f} s to stop after SIGINT"
    assert child.returncode in (1, -signal.SIGINT)  # KeyboardInterrupt propagated
    assert "interrupted" in err and "resume" in err, err
    assert not leftover, f"worker processes still alive after Ctrl-C: {leftover}"

    items = snapshot(store)
    counts = items["_status"].value_counts()
    by_status = dict(zip(counts["_status"].to_list(), counts["count"].to_list(), strict=True))
    assert by_status.get("running", 0) == 0
    assert by_status.get("failed", 0) == 0
    assert 0 < by_status.get("done", 0) < rows
    assert by_status["pending"] == rows - by_status["done"]
    done = set(items.filter(pl.col("_status") == "done")["_key"].to_list())
    lines = log_lines(side)

    with bk.Batch(chaosfns.BATCH, store=store) as batch:
        report = batch.run(chaosfns.LoggedRow(str(side), 0.0), backend=backend, workers=2,
                           chunk_size=20, progress=False)
        assert report.outcome == "completed"
        items = batch.items()
    log = chaosfns.read_log(side)
    assert_all_done_once(items, rows)
    assert_executions_within_attempts(log, items)
    assert_done_not_rerun(log, lines, done)


# -- (e) orphaned loky workers ----------------------------------------------------------


@pytest.mark.slow
def test_workers_of_a_killed_driver_start_no_new_rows(tmp_path: Path) -> None:
    """After kill -9 of the driver, its loky workers stop starting rows within a second."""
    store, side = tmp_path / "o.duckdb", tmp_path / "side.log"
    row_s = 0.1
    # a worker checks its driver before each chunk and every 0.25 s between rows, so
    # the last row may start up to 0.25 s + one row after the kill; plus 1 s of slack
    grace = 0.25 + row_s + 1.0
    procs: list[psutil.Process] = []
    with subreaper():
        # chunks of 20 rows (2 s each), two chunks per worker in flight: without the
        # guard the workers would keep starting rows for seconds after the driver died
        child = spawn(store, side, "--backend", "processes", "--rows", "400", "--sleep",
                      str(row_s), "--workers", "2", "--chunk-size", "20")
        try:
            wait_for_progress(child, store, side, 0)
            time.sleep(0.5)
            procs = psutil.Process(child.pid).children(recursive=True)
            t_kill = time.time()
            kill9(child)
            time.sleep(grace)
            settled = log_lines(side)
            time.sleep(2.0)
            log = chaosfns.read_log(side)
        finally:
            finish(child, store, 0)
            stop_processes(procs)
        leftover = alive(procs)
    worker_pids = {pid for _, _, pid, _, _ in log}
    assert worker_pids <= {p.pid for p in procs}  # the rows ran in the driver's workers
    late = [(key, round(t - t_kill, 2)) for key, _, _, _, t in log if t > t_kill + grace]
    assert not late, f"rows started after the driver died: {late}"
    assert len(log) == settled  # the side file stopped growing
    assert not leftover, f"could not stop the orphaned workers: {leftover}"
