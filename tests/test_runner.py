"""Batch.run: backends, retries and backoff, halting, only= re-runs, timeouts, bad arguments."""

from __future__ import annotations

import itertools
import os
import threading

import httpx
import polars as pl
import pytest
import rowfns

import batchkit as bk
from batchkit._runner import ChunkSizer

BASIC = {"progress": False}


def _frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({"n": pl.Series(range(n), dtype=pl.Int64)})


def _workers(backend: str) -> int:
    return 1 if backend == "sequential" else 2


# -- every backend -----------------------------------------------------------------------


def test_run_finishes_every_row(batch, backend):
    """Every row ends done with its result; the report and counts() agree."""
    batch.add(_frame(30), key="n")
    report = batch.run(rowfns.square, backend=backend, workers=_workers(backend),
                       chunk_size=4, **BASIC)
    assert report.outcome == "completed"
    assert (report.processed, report.succeeded, report.failed) == (30, 30, 0)
    assert report.counts == batch.counts() == {"pending": 0, "running": 0, "done": 30,
                                               "failed": 0}
    results = batch.results()
    assert results["n"].to_list() == list(range(30))
    assert results["square"].to_list() == [n * n for n in range(30)]


def test_status_columns_after_a_run(batch, backend):
    """Each done row records attempts, times, duration and the run that touched it."""
    batch.add(_frame(6), key="n")
    report = batch.run(rowfns.square, backend=backend, workers=_workers(backend), **BASIC)
    items = batch.items()
    assert items["_attempts"].to_list() == [1] * 6
    assert items["_run_id"].to_list() == [report.run_id] * 6
    assert (items["_finished_at"] >= items["_started_at"]).all()
    assert (items["_duration_s"] >= 0).all()
    assert items["_error_type"].null_count() == 6


def test_permanent_errors_fail_at_once(batch, backend):
    """A row raising a permanent error fails alone after one attempt, not retryable."""
    batch.add(_frame(10), key="n")
    report = batch.run(rowfns.fail_odd, backend=backend, workers=_workers(backend),
                       retries=3, chunk_size=3, **BASIC)
    assert batch.counts() == {"pending": 0, "running": 0, "done": 5, "failed": 5}
    assert report.failures_by_type == {"ValueError": 5}
    assert report.retries == 0
    failed = batch.failed()
    assert failed["n"].to_list() == [1, 3, 5, 7, 9]
    assert failed["attempts"].to_list() == [1] * 5
    assert failed["retryable"].to_list() == [False] * 5
    assert batch.results()["half"].to_list() == [0, 1, 2, 3, 4]


def test_bk_permanent_is_not_retried(batch, backend):
    """bk.Permanent fails the row at once even with retries left."""
    batch.add(_frame(3), key="n")
    batch.run(rowfns.always_permanent, backend=backend, workers=_workers(backend), retries=5,
              **BASIC)
    failed = batch.failed()
    assert failed["error_type"].to_list() == ["Permanent"] * 3
    assert failed["attempts"].to_list() == [1] * 3
    assert failed["error_message"].to_list() == [f"no such item {n}" for n in range(3)]


def test_transient_errors_are_retried_until_success(batch, backend):
    """Transient failures are retried; a row succeeding on attempt k ends done with k attempts."""
    batch.add(pl.DataFrame({"n": [1, 2, 3], "ok_at": [1, 2, 3]}), key="n")
    report = batch.run(rowfns.succeed_on_attempt, backend=backend, workers=_workers(backend),
                       retries=bk.RetryPolicy(retries=3, backoff=0.5), **BASIC)
    assert batch.counts()["done"] == 3
    assert report.retries == 3  # 0 + 1 + 2
    items = batch.items()
    assert items["attempt"].to_list() == [1, 2, 3]
    assert items["_attempts"].to_list() == [1, 2, 3]


