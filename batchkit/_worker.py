"""The chunk function: runs the user's function over one chunk of rows, in a worker.

It never touches the store and never lets an exception escape (FACTS: one escaping
exception aborts a whole loky call): every row's outcome comes back as data.
"""

from __future__ import annotations

import contextvars
import faulthandler
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ._errors import ItemTimeout
from ._policy import classify, redact
from ._types import ResultError, build_values, normalize_result

__all__ = ["ChunkResult", "ChunkTask", "ItemContext", "current_item", "run_chunk"]

_DRIVER_CHECK_EVERY = 0.25  # seconds between checks that the driver is alive


class ItemContext:
    """What a running row knows about itself: batch, key, attempt and run.

    Pass a function of two arguments (``def enrich(row, ctx)``) to receive it, or call
    ``bk.current_item()`` inside a one-argument function.

    Example:
        >>> ctx = ItemContext("leads", "acme", 2, "r1")
        >>> ctx.idempotency_key
        'leads:acme:2'
    """

    __slots__ = ("attempt", "batch", "key", "run_id")

    def __init__(self, batch: str, key: str, attempt: int, run_id: str) -> None:
        self.batch = batch
        self.key = key
        self.attempt = attempt
        self.run_id = run_id

    @property
    def idempotency_key(self) -> str:
        """``batch:key:attempt`` — the same for a retry of the same attempt only.

        Send it with side effects (e.g. an ``Idempotency-Key`` header) so that a row
        re-executed after a crash does not act twice.
        """
        return f"{self.batch}:{self.key}:{self.attempt}"

    def __repr__(self) -> str:
        return (f"ItemContext(batch={self.batch!r}, key={self.key!r}, "
                f"attempt={self.attempt}, run_id={self.run_id!r})")


class _ChunkContext(ItemContext):
    """The context of the row at ``index`` of a chunk (one object per chunk, no copy per row)."""

    __slots__ = ("_attempts", "_keys", "index")

    def __init__(self, batch: str, keys: list[str], attempts: list[int], run_id: str) -> None:
        self.batch = batch
        self.run_id = run_id
        self._keys = keys
        self._attempts = attempts
        self.index = 0

    @property
    def key(self) -> str:  # type: ignore[override]
        """The row's key."""
        return self._keys[self.index]

    @property
    def attempt(self) -> int:  # type: ignore[override]
        """The row's attempt number (1 for the first)."""
        return self._attempts[self.index]


_PROCESS_SHARE = 1  # worker processes of the current run (1 outside a process pool)


def process_share() -> int:
    """How many worker processes share the run's limits (1 on threads or in the driver)."""
    return _PROCESS_SHARE


_CURRENT: contextvars.ContextVar[ItemContext | None] = contextvars.ContextVar(
    "batchkit_item", default=None)


def current_item() -> ItemContext | None:
    """The context of the row being processed in this thread, or None outside a run.

    Example:
        >>> current_item() is None
        True
    """
    return _CURRENT.get()


@dataclass
class ChunkTask:
    """One chunk of rows to run, as sent to a worker."""

    fn: Callable[..., Any]
    frame: pl.DataFrame  # _id, _key, _attempts, then the input columns
    input_columns: list[str]
    batch: str
    run_id: str
    fn_name: str
    pass_ctx: bool
    timeout: float | None = None
    driver_pid: int | None = None  # processes: refuse work once the driver is gone
    cancel: threading.Event | None = field(default=None, repr=False)  # threads only
    processes: int = 1  # worker processes sharing the run's rate limits
    # pipelines: steps each row can skip (saved or cached outputs), by _id
    prefill: dict[int, dict[str, tuple[dict[str, Any], str, float]]] | None = None
    memos: dict[tuple[str, str], dict[str, bytes]] | None = None  # stored ctx.memo values
    refresh: bool = False  # pipelines: ignore cached step results
    progress: list[int] | None = field(default=None, repr=False)  # threads: rows finished
    # pipelines: looks up cached outputs of steps after one that ran (see _cacheread)
    cache_reader: Any = field(default=None, repr=False)


@dataclass
class ChunkResult:
    """What comes back from a chunk: outcomes of the rows that ran, and their values."""

    outcomes: pl.DataFrame  # _id, _attempt, ok, transient, retry_after, error, timing, usage
    values: pl.DataFrame  # _id, _attempt, result columns (rows that succeeded)
    not_started: list[int]  # ids never started (cancelled, or the driver went away)
    interrupted: bool = False
    steps: pl.DataFrame | None = None  # pipelines: one record per row and step that ran
    memos: list[tuple[str, str, str, str, bytes]] | None = None  # new ctx.memo values


def _trace(exc: BaseException) -> str:
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-6)
    return redact("".join(frames), limit=4000)


