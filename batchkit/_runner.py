"""The driver loop: claim chunks, run them, checkpoint results as they come back.

One thread (the caller's) owns the store. Each turn of the loop is one transaction
that records every chunk finished since the last turn and claims the rows to
dispatch next (their attempt counted at dispatch), so finished chunks are grouped
whenever they arrive faster than a commit takes, and no chunk is ever split.

Worker crashes (processes backend) fail every chunk in flight. Their rows are
*suspects*: they stay ``running`` under the same attempt and are re-run alone (in
bisected groups, one group at a time), so only the row that kills a worker again is
charged an attempt.
"""

from __future__ import annotations

import concurrent.futures as cf
import inspect
import math
import os
import random
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ._cacheread import CacheServer, RemoteCacheReader, StoreCacheReader
from ._clock import Clock
from ._errors import ConfigError
from ._executors import Executor, check_backend, default_workers, make_executor, sends_functions
from ._pipeline import Pipeline, close_idle_loops, resolve_prefill
from ._policy import RetryPolicy
from ._report import RunReport
from ._store import Store
from ._types import merge_dtypes
from ._watch import RunWatch
from ._worker import ChunkResult, ChunkTask, _no_usage

__all__ = ["RunOptions", "Runner", "make_options"]

_ON_ERROR = ("skip", "halt")
_MIN_ROWS_FOR_RATE = 10  # max_failure_rate is judged once this many rows have ended
_MAX_CHUNK = 10_000
_TARGET_CHUNK_S = 0.5  # automatic chunk size aims at this many seconds of work per chunk
_FIRST_CHUNK = 16
_ISOLATE_SINGLE = 8  # suspect groups this small are re-run one row at a time
_POLL_S = 0.25  # the longest the loop waits without checking for Ctrl-C or due retries


@dataclass(frozen=True)
class RunOptions:
    """The validated settings of one run."""

    backend: str
    workers: int
    chunk_size: int | None
    retry: RetryPolicy
    timeout: float | None
    on_error: str
    max_failure_rate: float | None
    progress: bool


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive whole number, got {value!r}")
    return value