def test_exhausted_transient_rows_are_retryable_dead_letters(batch, backend, clock):
    """A row failing transiently every time ends failed after retries + 1 attempts, retryable."""
    batch.add(_frame(2), key="n")
    report = batch.run(rowfns.always_transient, backend=backend, workers=_workers(backend),
                       retries=2, **BASIC)
    failed = batch.failed()
    assert failed["attempts"].to_list() == [3, 3]
    assert failed["retryable"].to_list() == [True, True]
    assert failed["error_type"].to_list() == ["Transient", "Transient"]
    assert report.retries == 4
    assert clock.slept > 0  # backoff went through the injected clock
    assert "only='failed'" in str(report)


def test_context_reaches_two_argument_functions(batch, backend):
    """A function of (row, ctx) gets batch, key, attempt, run id and the idempotency key."""
    batch.add(pl.DataFrame({"n": [5, 6]}), key="n")
    report = batch.run(rowfns.context_of, backend=backend, workers=_workers(backend), **BASIC)
    results = batch.results()
    assert results["batch"].to_list() == ["items", "items"]
    assert results["key"].to_list() == ["5", "6"]
    assert results["attempt"].to_list() == [1, 1]
    assert results["run_id"].to_list() == [report.run_id] * 2
    assert results["idem"].to_list() == ["items:5:1", "items:6:1"]


def test_current_item_inside_one_argument_functions(batch, backend):
    """bk.current_item() gives the running row's context, and None outside a run."""
    assert bk.current_item() is None
    batch.add(pl.DataFrame({"n": [5], "ok_at": [2]}), key="n")
    report = batch.run(rowfns.current_context, backend=backend, workers=_workers(backend),
                       **BASIC)
    assert batch.results().select("key", "attempt", "run_id", "idem").rows() == [
        ("5", 1, report.run_id, "items:5:1")]
    assert bk.current_item() is None


def test_idempotency_key_changes_with_the_attempt(batch):
    """Each attempt of a row sees its own attempt number in the idempotency key."""
    batch.add(pl.DataFrame({"n": [7]}), key="n")
    seen = []

    def flaky(row, ctx):
        seen.append(ctx.idempotency_key)
        if ctx.attempt < 3:
            raise bk.Transient("again")
        return {"ok": True}

    batch.run(flaky, backend="sequential", retries=3, **BASIC)
    assert seen == ["items:7:1", "items:7:2", "items:7:3"]


def test_processes_backend_runs_rows_in_other_processes(batch):
    """backend='processes' runs rows outside the driver process."""
    batch.add(_frame(8), key="n")
    batch.run(rowfns.pid_of, backend="processes", workers=2, chunk_size=2, **BASIC)
    pids = set(batch.results()["pid"].to_list())
    assert pids and os.getpid() not in pids


@pytest.mark.parametrize("backend", ["sequential", "threads"])
def test_a_row_raising_base_exception_fails_alone(batch, backend):
    """Even SystemExit in a row is that row's error; the run goes on."""
    batch.add(_frame(3), key="n")

    def quits(row):
        if row["n"] == 1:
            raise SystemExit(3)
        return {"m": row["n"]}

    report = batch.run(quits, backend=backend, retries=0, **BASIC)
    assert report.outcome == "completed"
    assert batch.failed()["error_type"].to_list() == ["SystemExit"]
    assert batch.counts()["done"] == 2


# -- backoff schedule (fake clock) -------------------------------------------------------


def test_backoff_schedule_doubles(batch, clock):
    """Retries of a transient error wait backoff, 2x, 4x ... on the injected clock."""
    batch.add(_frame(1), key="n")
    calls = []

    def busy(row):
        calls.append(clock.time())
        raise bk.Transient("busy")

    start = clock.time()
    report = batch.run(busy, backend="sequential",
                       retries=bk.RetryPolicy(retries=3, backoff=1.0, jitter=0), **BASIC)
    assert [t - start for t in calls] == [0.0, 1.0, 3.0, 7.0]
    assert clock.slept == pytest.approx(7.0)
    assert report.retries == 3
    assert batch.failed()["attempts"].to_list() == [4]


