"""Pipelines: steps run over the rows of a chunk, with per-step checkpoints and a cache.

A chunk runs *step by step*: the first step over every row of the chunk, then the
second over the rows that succeeded, and so on. That lets an async step run the
chunk's rows concurrently on one event loop and a batched step group them into
calls of ``batch_size`` rows, while sync steps run rows one after another (the
workers are the parallelism).

Every step that ran sends back a *step record* (outcome, timing, usage, tries, and
the pickled output with the hash of its inputs); the driver writes them into the
attempt log, the per-item step checkpoints and the step cache in the same
transaction as the chunk's outcomes. Before dispatching a chunk the driver resolves,
for each row, the steps it can skip (``resolve_prefill``): outputs saved by an
earlier attempt of the row (a retry or a resumed run restarts at the step that
failed, never re-calling earlier steps), then outputs cached for identical inputs.
That covers each row's leading steps; for a step after one that had to run, the
worker looks its inputs up in the store's cache itself (``_cacheread``: a cursor on
threads, a loopback lookup served by the driver on processes).
Outputs are checkpointed when their chunk commits, so a crash re-runs only the steps
of the chunks in flight.

Within one worker process, identical inputs computed in this run are served from
memory (threads of the threads backend share it), so duplicates in one batch are
computed once; across processes, duplicates in flight at the same moment may both
be computed.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from ._errors import ConfigError
from ._http import run_off_thread
from ._policy import classify, redact
from ._steps import Call, Step, step
from ._storelog import STEP_RECORD_SCHEMA
from ._types import ResultError
from ._worker import (
    ChunkResult,
    ChunkTask,
    ItemContext,
    _driver_gone,
    _make_caller_for,
    _result,
    _trace,
)

__all__ = ["Pipeline", "close_idle_loops", "pipeline", "resolve_prefill", "run_pipeline_chunk"]

_ASYNC_DEFAULT = 100  # coroutines in flight per worker when an async step sets none
# prefill of one row: step name -> (output, origin "checkpoint" | "cache", usd)
Prefill = dict[str, tuple[dict[str, Any], str, float]]


class Pipeline:
    """Steps run in order over each row; a row function for ``batch.run``.

    Each step gets the input row plus the columns returned by the steps before it,
    and the pipeline returns every new column, plus ``cost_usd`` (what the row's
    outputs cost across steps) when any step has a cost. In a batch, each step's
    outputs are checkpointed and cached (see the module docs).

    Example:
        >>> import batchkit as bk
        >>> a = bk.step("a")(lambda row: {"x": row["n"] + 1})
        >>> b = bk.step("b", cost=0.01)(lambda row: {"y": row["x"] * 10})
        >>> bk.pipeline(a, b)({"n": 1})
        {'x': 2, 'y': 20, 'cost_usd': 0.01}
    """

    def __init__(self, steps: tuple[Step, ...]) -> None:
        names = [s.name for s in steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"step names must be unique in a pipeline; repeated: {dupes}")
        self.steps = steps
        self.__name__ = "pipeline"
        self.has_cost = any(s.options.cost or s.options.cost_per_call for s in steps)

    def check_workers(self, processes: int) -> None:
        """Fail before a run if a rate limit cannot be split across ``processes``."""
        for s in self.steps:
            s.check_workers(processes)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        """Run every step on one row (no store, no cache); return the new columns or raise."""
        run = _ChunkRun(self, [dict(row)], [None], [{}], timeout=None, use_cache=False,
                        remember=False)
        run.execute()
        if 0 in run.errors:
            raise run.errors[0]
        return run.output(0)

    def __repr__(self) -> str:
        return "pipeline(" + ", ".join(s.name for s in self.steps) + ")"

    def close(self) -> None:
        """Close every step's pooled clients."""
        for s in self.steps:
            s.close()

    def _run_chunk(self, task: ChunkTask) -> ChunkResult:
        """The chunk function of a pipeline (``run_chunk`` hands pipelines over to it)."""
        return run_pipeline_chunk(task)

    def seed_memos(self, memos: dict[tuple[str, str], dict[str, bytes]]) -> None:
        """Load stored ``ctx.memo`` values into each step (this process)."""
        for s in self.steps:
            stored = memos.get((s.name, s.options.version))
            if stored:
                s.seed_memos(stored)