class _ThreadCaller:
    """Runs each call in a helper thread so a hung call can be abandoned after ``timeout``."""

    def __init__(self, fn: Callable[..., Any], timeout: float) -> None:
        self.fn = fn
        self.timeout = timeout
        self._inbox: queue.SimpleQueue[Any] | None = None

    def _start(self) -> queue.SimpleQueue[Any]:
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def loop() -> None:
            while True:
                job = inbox.get()
                if job is None:
                    return
                args, ctx, slot, done = job
                token = _CURRENT.set(ctx)
                try:
                    slot.append((True, self.fn(*args)))
                except BaseException as exc:  # noqa: BLE001 - every error is the row's
                    slot.append((False, exc))
                finally:
                    _CURRENT.reset(token)
                    done.set()

        threading.Thread(target=loop, name="batchkit-item", daemon=True).start()
        return inbox

    def __call__(self, args: tuple[Any, ...], ctx: ItemContext) -> Any:
        if self._inbox is None:
            self._inbox = self._start()
        slot: list[tuple[bool, Any]] = []
        done = threading.Event()
        item_ctx = ItemContext(ctx.batch, ctx.key, ctx.attempt, ctx.run_id)
        self._inbox.put((args, item_ctx, slot, done))
        if not done.wait(self.timeout):
            # Abandon the thread: it keeps running, its late result lands in a slot
            # nobody reads (fenced). The next row gets a fresh thread.
            self._inbox.put(None)
            self._inbox = None
            raise ItemTimeout(f"row took longer than timeout={self.timeout:g}s; its thread "
                              "was abandoned and may still be running")
        ok, value = slot[0]
        if ok:
            return value
        raise value

    def close(self) -> None:
        if self._inbox is not None:
            self._inbox.put(None)
            self._inbox = None


def _on_alarm(signum: int, frame: Any) -> None:
    raise ItemTimeout("row took longer than the run's timeout and was interrupted")


class _SignalCaller:
    """Soft timeout with SIGALRM plus a hard faulthandler watchdog (main thread of a process)."""

    def __init__(self, fn: Callable[..., Any], timeout: float) -> None:
        self.fn = fn
        self.timeout = timeout
        self.hard = timeout + max(2.0, 0.5 * timeout)
        self._old = signal.signal(signal.SIGALRM, _on_alarm)

    def __call__(self, args: tuple[Any, ...], ctx: ItemContext) -> Any:
        faulthandler.dump_traceback_later(self.hard, exit=True)
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            return self.fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            faulthandler.cancel_dump_traceback_later()

    def close(self) -> None:
        signal.signal(signal.SIGALRM, self._old)


def _make_caller(task: ChunkTask) -> Any:
    if task.timeout is None:
        return None
    in_main = threading.current_thread() is threading.main_thread()
    if in_main and task.driver_pid is not None and hasattr(signal, "setitimer"):
        return _SignalCaller(task.fn, task.timeout)
    return _ThreadCaller(task.fn, task.timeout)