def _always_busy(calls, clock):
    def busy(row):
        calls.append(clock.time())
        raise bk.Transient("busy")

    return busy


def test_jittered_backoff_follows_the_seed(make_batch, clock):
    """With a seed, jittered delays are reproducible and stay within the jitter share."""
    schedules = []
    for name in ("a", "b"):
        batch = make_batch(name, seed=42)
        batch.add(_frame(1), key="n")
        calls: list[float] = []
        busy = _always_busy(calls, clock)
        batch.run(busy, backend="sequential",
                  retries=bk.RetryPolicy(retries=3, backoff=10.0, jitter=0.5), **BASIC)
        schedules.append([b - a for a, b in itertools.pairwise(calls)])
    assert schedules[0] == pytest.approx(schedules[1])
    for gap, base in zip(schedules[0], [10.0, 20.0, 40.0], strict=True):
        assert 0.5 * base <= gap <= 1.5 * base + 0.5


# -- HTTP-like errors --------------------------------------------------------------------


def test_http_429_retry_after_is_honoured(batch, clock):
    """An HTTP 429 with Retry-After: 30 is retried no sooner than 30 s later."""
    batch.add(pl.DataFrame({"n": [1], "status": [429], "retry_after": [30]}), key="n")
    calls = []

    def api(row):
        calls.append(clock.time())
        if len(calls) == 1:
            rowfns.http_status(row)
        return {"ok": True}

    batch.run(api, backend="sequential",
              retries=bk.RetryPolicy(retries=2, backoff=0.01, jitter=0), **BASIC)
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 30.0
    assert batch.counts()["done"] == 1


@pytest.mark.parametrize(("status", "attempts", "retryable"),
                         [(429, 3, True), (503, 3, True), (500, 3, True), (404, 1, False),
                          (400, 1, False)])
def test_http_status_errors_are_classified(batch, parallel_backend, status, attempts,
                                           retryable):
    """HTTP 429/5xx errors are retried up to the limit; 404 and other 4xx fail at once."""
    batch.add(pl.DataFrame({"n": [1], "status": [status], "retry_after": [1]}), key="n")
    batch.run(rowfns.http_status, backend=parallel_backend, workers=2, retries=2, **BASIC)
    failed = batch.failed()
    assert failed["error_type"].to_list() == ["HTTPStatusError"]
    assert failed["attempts"].to_list() == [attempts]
    assert failed["retryable"].to_list() == [retryable]
    assert str(status) in failed["error_message"][0]


def test_httpx_transport_errors_are_transient(batch, clock):
    """httpx connection errors from a MockTransport are retried like other transient errors."""
    attempts = []

    def refuse(request):
        attempts.append(request.url.path)
        if len(attempts) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"employees": 12})

    client = httpx.Client(transport=httpx.MockTransport(refuse),
                          base_url="https://api.example.test")

    def enrich(row):
        return client.get(f"/companies/{row['n']}").raise_for_status().json()

    try:
        batch.add(_frame(1), key="n")
        batch.run(enrich, backend="threads", retries=3, **BASIC)
    finally:
        client.close()
    assert batch.results()["employees"].to_list() == [12]
    assert batch.items()["_attempts"].to_list() == [3]


# -- halting -----------------------------------------------------------------------------


def _fails_at_five(row):
    if row["n"] == 5:
        raise ValueError("five")
    return {"m": row["n"]}


@pytest.mark.parametrize("backend", ["sequential", "threads"])
def test_on_error_halt_stops_and_stays_resumable(batch, backend):
    """on_error='halt' stops at the first failure; the next run finishes the rest."""
    batch.add(_frame(40), key="n")
    report = batch.run(_fails_at_five, backend=backend, workers=1, chunk_size=1,
                       on_error="halt", **BASIC)
    assert report.outcome == "halted"
    assert "on_error='halt'" in report.halt_reason
    counts = batch.counts()
    assert counts["failed"] == 1 and counts["running"] == 0
    assert counts["pending"] > 0
    assert "left" in str(report)
    again = batch.run(_fails_at_five, backend=backend, workers=1, chunk_size=1, **BASIC)
    assert again.outcome == "completed"
    assert batch.counts() == {"pending": 0, "running": 0, "done": 39, "failed": 1}
    assert batch.items()["_attempts"].to_list() == [1] * 40