def pipeline(*steps: Step | Callable[..., Any]) -> Pipeline:
    """Chain steps into one row function: ``batch.run(bk.pipeline(search, enrich))``.

    Plain functions are wrapped as steps without limits.

    Example:
        >>> import batchkit as bk
        >>> bk.pipeline(lambda row: {"a": 1})
        pipeline(<lambda>)
    """
    if not steps:
        raise ConfigError("pipeline() needs at least one step")
    return Pipeline(tuple(s if isinstance(s, Step) else step()(s) for s in steps))


_LOOPS = threading.local()


_ALL_LOOPS: list[asyncio.AbstractEventLoop] = []  # this process's worker loops, to close
_ALL_LOOPS_LOCK = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    """This worker thread's event loop (kept across chunks, so async clients stay pooled)."""
    loop = getattr(_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = _LOOPS.loop = asyncio.new_event_loop()
        with _ALL_LOOPS_LOCK:
            _ALL_LOOPS.append(loop)
    return loop


def close_idle_loops() -> None:
    """Close the worker threads' event loops that are not running (the run has ended).

    Call it after the pipeline's clients were closed (``Pipeline.close``), so their
    connections are shut on these loops first; a thread that needs a loop again makes
    a new one.
    """
    with _ALL_LOOPS_LOCK:
        idle = [lp for lp in _ALL_LOOPS if not lp.is_running()]
        _ALL_LOOPS[:] = [lp for lp in _ALL_LOOPS if lp.is_running()]
    try:
        busy = asyncio.get_running_loop()  # this thread runs a loop (Jupyter)
    except RuntimeError:
        busy = None
    for loop in idle:
        if not loop.is_closed():
            if busy is None:
                loop.run_until_complete(loop.shutdown_asyncgens())
            else:
                run_off_thread(loop, loop.shutdown_asyncgens())
            if not loop.is_running():
                loop.close()


class _ChunkRun:
    """One pipeline over the rows of one chunk."""

    def __init__(self, pipe: Pipeline, views: list[dict[str, Any]],
                 items: Sequence[ItemContext | None], prefill: list[Prefill], *,
                 timeout: float | None, use_cache: bool, remember: bool = True,
                 in_process: bool = False, stop: Callable[[], bool] | None = None,
                 progress: list[int] | None = None, cache_reader: Any = None) -> None:
        self.pipe = pipe
        self.views = views
        self.items = items
        self.prefill = prefill
        self.timeout = timeout
        self.use_cache = use_cache  # serve identical inputs from this process's memory
        self.remember = remember  # keep computed outputs in that memory
        self.in_process = in_process
        self.stop = stop
        n = len(views)
        self.new: list[dict[str, Any]] = [{} for _ in range(n)]
        self.value_usd = [0.0] * n  # cost of the outputs (this attempt + checkpoints)
        self.usd = [0.0] * n  # spent by this attempt
        self.tokens = [0] * n
        self.calls = [0] * n
        self.start: list[float | None] = [None] * n
        self.duration = [0.0] * n
        self.errors: dict[int, BaseException] = {}
        self.failed_step: dict[int, str] = {}
        self.records: list[tuple[Any, ...]] = []
        self.stopped: list[int] = []  # rows given back unfinished (cancelled)
        self.progress = progress  # threads: rows that ended, for live progress
        # the store cache, for steps after one that ran (the driver resolved the others)
        self.cache_reader = cache_reader
        self.ran: set[int] = set()  # rows that reached a step not served by the prefill
        self.last_step = pipe.steps[-1].name
        self._callers: dict[float, Any] = {}

    def _memory(self, s: Step) -> dict[str, dict[str, Any]]:
        """Outputs this process computed for ``s`` in this run (by input hash).

        Scoped to the run: other runs and stores get cached results from their store.
        """
        item = next((it for it in self.items if it is not None), None)
        run = item.run_id if item is not None else ""
        local = s._local
        with local.lock:
            memory = local.cache.get(run)
            if memory is None:
                while len(local.cache) >= 4:  # keep the most recent runs only
                    local.cache.pop(next(iter(local.cache)))
                memory = local.cache[run] = {}
        return memory

    def output(self, i: int) -> dict[str, Any]:
        out = dict(self.new[i])
        if self.pipe.has_cost:
            out["cost_usd"] = round(self.value_usd[i], 10)
        return out

    def _invoke_for(self, s: Step) -> Callable[..., Any] | None:
        timeout = s.options.timeout or self.timeout
        if timeout is None:
            return None
        caller = self._callers.get(timeout)
        if caller is None:
            caller = self._callers[timeout] = _make_caller_for(timeout, self.in_process)
        return lambda fn, args, item: caller((fn, *args), item)

    def close(self) -> None:
        for caller in self._callers.values():
            caller.close()

    def execute(self) -> None:
        alive = list(range(len(self.views)))
        try:
            for s in self.pipe.steps:
                if not alive:
                    break
                if self.stop is not None and self.stop():
                    self.stopped = alive
                    return
                todo = self._apply_prefill(s, alive)
                if todo:
                    self._run_step(s, todo)
                alive = [i for i in alive if i not in self.errors]
        finally:
            self.close()

    def _apply_prefill(self, s: Step, alive: list[int]) -> list[int]:
        todo = []
        for i in alive:
            pre = self.prefill[i].get(s.name)
            if pre is None:
                todo.append(i)
                continue
            out, origin, usd = pre
            self.views[i].update(out)
            self.new[i].update(out)
            if origin == "checkpoint":
                self.value_usd[i] += usd
            else:
                self._record(i, s, Call(out=out, cached=True), None)
        return todo

    def _run_step(self, s: Step, todo: list[int]) -> None:
        keys: dict[int, str | None] = {}
        primary: list[int] = []
        later: list[int] = []
        seen: set[str] = set()
        memory = self._memory(s)
        todo = self._from_store(s, todo, memory)
        # inputs this thread computes while other threads of the run wait for them
        local = s._local
        claimed: list[str] = []
        waits: list[threading.Event] = []
        share = self.use_cache and self.remember
        for i in todo:
            key = s.cache_key(self.views[i])  # None when the step does not cache
            keys[i] = key
            busy = None
            if key is not None and share and key not in memory and key not in seen:
                flight = f"cache:{id(memory)}:{key}"
                with local.lock:
                    if key not in memory:
                        busy = local.computing.get(flight)
                        if busy is None:
                            local.computing[flight] = threading.Event()
                            claimed.append(flight)
            if key is not None and self.use_cache and key in memory:
                self._done(i, s, Call(out=memory[key], cached=True, cache_key=key))
            elif key is not None and (key in seen or busy is not None):
                later.append(i)  # same inputs as a row in flight: served after it
                if busy is not None:
                    waits.append(busy)
                    seen.add(key)
            else:
                if key is not None:
                    seen.add(key)
                primary.append(i)
        try:
            self._call(s, primary, keys)
        finally:
            with local.lock:
                events = [local.computing.pop(f) for f in claimed]
            for event in events:
                event.set()
        for event in waits:
            event.wait()
        again = []
        for i in later:
            key = keys[i]
            if key is not None and self.use_cache and key in memory:
                self._done(i, s, Call(out=memory[key], cached=True, cache_key=key))
            else:
                again.append(i)
        self._call(s, again, keys)

    def _from_store(self, s: Step, todo: list[int],
                    memory: dict[str, dict[str, Any]]) -> list[int]:
        """Serve rows from the store cache where the driver could not look them up.

        The driver's prefill covered each row's leading steps up to the first one it
        had to run; for the steps after that, the inputs are only known here.
        """
        first = [i for i in todo if i not in self.ran]
        self.ran.update(first)
        if self.cache_reader is None or not self.use_cache or not s.options.cache:
            return todo
        want: dict[str, list[int]] = {}
        for i in todo:
            if i in first:
                continue  # the driver looked this step up already
            key = s.cache_key(self.views[i])
            if key is not None and key not in memory:
                want.setdefault(key, []).append(i)
        if not want:
            return todo
        found = self.cache_reader.lookup(s.name, s.options.version, list(want))
        served: set[int] = set()
        for key, blob in found.items():
            try:
                value = pickle.loads(blob)
            except Exception:  # noqa: BLE001 - an unreadable entry is a miss
                continue
            if self.remember:
                memory[key] = value
            for i in want[key]:
                self._done(i, s, Call(out=value, cached=True, cache_key=key))
                served.add(i)
        return [i for i in todo if i not in served]

    def _call(self, s: Step, rows: list[int], keys: dict[int, str | None]) -> None:
        if not rows:
            return
        if s.batched:
            size = s.options.batch_size or 1
            loop = _event_loop() if s.is_async else None
            for g in range(0, len(rows), size):
                group = rows[g:g + size]
                calls = s.run_batch([self.views[i] for i in group],
                                    [self.items[i] for i in group],
                                    invoke=self._invoke_for(s), loop=loop)
                for i, c in zip(group, calls):
                    self._finish(i, s, c, keys[i])
        elif s.is_async:
            limit = s.options.concurrency or _ASYNC_DEFAULT
            timeout = s.options.timeout or self.timeout

            async def run_all() -> list[Call]:
                slots = asyncio.Semaphore(limit)
                return await asyncio.gather(*(s.run_async(self.views[i], self.items[i], slots,
                                                          timeout) for i in rows))
            for i, c in zip(rows, _event_loop().run_until_complete(run_all())):
                self._finish(i, s, c, keys[i])
        else:
            invoke = self._invoke_for(s)
            for i in rows:
                self._finish(i, s, s.run(self.views[i], self.items[i], invoke=invoke), keys[i])

    def _finish(self, i: int, s: Step, c: Call, key: str | None) -> None:
        c.cache_key = key
        if c.error is None:
            if key is not None and self.remember:
                self._memory(s)[key] = c.out or {}
            self._done(i, s, c)
            return
        if isinstance(c.error, KeyboardInterrupt):
            raise c.error
        self.errors[i] = c.error
        self.failed_step[i] = s.name
        if self.progress is not None:
            self.progress[0] += 1
        self._account(i, c)
        self._record(i, s, c, None)

    def _done(self, i: int, s: Step, c: Call) -> None:
        out = c.out or {}
        if self.progress is not None and s.name == self.last_step:
            self.progress[0] += 1
        self.views[i].update(out)
        self.new[i].update(out)
        if c.cached:
            self._record(i, s, c, None)
            return
        self._account(i, c)
        self.value_usd[i] += c.usage.usd
        try:
            blob = pickle.dumps(out)
        except Exception:  # noqa: BLE001 - an unpicklable output is not checkpointed
            blob = None
        self._record(i, s, c, blob)

    def _account(self, i: int, c: Call) -> None:
        if self.start[i] is None:
            self.start[i] = c.start
        self.duration[i] += c.duration
        self.usd[i] += c.usage.usd
        self.tokens[i] += c.usage.tokens
        self.calls[i] += c.usage.calls

    def _record(self, i: int, s: Step, c: Call, blob: bytes | None) -> None:
        err = c.error
        outcome = "cached" if c.cached else ("done" if err is None else "failed")
        self.records.append((
            i, s.name, s.options.version, c.start, c.duration, outcome,
            type(err).__name__ if err is not None else None,
            redact(str(err)) if err is not None else None,
            0.0 if c.cached else c.usage.usd, 0 if c.cached else c.usage.tokens,
            0 if c.cached else c.usage.calls, c.tries,
            blob, c.cache_key if blob is not None else None))


def run_pipeline_chunk(task: ChunkTask) -> ChunkResult:
    """The chunk function for pipelines (called by ``run_chunk``)."""
    pipe = task.fn
    assert isinstance(pipe, Pipeline)
    frame = task.frame
    ids: list[int] = frame["_id"].to_list()
    keys: list[str] = frame["_key"].to_list()
    attempts: list[int] = frame["_attempts"].to_list()
    if _driver_gone(task.driver_pid):
        return _result(ids, attempts, keys, 0, [], {}, [], [], ids)
    if task.memos:
        pipe.seed_memos(task.memos)
    names = task.input_columns
    views = [dict(zip(names, values)) for values in
             zip(*[frame[c].to_list() for c in names])] if names else [{} for _ in ids]
    items = [ItemContext(task.batch, k, a, task.run_id) for k, a in zip(keys, attempts)]
    prefill = [task.prefill.get(i, {}) if task.prefill else {} for i in ids]

    def stop() -> bool:
        return (task.cancel is not None and task.cancel.is_set()) or \
            _driver_gone(task.driver_pid)

    run = _ChunkRun(pipe, views, items, prefill, timeout=task.timeout,
                    use_cache=not task.refresh, in_process=task.driver_pid is not None,
                    stop=stop, progress=task.progress, cache_reader=task.cache_reader)
    interrupted = False
    try:
        run.execute()
    except KeyboardInterrupt:
        interrupted = True
        run.stopped = [i for i in range(len(ids)) if i not in run.errors]
    return _pipeline_result(task, run, ids, keys, attempts, interrupted)


def _error_tuple(exc: BaseException) -> tuple[str, str, str, bool, float | None]:
    if isinstance(exc, ResultError):
        return (exc.type_name, redact(str(exc)), "", False, None)
    info = classify(exc)
    return (info.type, info.message, _trace(exc), info.transient, info.retry_after)


def _pipeline_result(task: ChunkTask, run: _ChunkRun, ids: list[int], keys: list[str],
                     attempts: list[int], interrupted: bool) -> ChunkResult:
    stopped = set(run.stopped)
    rows = [i for i in range(len(ids)) if i not in stopped]
    results = [run.output(i) for i in rows]
    errors = {j: _error_tuple(run.errors[i]) for j, i in enumerate(rows) if i in run.errors}
    starts = [run.start[i] or 0.0 for i in rows]
    durations = [run.duration[i] for i in rows]
    result = _result([ids[i] for i in rows], [attempts[i] for i in rows],
                     [keys[i] for i in rows], len(rows), results, errors, starts, durations,
                     [ids[i] for i in sorted(stopped)], interrupted)
    result.outcomes = result.outcomes.with_columns(
        _step=pl.Series([run.failed_step.get(i) for i in rows], dtype=pl.String),
        usd=pl.Series([run.usd[i] for i in rows], dtype=pl.Float64),
        tokens=pl.Series([run.tokens[i] for i in rows], dtype=pl.Int64),
        calls=pl.Series([run.calls[i] for i in rows], dtype=pl.Int64))
    recs = [r for r in run.records if r[0] not in stopped]
    cols: list[tuple[Any, ...]] = list(zip(*recs)) if recs else [() for _ in range(14)]
    result.steps = pl.DataFrame({
        "_id": pl.Series([ids[i] for i in cols[0]], dtype=pl.Int64),
        "_attempt": pl.Series([attempts[i] for i in cols[0]], dtype=pl.Int32),
        **{name: pl.Series(list(col), dtype=dtype) for (name, dtype), col in
           zip(list(STEP_RECORD_SCHEMA.items())[2:], cols[1:])},
    })
    memos = [m for s in run.pipe.steps for m in s.take_new_memos()]
    result.memos = memos or None
    return result


def resolve_prefill(store: Any, batch: str, pipe: Pipeline, rows: pl.DataFrame,
                    input_columns: list[str], *, use_cache: bool) -> dict[int, Prefill]:
    """For each row, the steps it can skip: saved outputs first, then cached ones.

    Walks the steps in order per row and stops at the first step with neither (a
    step's cache key depends on the outputs of the steps before it).
    """
    ids: list[int] = rows["_id"].to_list()
    saved: dict[int, dict[str, tuple[bytes, float]]] = {}
    if rows.height and int(rows["_attempts"].max()) > 1:  # type: ignore[arg-type]
        # only a row that ran before can have saved outputs
        for rid, name, blob, usd, _t, _c in store.step_outputs(batch, ids).iter_rows():
            saved.setdefault(rid, {})[name] = (blob, usd or 0.0)
    caching = use_cache and any(s.options.cache for s in pipe.steps)
    if not saved and not caching:
        return {}
    views = {rid: dict(zip(input_columns, vals)) for rid, *vals in
             rows.select("_id", *input_columns).iter_rows()}
    out: dict[int, Prefill] = {}
    alive = list(ids)
    for s in pipe.steps:
        if not alive:
            break
        want: dict[str, list[int]] = {}
        nxt = []
        for rid in alive:
            hit = saved.get(rid, {}).get(s.name)
            if hit is not None:
                value = pickle.loads(hit[0])
                out.setdefault(rid, {})[s.name] = (value, "checkpoint", hit[1])
                views[rid].update(value)
                nxt.append(rid)
            elif caching and s.options.cache:
                key = s.cache_key(views[rid])
                if key is not None:
                    want.setdefault(key, []).append(rid)
        if want:
            found = store.cache_lookup(s.name, s.options.version, list(want))
            for key, (blob, _usd, _tokens, _calls) in found.items():
                value = pickle.loads(blob)
                for rid in want[key]:
                    out.setdefault(rid, {})[s.name] = (value, "cache", 0.0)
                    views[rid].update(value)
                    nxt.append(rid)
        alive = nxt
    return out