def _apply(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def _make_caller_for(timeout: float, in_process: bool) -> Any:
    """A timeout-enforcing caller of ``caller((fn, *args), ctx)`` (used by pipelines)."""
    in_main = threading.current_thread() is threading.main_thread()
    if in_main and in_process and hasattr(signal, "setitimer"):
        return _SignalCaller(_apply, timeout)
    return _ThreadCaller(_apply, timeout)


def _driver_gone(driver_pid: int | None) -> bool:
    return driver_pid is not None and os.getppid() != driver_pid


_ErrorTuple = tuple[str, str, str, bool, "float | None"]


def run_chunk(task: ChunkTask) -> ChunkResult:
    """Run ``task.fn`` over every row of the chunk; never raises for a row's error."""
    global _PROCESS_SHARE
    if task.driver_pid is not None:
        _PROCESS_SHARE = task.processes
    chunk_fn = getattr(task.fn, "_run_chunk", None)
    if chunk_fn is not None:  # a pipeline runs its chunks step by step
        return chunk_fn(task)  # type: ignore[no-any-return]
    frame = task.frame
    ids: list[int] = frame["_id"].to_list()
    keys: list[str] = frame["_key"].to_list()
    attempts: list[int] = frame["_attempts"].to_list()
    if _driver_gone(task.driver_pid):
        return _result(ids, attempts, keys, 0, [], {}, [], [], ids)
    names = task.input_columns
    columns = [frame[c].to_list() for c in names]
    n = len(ids)
    results: list[dict[str, Any]] = [_EMPTY] * n
    errors: dict[int, _ErrorTuple] = {}
    starts: list[float] = [0.0] * n
    durations: list[float] = [0.0] * n
    ctx = _ChunkContext(task.batch, keys, attempts, task.run_id)
    token = _CURRENT.set(ctx)
    caller = _make_caller(task)
    fn, fn_name, pass_ctx, cancel = task.fn, task.fn_name, task.pass_ctx, task.cancel
    progress = task.progress
    perf = time.perf_counter
    wall0, perf0 = time.time(), perf()
    next_check = perf0 + _DRIVER_CHECK_EVERY
    ran = n
    interrupted = False
    t0 = perf0
    try:
        for i, values in enumerate(zip(*columns)):
            if t0 > next_check:
                if (cancel is not None and cancel.is_set()) or _driver_gone(task.driver_pid):
                    ran = i
                    break
                next_check = t0 + _DRIVER_CHECK_EVERY
            ctx.index = i
            try:
                if caller is not None:
                    out = caller((dict(zip(names, values)), ctx) if pass_ctx
                                 else (dict(zip(names, values)),), ctx)
                elif pass_ctx:
                    out = fn(dict(zip(names, values)), ctx)
                else:
                    out = fn(dict(zip(names, values)))
                if type(out) is not dict:
                    out = normalize_result(out, fn_name)
                results[i] = out
            except ResultError as exc:
                errors[i] = (exc.type_name, redact(str(exc)), "", False, None)
            except KeyboardInterrupt:
                interrupted = True
                ran = i
                break
            except BaseException as exc:  # noqa: BLE001 - every error is the row's
                info = classify(exc)
                errors[i] = (info.type, info.message, _trace(exc), info.transient,
                             info.retry_after)
            # one clock read per row: a row starts where the previous one ended
            t1 = perf()
            if progress is not None:
                progress[0] += 1
            starts[i] = t0
            durations[i] = t1 - t0
            t0 = t1
    finally:
        _CURRENT.reset(token)
        if caller is not None:
            caller.close()
    offset = wall0 - perf0
    return _result(ids, attempts, keys, ran, results, errors,
                   [s + offset for s in starts[:ran]], durations, ids[ran:], interrupted)


_EMPTY: dict[str, Any] = {}


def _no_usage(n: int) -> dict[str, pl.Series]:
    """Usage columns of rows run by a plain function: no step, no cost, no counted calls."""
    return {"_step": pl.Series([None] * n, dtype=pl.String),
            "usd": pl.Series([0.0] * n, dtype=pl.Float64),
            "tokens": pl.Series([0] * n, dtype=pl.Int64),
            "calls": pl.Series([0] * n, dtype=pl.Int64)}


def _result(ids: list[int], attempts: list[int], keys: list[str], ran: int,
            results: list[dict[str, Any]], errors: dict[int, _ErrorTuple],
            starts: list[float], durations: list[float],
            not_started: list[int], interrupted: bool = False) -> ChunkResult:
    ok_rows = [i for i in range(ran) if i not in errors] if errors else range(ran)
    ok_results = [results[i] for i in ok_rows] if errors else results[:ran]
    ok_keys = [keys[i] for i in ok_rows] if errors else keys
    columns, value_errors = build_values(ok_results, ok_keys)
    for j, exc in value_errors.items():
        errors[ok_rows[j]] = (exc.type_name, redact(str(exc)), "", False, None)
    if errors:
        none: tuple[None, ...] = (None, None, None, None, None)
        err_cols: list[Any] = list(zip(*[errors.get(i, none) for i in range(ran)])) or [[]] * 5
        ok = [i not in errors for i in range(ran)]
    else:
        err_cols = [[None] * ran] * 5
        ok = [True] * ran
    outcomes = pl.DataFrame(
        {
            "_id": pl.Series(ids[:ran], dtype=pl.Int64),
            "_attempt": pl.Series(attempts[:ran], dtype=pl.Int32),
            "ok": pl.Series(ok, dtype=pl.Boolean),
            "_error_type": pl.Series(err_cols[0], dtype=pl.String),
            "_error_message": pl.Series(err_cols[1], dtype=pl.String),
            "_error_trace": pl.Series(err_cols[2], dtype=pl.String),
            "transient": pl.Series(err_cols[3], dtype=pl.Boolean),
            "retry_after": pl.Series(err_cols[4], dtype=pl.Float64),
            "_start": pl.Series(starts, dtype=pl.Float64),
            "_duration_s": pl.Series(durations[:ran], dtype=pl.Float64),
            **_no_usage(ran),
        }
    )
    value_frame = pl.DataFrame(
        {
            "_id": pl.Series([ids[i] for i in ok_rows], dtype=pl.Int64),
            "_attempt": pl.Series([attempts[i] for i in ok_rows], dtype=pl.Int32),
            **columns,
        }
    )
    if value_errors:
        value_frame = value_frame.filter(~pl.int_range(pl.len()).is_in(list(value_errors)))
    return ChunkResult(outcomes, value_frame, not_started, interrupted)