def test_max_failure_rate_halts(batch):
    """Too high a share of failed rows halts the run; the rest stays pending."""
    batch.add(_frame(100), key="n")
    report = batch.run(rowfns.fail_odd, backend="sequential", chunk_size=4, retries=0,
                       max_failure_rate=0.2, **BASIC)
    assert report.outcome == "halted"
    assert "max_failure_rate=0.2" in report.halt_reason
    counts = batch.counts()
    assert counts["pending"] > 0 and counts["running"] == 0
    assert report.processed >= 10


def test_batch_halted_by_failure_rate_resumes(batch):
    """A batch halted by max_failure_rate finishes when run again without the limit."""
    batch.add(_frame(60), key="n")
    batch.run(rowfns.fail_odd, backend="sequential", chunk_size=4, retries=0,
              max_failure_rate=0.2, **BASIC)
    report = batch.run(rowfns.fail_odd, backend="sequential", chunk_size=4, retries=0,
                       **BASIC)
    assert report.outcome == "completed"
    assert batch.counts() == {"pending": 0, "running": 0, "done": 30, "failed": 30}
    assert batch.items()["_attempts"].to_list() == [1] * 60


def test_failure_rate_below_the_limit_completes(batch):
    """A failure share under max_failure_rate lets the run complete."""
    batch.add(_frame(40), key="n")
    report = batch.run(_fails_at_five, backend="sequential", chunk_size=4,
                       max_failure_rate=0.1, **BASIC)
    assert report.outcome == "completed"
    assert batch.counts()["failed"] == 1


# -- only= -------------------------------------------------------------------------------


def test_only_failed_reruns_exactly_the_failed_rows(batch, backend):
    """only='failed' re-runs the failed rows; other rows keep their run id and attempts."""
    batch.add(_frame(10), key="n")
    first = batch.run(rowfns.fail_odd, backend=backend, workers=_workers(backend),
                      retries=0, **BASIC)
    before = batch.items()
    second = batch.run(rowfns.double, only="failed", backend=backend,
                       workers=_workers(backend), **BASIC)
    assert (second.processed, second.succeeded) == (5, 5)
    after = batch.items()
    odd = pl.col("n") % 2 == 1
    untouched = ["_id", "n", "half", "_status", "_attempts", "_run_id", "_started_at",
                 "_finished_at"]
    assert after.filter(~odd).select(untouched).equals(before.filter(~odd).select(untouched))
    assert after.filter(~odd)["_run_id"].unique().to_list() == [first.run_id]
    rerun = after.filter(odd)
    assert rerun["_status"].to_list() == ["done"] * 5
    assert rerun["_attempts"].to_list() == [2] * 5
    assert rerun["_run_id"].unique().to_list() == [second.run_id]
    assert rerun["double"].to_list() == [2, 6, 10, 14, 18]
    assert after.filter(~odd)["double"].null_count() == 5


def test_only_failed_gives_failed_rows_a_fresh_attempt_budget(batch):
    """Rows that used up their retries get the full retries again with only='failed'."""
    batch.add(_frame(1), key="n")
    batch.run(rowfns.always_transient, backend="sequential", retries=1, **BASIC)
    assert batch.failed()["attempts"].to_list() == [2]
    batch.run(rowfns.always_transient, backend="sequential", retries=1, only="failed",
              **BASIC)
    assert batch.failed()["attempts"].to_list() == [4]


def test_only_failed_with_nothing_failed_runs_nothing(batch):
    """only='failed' when no row failed calls the function on no row."""
    batch.add(_frame(3), key="n")
    batch.run(rowfns.square, backend="sequential", **BASIC)
    before = batch.items()
    calls = []
    report = batch.run(calls.append, only="failed", backend="sequential", **BASIC)
    assert calls == [] and report.processed == 0
    assert batch.items().equals(before)