def make_options(*, backend: str, workers: int | None, chunk_size: int | None,
                 retries: int | RetryPolicy, timeout: float | None, on_error: str,
                 max_failure_rate: float | None, progress: bool | str) -> RunOptions:
    """Validate run arguments; every problem raises ConfigError before work starts."""
    if not isinstance(backend, str):
        raise ConfigError(f"backend must be a string, got {backend!r}")
    check_backend(backend)
    workers = default_workers(backend) if workers is None else _positive_int("workers", workers)
    if chunk_size is not None and chunk_size != "auto":
        chunk_size = _positive_int("chunk_size", chunk_size)
    else:
        chunk_size = None
    retry = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"timeout must be seconds > 0 or None, got {timeout!r}")
        timeout = float(timeout)
    if on_error not in _ON_ERROR:
        raise ConfigError(
            f"on_error must be one of {list(_ON_ERROR)}, got {on_error!r}: 'skip' records a "
            "failed row and goes on, 'halt' stops the run at the first failed row")
    if max_failure_rate is not None and (
        isinstance(max_failure_rate, bool) or not isinstance(max_failure_rate, (int, float))
        or not 0 <= max_failure_rate <= 1
    ):
        raise ConfigError(
            f"max_failure_rate must be a share between 0 and 1 (e.g. 0.15), "
            f"got {max_failure_rate!r}")
    if progress == "auto":
        progress = _interactive()
    elif not isinstance(progress, bool):
        raise ConfigError(f"progress must be True, False or 'auto', got {progress!r}")
    return RunOptions(backend, workers, chunk_size, retry, timeout, on_error,
                      max_failure_rate, progress)


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def wants_context(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes the ItemContext as its second positional argument."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2:
        return False
    # fn(row, ctx) — but not fn(row, cache=None): a defaulted second parameter is the
    # user's own unless it is named like a context
    second = positional[1]
    return second.default is inspect.Parameter.empty or second.name in ("ctx", "context")


def check_function(fn: Any, backend: str, workers: int = 1) -> str:
    """Validate the row function; return its name."""
    if not callable(fn):
        raise ConfigError(f"the function to run must be callable, got {type(fn).__name__}")
    name = getattr(fn, "__name__", None) or type(fn).__name__
    check_workers = getattr(fn, "check_workers", None)
    if sends_functions(backend) and callable(check_workers):
        check_workers(workers)  # e.g. a rate limit that cannot be split across processes
    if sends_functions(backend):
        import cloudpickle

        try:
            cloudpickle.dumps(fn)
        except Exception as exc:
            raise ConfigError(
                f"function {name!r} cannot be sent to worker processes ({type(exc).__name__}: "
                f"{exc}). Define it at module level and create clients, locks or connections "
                "inside it instead of capturing them, or use backend='threads'."
            ) from None
    return name


@dataclass
class _InFlight:
    """A dispatched chunk, as the driver remembers it."""

    rows: pl.DataFrame  # the payload (_id, _key, _attempts, _attempts_base, inputs)
    isolated: bool  # dispatched alone (nothing else in flight)
    progress: list[int] = field(default_factory=lambda: [0])  # rows finished (threads)
    dispatched: float = field(default_factory=time.monotonic)


@dataclass
class _Tally:
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    crashes: int = 0
    failures: dict[str, int] = field(default_factory=dict)


class ChunkSizer:
    """Chooses rows per chunk: fixed, or sized to about ``_TARGET_CHUNK_S`` of work."""

    def __init__(self, fixed: int | None, workers: int) -> None:
        self.fixed = fixed
        self.workers = workers
        self.per_row: float | None = None

    def observe(self, rows: int, seconds: float) -> None:
        """Fold one finished chunk's rows and summed row seconds into the estimate."""
        if rows <= 0:
            return
        sample = max(seconds / rows, 1e-7)
        self.per_row = sample if self.per_row is None else 0.7 * self.per_row + 0.3 * sample

    def size(self, remaining: int | None = None) -> int:
        """Rows for the next chunk."""
        if self.fixed is not None:
            return self.fixed
        if self.per_row is None:
            size = _FIRST_CHUNK
        else:
            size = int(min(_MAX_CHUNK, max(1, _TARGET_CHUNK_S / self.per_row)))
        if remaining:
            # keep every worker busy at the tail: at least two chunks per worker
            size = min(size, max(1, math.ceil(remaining / (2 * self.workers))))
        return size


class Runner:
    """Runs one ``Batch.run``: the driver loop, its checkpoints and its stop conditions."""

    def __init__(self, store: Store, batch: str, fn: Callable[..., Any], fn_name: str,
                 options: RunOptions, *, clock: Clock, rng: random.Random,
                 selected: bool, watch: RunWatch | None = None, refresh: bool = False,
                 run_id: str | None = None) -> None:
        self.store = store
        self.batch = batch
        self.fn = fn
        self.fn_name = fn_name
        self.opt = options
        self.clock = clock
        self.rng = rng
        self.selected = selected
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.watch = watch or RunWatch(batch, self.run_id, clock=clock,
                                       workers=options.workers)
        self.stop_requested = threading.Event()  # a background run's stop()
        self.pass_ctx = wants_context(fn)
        info = store.batch_info(batch)
        assert info is not None
        self.input_columns = list(info.input_schema)
        self.sizer = ChunkSizer(options.chunk_size, options.workers)
        self.tally = _Tally()
        self.cancel = threading.Event()
        self.inflight: dict[cf.Future[ChunkResult], _InFlight] = {}
        self.ready: list[tuple[ChunkResult, _InFlight]] = []
        self.chunks_collected = 0  # chunks in the commit being accounted (live figures)
        self.suspects: deque[pl.DataFrame] = deque()
        self.quarantine: set[int] = set()
        self.stop_reason: str | None = None
        self.stop_outcome = "halted"  # or "budget", "stopped"
        self.queue = pl.Series("_id", [], dtype=pl.Int64)  # pending ids still to claim
        self.qpos = 0
        # re-read pending ids only when new ones may exist: at the start, after rows were
        # released or scheduled for a retry, and once the earliest known retry is due
        self.refill = True
        self.next_retry: float | None = None
        self.executor: Executor | None = None
        self.pending_steps: pl.DataFrame | None = None  # step records of the next commit
        self.refresh = refresh
        self.cache_service: StoreCacheReader | CacheServer | None = None  # closed at the end
        self.cache_reader: StoreCacheReader | RemoteCacheReader | None = None  # sent to workers
        self.memos: dict[tuple[str, str], dict[str, bytes]] | None = None
        if isinstance(fn, Pipeline):
            stored = store.load_memos([(s.name, s.options.version) for s in fn.steps])
            if any(stored.values()):
                fn.seed_memos(stored)  # threads share this process's memo
                self.memos = stored  # processes get it with each chunk

    # -- public --------------------------------------------------------------------------

    def run(self) -> RunReport:
        """Run to the end (or a halt); Ctrl-C stops cleanly and re-raises."""
        started = time.monotonic()
        self.reclaimed = self.store.begin_run(
            self.batch, self.run_id, self.fn_name,
            {"backend": self.opt.backend, "workers": self.opt.workers,
             "chunk_size": self.opt.chunk_size, "retries": self.opt.retry.retries,
             "timeout": self.opt.timeout, "on_error": self.opt.on_error},
            max_attempts=self.opt.retry.max_attempts)
        todo = self.store.count_selected(self.batch, selected=self.selected, status="pending")
        self.watch.start(todo, self.sizer.size(todo))
        outcome = "completed"
        try:
            # inside the try: a cluster that fails to start ends the run as "died"
            self.executor = make_executor(self.opt.backend, self.opt.workers)
            self._start_cache_service()
            self._loop(todo)
            if self.stop_reason:
                outcome = self.stop_outcome
                self._drain()
        except KeyboardInterrupt:
            outcome = "interrupted"
            self._interrupt()
            self._finish(outcome, started)
            print(f"\nbatchkit: interrupted. Finished rows are saved; "
                  f"{self._left():,} rows left pending. Run the same batch.run(...) again to "
                  "resume.", file=sys.stderr)
            raise
        except BaseException:
            self._abort()
            self._finish("died", started)
            raise
        return self._finish(outcome, started)

    def _start_cache_service(self) -> None:
        """Let workers look up the cache for steps after one that ran (see _cacheread)."""
        fn = self.fn
        if (not isinstance(fn, Pipeline) or self.refresh or len(fn.steps) < 2
                or not any(s.options.cache for s in fn.steps[1:])):
            return
        assert self.executor is not None
        if self.executor.shares_memory:
            reader = StoreCacheReader(self.store)
            self.cache_service = reader
            self.cache_reader = reader
        else:
            server = CacheServer(self.store)
            self.cache_service = server
            self.cache_reader = server.reader()

    # -- the loop ------------------------------------------------------------------------

    def _loop(self, todo: int) -> None:
        remaining = todo
        while True:
            size = self.sizer.size(remaining)
            if self.stop_requested.is_set() and not self.stop_reason:
                self._stop("stopped", "stop() was called: finished rows are kept, the rest "
                           "stay pending")
            want = 0 if self.stop_reason else self._free_slots() * size
            if want:
                running = (sum(c.rows.height for c in self.inflight.values())
                           + sum(c.rows.height for _, c in self.ready))  # not yet committed
                allowed = self.watch.budget_rows(want=want, running=running)
                if allowed < want:
                    want = allowed
                    if not want and not self.inflight:
                        self._stop("budget", self._budget_reason())
            outcomes, values, rows_done = self._collect_ready()
            claimed = self.store.checkpoint(
                self.batch, self.run_id, outcomes, values, steps=self.pending_steps,
                claim=self._next_range(want),
                now=self.clock.time(), selected=self.selected)
            if outcomes is not None:
                self._account(outcomes)
                remaining = max(0, remaining - rows_done)
            if claimed is not None and claimed.height:
                self._dispatch(claimed, size)
            if self.suspects and not self.inflight and not self.stop_reason:
                self._submit(self.suspects.popleft(), isolated=True)
            if self.inflight:
                self._wait()
                continue
            if self.ready:
                continue
            if self.stop_reason:
                return
            due = self.store.next_due(self.batch, selected=self.selected)
            if due is None:
                return
            self.refill = True
            self.clock.sleep(min(_POLL_S, max(0.0, due - self.clock.time())))

    def _stop(self, outcome: str, reason: str) -> None:
        self.stop_outcome = outcome
        self.stop_reason = reason
        self.cancel.set()

    def _budget_reason(self) -> str:
        s = self.watch.stats
        per = s.cost_per_item or 0.0
        return (f"budget ${s.budget_usd:,.2f}: ${s.cost_usd:,.2f} spent at ${per:,.4f} a row; "
                f"another chunk would pass the budget. The rest stay pending: raise budget= "
                "and run again to continue")

    def _next_range(self, want: int) -> tuple[int, int] | None:
        """The id range holding the next ``want`` pending rows (refilling the queue)."""
        if want <= 0:
            return None
        if self.qpos >= self.queue.len():
            now = self.clock.time()
            due = self.next_retry is not None and now >= self.next_retry
            if not (self.refill or due):
                return None
            self.queue = self.store.pending_ids(self.batch, now=now, selected=self.selected)
            self.qpos = 0
            self.refill = False
            self.next_retry = self.store.next_retry_after(self.batch, now=now,
                                                          selected=self.selected)
            if not self.queue.len():
                return None
        ids = self.queue[self.qpos:self.qpos + want]
        self.qpos += ids.len()
        return int(ids[0]), int(ids[-1])

    def _free_slots(self) -> int:
        if self.suspects or any(f.isolated for f in self.inflight.values()):
            return 0
        return max(0, 2 * self.opt.workers - len(self.inflight))

    def _dispatch(self, claimed: pl.DataFrame, size: int) -> None:
        if self.quarantine:
            bad = claimed["_id"].is_in(list(self.quarantine))
            for i in range(int(bad.sum())):
                self.suspects.append(claimed.filter(bad)[i:i + 1])
            claimed = claimed.filter(~bad)
        for start in range(0, claimed.height, size):
            self._submit(claimed[start:start + size], isolated=False)

    def _submit(self, rows: pl.DataFrame, *, isolated: bool) -> None:
        assert self.executor is not None
        prefill = None
        if isinstance(self.fn, Pipeline):
            prefill = resolve_prefill(self.store, self.batch, self.fn, rows,
                                      self.input_columns, use_cache=not self.refresh) or None
        task = ChunkTask(
            fn=self.fn,
            frame=rows.select("_id", "_key", "_attempts", *self.input_columns),
            input_columns=self.input_columns,
            batch=self.batch,
            run_id=self.run_id,
            fn_name=self.fn_name,
            pass_ctx=self.pass_ctx,
            timeout=self.opt.timeout,
            driver_pid=None if self.executor.shares_memory else os.getpid(),
            cancel=self.cancel if self.executor.shares_memory else None,
            processes=1 if self.executor.shares_memory else self.opt.workers,
            prefill=prefill,
            memos=None if self.executor.shares_memory else self.memos,
            refresh=self.refresh,
            progress=[0] if self.executor.shares_memory else None,
            cache_reader=self.cache_reader,
        )
        self.inflight[self.executor.submit(task)] = _InFlight(rows, isolated,
                                                              task.progress or [0])

    def _tick(self) -> None:
        running = sum(c.rows.height for c in self.inflight.values())
        in_chunk = sum(c.progress[0] for c in self.inflight.values())
        pending = self.queue.len() - self.qpos
        self.watch.tick(running=running, chunks_running=len(self.inflight),
                        pending=max(0, pending), chunk_size=self.sizer.size(),
                        in_chunk_done=in_chunk)

    def _wait(self) -> None:
        self._tick()
        if self.ready:
            done = {f for f in self.inflight if f.done()}
        else:
            done = self.clock.wait(list(self.inflight), timeout=_POLL_S)
        crashed: list[_InFlight] = []
        for future in done:
            chunk = self.inflight.pop(future)
            exc = future.exception()
            if exc is None:
                result = future.result()
                self.ready.append((result, chunk))
                if result.outcomes.height:
                    self.sizer.observe(result.outcomes.height,
                                       float(result.outcomes["_duration_s"].sum()))
                if result.interrupted:
                    raise KeyboardInterrupt
            elif self.executor is not None and not self.executor.is_crash(exc):
                raise exc  # not a dead worker (e.g. a cluster that cannot load the task)
            else:
                crashed.append(chunk)
        if crashed:
            self._on_crash(crashed)

    def _on_crash(self, crashed: list[_InFlight]) -> None:
        """A worker died: the chunks it held failed (with loky: every chunk in flight)."""
        assert self.executor is not None
        self.tally.crashes += 1
        if self.executor.crash_fails_all:
            for future in list(self.inflight):  # the pool is broken: the rest fail too
                try:
                    future.result(timeout=30)
                    self.ready.append((future.result(), self.inflight.pop(future)))
                except BaseException:  # noqa: BLE001
                    crashed.append(self.inflight.pop(future))
            self.executor.restart()
        culprit = (len(crashed) == 1 and crashed[0].isolated and crashed[0].rows.height == 1)
        if culprit:
            rows = crashed[0].rows
            self.quarantine.add(int(rows["_id"][0]))
            self.ready.append((_crash_result(rows), crashed[0]))
            return
        for chunk in crashed:
            rows = chunk.rows
            if rows.height <= _ISOLATE_SINGLE:
                self.suspects.extend(rows[i:i + 1] for i in range(rows.height))
            else:
                half = rows.height // 2
                self.suspects.extend((rows[:half], rows[half:]))

    # -- results -------------------------------------------------------------------------

    def _collect_ready(self) -> tuple[pl.DataFrame | None, pl.DataFrame | None, int]:
        if not self.ready:
            return None, None, 0
        ready, self.ready = self.ready, []
        self.chunks_collected = len(ready)
        outs = [r.outcomes for r, _ in ready if r.outcomes.height]
        vals = [r.values for r, _ in ready if r.values.height]
        steps = [r.steps for r, _ in ready if r.steps is not None and r.steps.height]
        self.pending_steps = pl.concat(steps) if steps else None
        memos = [m for r, _ in ready if r.memos for m in r.memos]
        if memos:
            self.store.save_memos(memos)
        not_started = [i for r, _ in ready for i in r.not_started]
        if not_started:
            self.store.release(self.batch, self.run_id, not_started, refund=True)
            self.refill = True
        if not outs:
            return None, None, 0
        outcomes = pl.concat(outs, how="vertical")
        bases = pl.concat([c.rows.select("_id", "_attempts_base") for _, c in ready])
        outcomes = self._decide(outcomes.join(bases, on="_id", how="left"))
        values = None
        if vals:
            values, outcomes = self._check_conflicts(vals, outcomes, ready)
        return outcomes, values, outcomes.filter(pl.col("_status") != "pending").height

    def _decide(self, o: pl.DataFrame) -> pl.DataFrame:
        """Turn attempt outcomes into the new status columns (retry, done or failed)."""
        now = self.clock.time()
        retry = self.opt.retry
        used = pl.col("_attempt") - pl.col("_attempts_base")
        again = (~pl.col("ok")) & pl.col("transient").fill_null(False) & (
            used < retry.max_attempts)
        o = o.with_columns(_again=again)
        due = o.filter("_again")
        delays = [now + retry.delay(int(a), retry_after=ra, rng=self.rng)
                  for a, ra in zip(due["_attempt"] - due["_attempts_base"], due["retry_after"])]
        not_before = dict(zip(due["_id"].to_list(), delays))
        if delays:
            first = min(delays)
            self.next_retry = first if self.next_retry is None else min(self.next_retry, first)
        return o.with_columns(
            _status=pl.when(pl.col("ok")).then(pl.lit("done"))
            .when(pl.col("_again")).then(pl.lit("pending")).otherwise(pl.lit("failed")),
            _not_before=pl.col("_id").replace_strict(not_before, default=None,
                                                     return_dtype=pl.Float64)
            if not_before else pl.lit(None, dtype=pl.Float64),
            _retryable=pl.when(pl.col("ok")).then(None).otherwise(
                pl.col("transient").fill_null(False)),
            _started_at=pl.from_epoch((pl.col("_start") * 1e6).cast(pl.Int64), time_unit="us"),
            _finished_at=pl.from_epoch(((pl.col("_start") + pl.col("_duration_s")) * 1e6)
                                       .cast(pl.Int64), time_unit="us"),
        ).select("_id", "_attempt", "_status", "_error_type", "_error_message",
                 "_error_trace", "_retryable", "_not_before", "_started_at",
                 "_finished_at", "_duration_s", "_step", "usd", "tokens", "calls")

    def _check_conflicts(self, vals: list[pl.DataFrame], outcomes: pl.DataFrame,
                         ready: list[tuple[ChunkResult, _InFlight]]
                         ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Concatenate the chunks' values; rows whose result type conflicts fail alone.

        Each chunk is checked against the stored columns and the chunks before it, so
        a relaxed concat never coerces a drifting value (say int to str) silently.
        """
        known = dict(self.store.results_schema(self.batch))
        bad_ids: dict[int, str] = {}
        keys: dict[int, str] = {}
        checked = []
        for values in sorted(vals, key=lambda v: v["_id"][0]):  # earlier rows win
            for col, dtype in values.schema.items():
                if col in ("_id", "_attempt") or dtype == pl.Null():
                    continue
                stored = known.get(col)
                merged = dtype if stored is None else merge_dtypes(stored, dtype)
                if merged is not None:
                    known[col] = merged
                    continue
                if not keys:
                    keys = {i: k for _, c in ready
                            for i, k in zip(c.rows["_id"].to_list(), c.rows["_key"].to_list(),
                                             strict=True)}
                for rid in values.filter(pl.col(col).is_not_null())["_id"].to_list():
                    bad_ids.setdefault(rid, (
                        f"column {col!r} changed type at row {keys.get(rid)!r}: earlier rows "
                        f"gave {stored}, this row gave {dtype}. Return one type per column "
                        "(convert in your function), or return None."))
                values = values.with_columns(pl.lit(None, dtype=stored).alias(col))
            checked.append(values)
        values = pl.concat(checked, how="diagonal_relaxed")
        if not bad_ids:
            return values, outcomes
        values = values.filter(~pl.col("_id").is_in(list(bad_ids)))
        msg = pl.col("_id").replace_strict(bad_ids, default=None, return_dtype=pl.String)
        hit = pl.col("_id").is_in(list(bad_ids))
        outcomes = outcomes.with_columns(
            _status=pl.when(hit).then(pl.lit("failed")).otherwise(pl.col("_status")),
            _error_type=pl.when(hit).then(pl.lit("TypeDriftError")).otherwise(
                pl.col("_error_type")),
            _error_message=pl.when(hit).then(msg).otherwise(pl.col("_error_message")),
            _retryable=pl.when(hit).then(pl.lit(False)).otherwise(pl.col("_retryable")),
        )
        return values, outcomes

    def _account(self, o: pl.DataFrame) -> None:
        t = self.tally
        status = o["_status"]
        done = int((status == "done").sum())
        failed_rows = o.filter(pl.col("_status") == "failed")
        t.succeeded += done
        t.failed += failed_rows.height
        t.retries += int((status == "pending").sum())
        t.processed += done + failed_rows.height
        for etype, n in failed_rows.group_by("_error_type").len().iter_rows():
            t.failures[etype] = t.failures.get(etype, 0) + n
        halt = self.watch.committed(done=done, failed=failed_rows.height,
                                    retried=int((status == "pending").sum()),
                                    usd=float(o["usd"].sum()), chunks=self.chunks_collected)
        if self.stop_reason:
            return
        if halt:
            self._stop("halted", halt)
            return
        if self.opt.on_error == "halt" and failed_rows.height:
            first = failed_rows.row(0, named=True)
            self.stop_reason = (f"on_error='halt': row {first['_id']} failed with "
                                f"{first['_error_type']}")
        rate = self.opt.max_failure_rate
        if rate is not None and t.processed >= _MIN_ROWS_FOR_RATE and \
                t.failed / t.processed > rate:
            self.stop_reason = (f"failure rate {t.failed / t.processed:.0%} is above "
                                f"max_failure_rate={rate:g} after {t.processed} rows")
        if self.stop_reason:
            self.cancel.set()

    # -- stopping ------------------------------------------------------------------------

    def _drain(self) -> None:
        """After a halt: wait for chunks in flight, record them, release unstarted rows."""
        self.cancel.set()
        while self.inflight:
            self._wait()
        outcomes, values, _ = self._collect_ready()
        if outcomes is not None:
            self.store.checkpoint(self.batch, self.run_id, outcomes, values,
                                  steps=self.pending_steps)
            self._account(outcomes)
        self._release_all(refund=True)

    def _interrupt(self) -> None:
        """Ctrl-C: stop workers, keep what finished within about a second, release the rest."""
        self.cancel.set()
        assert self.executor is not None
        if self.executor.shares_memory:
            deadline = time.monotonic() + 1.0
            while self.inflight and time.monotonic() < deadline:
                done, _ = cf.wait(list(self.inflight), timeout=max(0.0, deadline -
                                                                    time.monotonic()),
                                  return_when=cf.FIRST_COMPLETED)
                for future in done:
                    chunk = self.inflight.pop(future)
                    if future.exception() is None:
                        self.ready.append((future.result(), chunk))
        self.executor.shutdown(kill=True)
        self.inflight.clear()
        try:
            outcomes, values, _ = self._collect_ready()
            if outcomes is not None:
                self.store.checkpoint(self.batch, self.run_id, outcomes, values,
                                  steps=self.pending_steps)
                self._account(outcomes)
        finally:
            self._release_all(refund=False)

    def _abort(self) -> None:
        self.cancel.set()
        if self.executor is not None:
            self.executor.shutdown(kill=True)
        self.inflight.clear()

    def _release_all(self, *, refund: bool) -> None:
        """Rows of this run still running go back to pending."""
        running = self.store.ids_with_status(self.batch, "running", run_id=self.run_id)
        if running.len():
            self.store.release(self.batch, self.run_id, running, refund=refund)
            self.store.recheck_exhausted(self.batch, self.run_id,
                                         self.opt.retry.max_attempts)

    def _left(self) -> int:
        c = self.store.counts(self.batch)
        return c["pending"] + c["running"]

    def _finish(self, outcome: str, started: float) -> RunReport:
        if self.executor is not None:
            self.executor.shutdown(kill=outcome not in ("completed", "halted", "budget",
                                                        "stopped"))
        if self.cache_service is not None:
            self.cache_service.close()
            self.cache_service = None
        if (isinstance(self.fn, Pipeline) and self.executor is not None
                and self.executor.shares_memory):
            self.fn.close()  # this process's pooled clients, async ones on their idle loops
            close_idle_loops()
        self.store.end_run(self.run_id, outcome)
        t = self.tally
        report = RunReport(
            batch=self.batch, run_id=self.run_id, outcome=outcome,
            counts=self.store.counts(self.batch), processed=t.processed,
            succeeded=t.succeeded, failed=t.failed, retries=t.retries,
            reclaimed=self.reclaimed, crashes=t.crashes,
            elapsed_s=time.monotonic() - started, failures_by_type=dict(t.failures),
            halt_reason=self.stop_reason, cost_usd=self.watch.stats.cost_usd)
        self.watch.finish(outcome, self.stop_reason)
        return report


def _crash_result(rows: pl.DataFrame) -> ChunkResult:
    """The outcome of a row that killed its worker process when run alone."""
    n = rows.height
    now = time.time()
    outcomes = pl.DataFrame({
        "_id": rows["_id"].cast(pl.Int64),
        "_attempt": rows["_attempts"].cast(pl.Int32),
        "ok": [False] * n,
        "_error_type": ["WorkerCrashed"] * n,
        "_error_message": ["the worker process died while running this row alone "
                           "(segfault, out of memory, os._exit, or a hard timeout)"] * n,
        "_error_trace": pl.Series([None] * n, dtype=pl.String),
        "transient": [True] * n,
        "retry_after": pl.Series([None] * n, dtype=pl.Float64),
        "_start": [now] * n,
        "_duration_s": [0.0] * n,
        **_no_usage(n),
    })
    values = pl.DataFrame({"_id": pl.Series([], dtype=pl.Int64),
                           "_attempt": pl.Series([], dtype=pl.Int32)})
    return ChunkResult(outcomes, values, [])