def test_only_expression_reruns_exactly_the_selected_rows(batch, backend):
    """only=<expr> re-runs the rows it selects, done ones included, replacing their results."""
    batch.add(_frame(8), key="n")
    first = batch.run(rowfns.square, backend=backend, workers=_workers(backend), **BASIC)
    before = batch.items()
    second = batch.run(rowfns.double, only=pl.col("n") >= 5, backend=backend,
                       workers=_workers(backend), **BASIC)
    assert second.processed == 3
    after = batch.items()
    chosen = pl.col("n") >= 5
    kept = ["_id", "square", "_attempts", "_run_id", "_finished_at"]
    assert after.filter(~chosen).select(kept).equals(before.filter(~chosen).select(kept))
    assert after.filter(~chosen)["_run_id"].unique().to_list() == [first.run_id]
    rerun = after.filter(chosen)
    assert rerun["double"].to_list() == [10, 12, 14]
    assert rerun["square"].null_count() == 3  # the old results were replaced
    assert rerun["_attempts"].to_list() == [2, 2, 2]
    assert rerun["_run_id"].unique().to_list() == [second.run_id]
    assert batch.counts()["done"] == 8


def test_only_expression_over_status_columns(batch):
    """only= can select by status columns, e.g. failed rows of one error type."""
    batch.add(_frame(6), key="n")
    batch.run(rowfns.fail_odd, backend="sequential", retries=0, **BASIC)
    calls = []

    def record(row):
        calls.append(row["n"])
        return {"half": row["n"] // 2}

    batch.run(record, only=(pl.col("_error_type") == "ValueError") & (pl.col("n") > 2),
              backend="sequential", **BASIC)
    assert sorted(calls) == [3, 5]
    assert batch.failed()["n"].to_list() == [1]


def test_selection_ends_with_the_run(batch):
    """After an only= run, the next plain run again covers every pending row."""
    batch.add(_frame(4), key="n")
    batch.run(rowfns.square, only=pl.col("n") < 2, backend="sequential", **BASIC)
    assert batch.counts() == {"pending": 2, "running": 0, "done": 2, "failed": 0}
    report = batch.run(rowfns.square, backend="sequential", **BASIC)
    assert report.processed == 2
    assert batch.counts()["done"] == 4


@pytest.mark.parametrize("only", ["bogus", 5, pl.col("no_such_column") > 1],
                         ids=["string", "number", "bad-expression"])
def test_bad_only_raises_before_any_work(batch, only):
    """An only= that is not 'failed' or a valid expression raises ConfigError."""
    batch.add(_frame(2), key="n")
    with pytest.raises(bk.ConfigError, match="only"):
        batch.run(rowfns.square, only=only, **BASIC)
    assert batch.counts()["pending"] == 2


# -- empty and finished batches ----------------------------------------------------------


def test_running_an_absent_batch_is_a_no_op(batch):
    """run() of a batch with no rows returns an 'empty' report and never calls the function."""
    calls = []
    report = batch.run(calls.append, **BASIC)
    assert report.outcome == "empty"
    assert (report.processed, report.succeeded, report.failed) == (0, 0, 0)
    assert calls == []
    assert "empty" in str(report)
    assert batch.counts() == {"pending": 0, "running": 0, "done": 0, "failed": 0}


def test_running_a_finished_batch_does_nothing(batch):
    """run() when every row is done calls the function on no row."""
    batch.add(_frame(3), key="n")
    batch.run(rowfns.square, backend="sequential", **BASIC)
    before = batch.items()
    calls = []
    report = batch.run(calls.append, backend="threads", **BASIC)
    assert calls == [] and report.processed == 0
    assert report.outcome == "completed"
    assert batch.items().equals(before)


def test_new_rows_added_after_a_run_are_run_next_time(batch):
    """Rows added after a run are pending and run by the next run alone."""
    batch.add(_frame(3), key="n")
    batch.run(rowfns.square, backend="sequential", **BASIC)
    batch.add(_frame(5), key="n")
    report = batch.run(rowfns.square, backend="sequential", **BASIC)
    assert report.processed == 2
    assert batch.results()["square"].to_list() == [0, 1, 4, 9, 16]


# -- timeouts ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sequential", "threads"])
def test_timeout_abandons_a_hung_row_in_threads(batch, backend):
    """A row running past timeout fails with ItemTimeout quickly; the others finish."""
    release = threading.Event()

    def hang_on_zero(row):
        if row["n"] == 0:
            release.wait(5)
        return {"m": row["n"]}

    batch.add(_frame(5), key="n")
    try:
        report = batch.run(hang_on_zero, backend=backend, workers=2, timeout=0.5, retries=0,
                           **BASIC)
    finally:
        release.set()
    failed = batch.failed()
    assert failed["n"].to_list() == [0]
    assert failed["error_type"].to_list() == ["ItemTimeout"]
    assert failed["retryable"].to_list() == [True]
    assert batch.counts()["done"] == 4
    assert report.elapsed_s < 4.5  # generous: the hung row would take 5 s


def test_timeout_interrupts_a_hung_row_in_processes(batch):
    """On processes a row running past timeout is interrupted with ItemTimeout."""
    batch.add(pl.DataFrame({"n": [0, 1, 2, 3], "sleep": [5.0, 0.0, 0.0, 0.0]}), key="n")
    report = batch.run(rowfns.sleepy, backend="processes", workers=2, timeout=0.5, retries=0,
                       **BASIC)
    failed = batch.failed()
    assert failed["n"].to_list() == [0]
    assert failed["error_type"].to_list() == ["ItemTimeout"]
    assert batch.counts()["done"] == 3
    assert report.elapsed_s < 4.5  # generous: the hung row would take 5 s


def test_timed_out_rows_are_retried(batch):
    """ItemTimeout is transient: a row that hangs once succeeds on its retry."""
    release = threading.Event()

    def slow_first(row):
        ctx = bk.current_item()
        if ctx.attempt == 1:
            release.wait(5)
        return {"attempt": ctx.attempt}

    batch.add(_frame(1), key="n")
    try:
        batch.run(slow_first, backend="threads", timeout=0.3, retries=1, **BASIC)
    finally:
        release.set()
    assert batch.results()["attempt"].to_list() == [2]


# -- bad arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"backend": "gpu"}, "unknown backend 'gpu'; choose one of ['processes', "
                             "'sequential', 'threads']"),
        ({"backend": None}, "backend must be a string"),
        ({"workers": 0}, "workers must be a positive whole number, got 0"),
        ({"workers": -2}, "workers must be a positive whole number, got -2"),
        ({"workers": 2.5}, "workers must be a positive whole number, got 2.5"),
        ({"chunk_size": 0}, "chunk_size must be a positive whole number, got 0"),
        ({"chunk_size": True}, "chunk_size must be a positive whole number, got True"),
        ({"retries": -1}, "retries must be a whole number >= 0, got -1"),
        ({"timeout": 0}, "timeout must be seconds > 0 or None, got 0"),
        ({"timeout": "30"}, "timeout must be seconds > 0 or None"),
        ({"on_error": "ignore"}, "on_error must be one of ['skip', 'halt'], got 'ignore'"),
        ({"max_failure_rate": 2}, "max_failure_rate must be a share between 0 and 1"),
        ({"max_failure_rate": -0.1}, "max_failure_rate must be a share between 0 and 1"),
        ({"progress": "yes"}, "progress must be True, False or 'auto'"),
    ],
    ids=lambda v: ",".join(f"{k}={w!r}" for k, w in v.items()) if isinstance(v, dict)
    else "msg",
)
def test_bad_arguments_raise_before_any_work(batch, kwargs, expected):
    """Bad run arguments raise ConfigError naming the value; no row runs, no run is recorded."""
    batch.add(_frame(3), key="n")
    calls = []
    with pytest.raises(bk.ConfigError) as err:
        batch.run(calls.append, **{"progress": False, **kwargs})
    assert expected in str(err.value)
    assert isinstance(err.value, ValueError)
    assert calls == []
    assert batch.counts()["pending"] == 3
    assert batch.store.query("SELECT count(*) AS n FROM _batchkit_runs")["n"][0] == 0


def test_bad_arguments_raise_even_for_an_empty_batch(batch):
    """Arguments are checked before looking at the rows."""
    with pytest.raises(bk.ConfigError, match="workers"):
        batch.run(rowfns.square, workers=0, **BASIC)


def test_unpicklable_function_is_refused_for_processes(batch):
    """A function capturing a lock cannot go to processes: ConfigError says how to fix it."""
    lock = threading.Lock()

    def guarded(row):
        with lock:
            return {"m": row["n"]}

    batch.add(_frame(2), key="n")
    with pytest.raises(bk.ConfigError) as err:
        batch.run(guarded, backend="processes", **BASIC)
    message = str(err.value)
    assert "'guarded'" in message and "module level" in message and "threads" in message
    assert batch.counts()["pending"] == 2
    batch.run(guarded, backend="threads", **BASIC)  # fine where memory is shared
    assert batch.counts()["done"] == 2


def test_non_callable_function_is_refused(batch):
    """Passing something that is not callable raises ConfigError."""
    batch.add(_frame(1), key="n")
    with pytest.raises(bk.ConfigError, match="callable"):
        batch.run("square", **BASIC)


# -- automatic chunk size ----------------------------------------------------------------


def test_chunk_sizer_fixed_size_is_kept():
    """A chunk_size given by the user is used as is."""
    sizer = ChunkSizer(50, workers=4)
    sizer.observe(50, 100.0)
    assert sizer.size() == 50 and sizer.size(remaining=3) == 50


def test_chunk_sizer_adapts_to_row_duration():
    """Automatic sizing: small chunks for slow rows, large (capped) for fast ones."""
    slow, fast = ChunkSizer(None, workers=2), ChunkSizer(None, workers=2)
    first = slow.size()
    slow.observe(10, 20.0)  # 2 s per row
    fast.observe(1000, 0.001)  # 1 us per row
    assert slow.size() == 1
    assert fast.size() == 10_000
    assert 1 < first < 10_000


def test_chunk_sizer_keeps_workers_busy_at_the_tail():
    """Near the end, chunks shrink so every worker gets at least two."""
    sizer = ChunkSizer(None, workers=4)
    sizer.observe(1000, 0.001)
    assert sizer.size(remaining=80) == 10


# -- the report --------------------------------------------------------------------------


def test_report_renders_counts_in_terminal_and_notebook(batch):
    """RunReport's str, repr and HTML show outcome, counts, failures and the next step."""
    batch.add(_frame(10), key="n")
    report = batch.run(rowfns.fail_odd, backend="sequential", retries=0, **BASIC)
    text = str(report)
    assert repr(report) == text
    for part in ("completed", "5 done", "5 failed", "0 pending", "of 10", "ValueError: 5",
                 report.run_id, "only='failed'"):
        assert part in text
    html = report._repr_html_()
    for part in ("completed", "5 done", "5 failed", "ValueError: 5", "<table>"):
        assert part in html
    assert report.items_per_s > 0
    assert report.elapsed_s > 0


def test_report_escapes_html(batch):
    """Error type names and batch names are escaped in the HTML report."""
    report = bk.RunReport("b", "r", "completed", {"pending": 0, "running": 0, "done": 0,
                                                  "failed": 1}, 1, 0, 1, 0, 0, 0, 1.0,
                          {"<script>": 1})
    assert "<script>" not in report._repr_html_()
    assert "&lt;script&gt;" in report._repr_html_()
