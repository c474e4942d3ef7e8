"""Steps: single-item calls to the outside world, with the limits of the service they call.

A *step* is a row function with a rate limit shared by every thread of the run, a
cap on calls in flight, in-step retries that honour ``Retry-After`` by pausing the
whole step, a per-call timeout, pooled HTTP clients (``ctx.http`` and ``ctx.ahttp``),
cost counters, a result cache keyed by its inputs, and ``ctx.memo``. A step is sync
(``def``), async (``async def``: the rows of a chunk run concurrently on the worker's
event loop, up to ``concurrency`` at once) or batched (``batch_size=N``: it gets a
list of up to N rows of one chunk and returns one result per row).

Pipelines (``_pipeline.py``) run steps over the rows of a chunk and checkpoint each
step's outputs in the store.

Limits hold for the whole run: with ``backend="threads"`` every worker thread shares
one limiter and one concurrency cap; with ``backend="processes"`` each of the N worker
processes paces itself to ``rate / N`` (``RateLimit.split``; a rate that cannot be
split fails before the run starts), and a concurrency cap applies per process. Async
steps cap coroutines in flight per worker.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._clock import Clock, SystemClock
from ._errors import ConfigError, ItemTimeout, Permanent
from ._http import ClientFactory, ClientPool
from ._policy import RetryPolicy, classify
from ._ratelimit import Limiter, RateLimit
from ._worker import ItemContext, current_item, process_share

__all__ = ["Call", "Step", "StepContext", "Usage", "step"]


@dataclass
class Usage:
    """What one row spent in one step: USD, tokens and calls."""

    usd: float = 0.0
    tokens: int = 0
    calls: int = 0


class StepContext:
    """``ctx`` of a step function: the row's identity, pooled HTTP clients, cost and memo.

    Attributes:
        step: the step's name.
        item: the row's ``ItemContext`` (batch, key, attempt, run id), or None
            when the step is called outside a run (and for batched steps).
        items: batched steps: the ``ItemContext`` of each row of the call.
        usage: what the row (or the batch of rows) has spent in this step so far.

    Example:
        >>> ctx = StepContext(step("s")(lambda row: {}), None)
        >>> ctx.cost(usd=0.01, tokens=120); ctx.usage
        Usage(usd=0.01, tokens=120, calls=0)
    """

    def __init__(self, owner: Step, item: ItemContext | None,
                 items: Sequence[ItemContext | None] = ()) -> None:
        self._owner = owner
        self.step = owner.name
        self.item = item
        self.items = list(items)
        self.usage = Usage()
        self._invocations = 0

    @property
    def idempotency_key(self) -> str:
        """``batch:key:attempt:step`` — send it with side effects to make them safe to repeat."""
        base = self.item.idempotency_key if self.item is not None else "-"
        return f"{base}:{self.step}"

    @property
    def http(self) -> Any:
        """A pooled ``httpx.Client`` of this worker thread, reused across rows."""
        return self._owner._local.clients.client()

    @property
    def ahttp(self) -> Any:
        """A pooled ``httpx.AsyncClient`` of this worker's event loop (async steps)."""
        return self._owner._local.clients.async_client()

    def cost(self, *, usd: float = 0.0, tokens: int = 0, calls: int = 0) -> None:
        """Add to what this row spent in this step (on top of the step's static cost)."""
        self.usage.usd += usd
        self.usage.tokens += tokens
        self.usage.calls += calls

    def memo(self, key: Any, fn: Callable[[], Any]) -> Any:
        """Compute ``fn()`` once per ``key`` and reuse it, across workers and runs.

        Values are kept per step (name and version): in the worker's memory at once,
        and in the store's ``_batchkit_memo`` table when the chunk is committed, from
        where later chunks, processes and runs load them. ``key`` must have a stable
        ``repr`` (strings, numbers, tuples of them) and the value must pickle.

        Example:
            >>> s = step("research")(lambda row: {})
            >>> ctx = StepContext(s, None)
            >>> ctx.memo(("industry", "Retail"), lambda: "context"), ctx.memo(
            ...     ("industry", "Retail"), lambda: "other")
            ('context', 'context')
        """
        return self._owner._memo(key, fn)


@dataclass(frozen=True)
class StepOptions:
    """The validated settings of a step."""

    name: str
    version: str = "1"
    rate_limit: RateLimit | None = None
    concurrency: int | None = None
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(retries=0))
    cost: float = 0.0
    cost_per_call: float = 0.0
    batch_size: int | None = None
    timeout: float | None = None
    cache: bool = True
    cache_key: Sequence[str] | Callable[[dict[str, Any]], Any] | None = None
    http: ClientFactory | Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        for name in ("concurrency", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"step {self.name!r}: {name} must be a positive whole "
                                  f"number or None, got {value!r}")
        for name in ("cost", "cost_per_call"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"step {self.name!r}: {name} must be USD >= 0, got {value!r}")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(
                self.timeout, (int, float)) or self.timeout <= 0):
            raise ConfigError(f"step {self.name!r}: timeout must be seconds > 0 or None, "
                              f"got {self.timeout!r}")
        if not isinstance(self.version, str) or not self.version:
            raise ConfigError(f"step {self.name!r}: version must be a non-empty string, "
                              f"got {self.version!r}")
        ck = self.cache_key
        if ck is not None and not callable(ck) and (
                isinstance(ck, str) or not all(isinstance(c, str) for c in ck)):
            raise ConfigError(f"step {self.name!r}: cache_key must be a list of column names "
                              f"or a function of the row, got {ck!r}")


class _Local:
    """A step's state in one process (never pickled)."""

    def __init__(self, options: StepOptions, clock: Clock) -> None:
        share = process_share()
        rate = options.rate_limit
        if rate is not None and share > 1:
            rate = rate.split(share)
        self.limiter = Limiter(rate, clock=clock) if rate is not None else None
        self.slots = (threading.BoundedSemaphore(options.concurrency)
                      if options.concurrency is not None else None)
        conc = options.concurrency or 16
        self.clients = (ClientPool(options.http) if isinstance(options.http, ClientFactory)
                        else ClientPool(options.http, concurrency=conc))
        self.memos: dict[str, Any] = {}  # key hash -> value
        self.new_memos: list[tuple[str, str, str, str, bytes]] = []  # not yet in the store
        # run id -> input hash -> output computed by this process in that run
        self.cache: dict[str, dict[str, dict[str, Any]]] = {}
        self.computing: dict[str, threading.Event] = {}
        self.lock = threading.Lock()


_LOCALS: dict[str, _Local] = {}
_LOCALS_LOCK = threading.Lock()


@dataclass
class Call:
    """The outcome of one step on one row: output or error, usage, timing and tries."""

    out: dict[str, Any] | None = None
    error: BaseException | None = None
    usage: Usage = field(default_factory=Usage)
    tries: int = 0
    start: float = 0.0  # epoch seconds
    duration: float = 0.0
    cache_key: str | None = None
    cached: bool = False


def _json_default(value: Any) -> Any:
    return f"{type(value).__name__}:{value!r}"


def digest(data: Any) -> str:
    """A stable hash of JSON-like data (dict keys sorted; other values by type and repr).

    Example:
        >>> digest({"b": 1, "a": [1, 2]}) == digest({"a": [1, 2], "b": 1})
        True
    """
    text = json.dumps(data, sort_keys=True, default=_json_default, ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


_TIMEOUT = getattr(asyncio, "timeout", None)  # Python 3.11+


async def _bounded(coro: Any, timeout: float) -> Any:
    """Await ``coro`` for at most ``timeout`` seconds (``asyncio.TimeoutError`` after).

    ``asyncio.timeout`` (3.11+) cancels the coroutine in place; ``asyncio.wait_for`` on
    3.11 wraps it in a task of its own, ~10 us more CPU per call at hundreds in flight.
    """
    if _TIMEOUT is None:  # pragma: no cover - Python 3.10
        return await asyncio.wait_for(coro, timeout)
    async with _TIMEOUT(timeout):
        return await coro


def _as_output(name: str, out: Any) -> dict[str, Any]:
    if out is None:
        return {}
    if not isinstance(out, dict):
        return {name: out}
    return out


class Step:
    """A row function with the limits of the service it calls. Make one with ``bk.step``.

    Calling a step on a row runs its function under the step's rate limit and
    concurrency cap, retries transient errors in place (a ``Retry-After`` pauses the
    whole step), and returns the function's dict of new columns.

    Example:
        >>> import batchkit as bk
        >>> s = bk.step("shout", concurrency=2)(lambda row: row["w"].upper())
        >>> s, s({"w": "hi"})
        (Step('shout', concurrency=2), {'shout': 'HI'})
    """

    def __init__(self, fn: Callable[..., Any], options: StepOptions, *,
                 clock: Clock | None = None) -> None:
        self.fn = fn
        self.options = options
        self.name = options.name
        self.clock: Clock = clock or SystemClock()
        self._wants_ctx = _takes_context(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.batched = options.batch_size is not None
        self._token = uuid.uuid4().hex
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        # a step is called as fn(row): keep its own signature, not the wrapped (row, ctx)
        del self.__wrapped__  # type: ignore[attr-defined]

    @property
    def _local(self) -> _Local:
        """This process's state of the step: limiter, concurrency slots, clients, memo.

        Keyed by the step's token, so the copies a worker process unpickles for each
        chunk share one limiter, one client pool, one memo and one cache.
        """
        local = _LOCALS.get(self._token)
        if local is None:
            with _LOCALS_LOCK:
                local = _LOCALS.get(self._token)
                if local is None:
                    local = _LOCALS[self._token] = _Local(self.options, self.clock)
        return local

    def _reset_local(self) -> None:
        """Forget this process's state (tests change the clock this way)."""
        with _LOCALS_LOCK:
            local = _LOCALS.pop(self._token, None)
        if local is not None:
            local.clients.close()

    def __repr__(self) -> str:
        o = self.options
        limits = [f"rate_limit={o.rate_limit}" if o.rate_limit else "",
                  f"concurrency={o.concurrency}" if o.concurrency else "",
                  f"batch_size={o.batch_size}" if o.batch_size else "",
                  f"retries={o.retry.retries}" if o.retry.retries else ""]
        return f"Step({self.name!r}{''.join(', ' + x for x in limits if x)})"

    # -- memo and cache ------------------------------------------------------------------

    def _memo(self, key: Any, fn: Callable[[], Any]) -> Any:
        local = self._local
        h = digest(repr(key))
        while True:  # one thread computes a key; the others wait for its value
            with local.lock:
                if h in local.memos:
                    return local.memos[h]
                busy = local.computing.get(h)
                if busy is None:
                    mine = local.computing[h] = threading.Event()
                    break
            busy.wait()  # then take the value, or compute it if that thread failed
        try:
            value = fn()
            with local.lock:
                local.memos[h] = value
                try:
                    blob = pickle.dumps(value)
                except Exception:  # noqa: BLE001 - unpicklable: kept in memory only
                    return value
                local.new_memos.append((self.name, self.options.version, h,
                                        repr(key)[:200], blob))
                return value
        finally:
            with local.lock:
                local.computing.pop(h, None)
            mine.set()

    def seed_memos(self, stored: dict[str, bytes]) -> None:
        """Load memo values read from the store (keys already known are kept)."""
        local = self._local
        with local.lock:
            for h, blob in stored.items():
                if h not in local.memos:
                    local.memos[h] = pickle.loads(blob)

    def take_new_memos(self) -> list[tuple[str, str, str, str, bytes]]:
        """Memo values computed here since the last call (for the store)."""
        local = self._local
        with local.lock:
            out, local.new_memos = local.new_memos, []
        return out

    def cache_key(self, view: dict[str, Any]) -> str | None:
        """The hash of the step's inputs for the cache, or None if it does not cache."""
        if not self.options.cache:
            return None
        ck = self.options.cache_key
        if ck is None:
            data: Any = view
        elif callable(ck):
            data = ck(view)
        else:
            data = {c: view.get(c) for c in ck}
        return digest(data)

    # -- calling -------------------------------------------------------------------------

    def _finish_usage(self, ctx: StepContext, rows: int = 1) -> Usage:
        usage = ctx.usage
        if not usage.calls:  # the function did not count its calls: one per invocation
            usage.calls = ctx._invocations
        usage.usd += self.options.cost * rows + self.options.cost_per_call * usage.calls
        return usage

    def _backoff(self, attempt: int, exc: BaseException) -> float | None:
        """Seconds to wait before an in-step retry, or None to give up."""
        info = classify(exc)
        retry = self.options.retry
        if not info.transient or attempt > retry.retries:
            return None
        delay = retry.delay(attempt, retry_after=info.retry_after)
        limiter = self._local.limiter
        if info.retry_after is not None and limiter is not None:
            limiter.pause(delay)  # the service said wait: the whole step waits
            return 0.0
        return delay

    def run(self, row: dict[str, Any], item: ItemContext | None = None, *,
            invoke: Callable[..., Any] | None = None) -> Call:
        """Run the step on one row with in-step retries; never raises for the row's error.

        ``invoke(fn, args, item)`` runs one call (the pipeline passes a caller that
        enforces the timeout); default: call directly.
        """
        ctx = StepContext(self, item if item is not None else current_item())
        call = Call(start=time.time())
        t0 = time.perf_counter()
        while True:
            call.tries += 1
            try:
                out = self._call_once(row, ctx, invoke)
                call.out = _as_output(self.name, out)
                break
            except Exception as exc:  # noqa: BLE001 - the row's error, returned as data
                delay = self._backoff(call.tries, exc)
                if delay is None:
                    call.error = exc
                    break
                if delay:
                    self.clock.sleep(delay)
        call.duration = time.perf_counter() - t0
        call.usage = self._finish_usage(ctx)
        return call

    def _call_once(self, row: Any, ctx: StepContext, invoke: Callable[..., Any] | None) -> Any:
        local = self._local
        if local.slots is not None:
            local.slots.acquire()
        try:
            if local.limiter is not None:
                local.limiter.acquire()
            ctx._invocations += 1
            args = (row, ctx) if self._wants_ctx else (row,)
            if invoke is not None:
                return invoke(self.fn, args, ctx.item)
            return self.fn(*args)
        finally:
            if local.slots is not None:
                local.slots.release()

    async def run_async(self, row: dict[str, Any], item: ItemContext | None,
                        slots: asyncio.Semaphore, timeout: float | None) -> Call:
        """Run an async step on one row (in-step retries, timeout per call)."""
        ctx = StepContext(self, item)
        call = Call(start=time.time())
        t0 = time.perf_counter()
        limiter = self._local.limiter
        while True:
            call.tries += 1
            try:
                async with slots:
                    if limiter is not None:
                        await limiter.acquire_async()
                    ctx._invocations += 1
                    coro = self.fn(row, ctx) if self._wants_ctx else self.fn(row)
                    try:
                        out = await (_bounded(coro, timeout) if timeout else coro)
                    except asyncio.TimeoutError:
                        raise ItemTimeout(f"step {self.name!r} took longer than "
                                          f"timeout={timeout:g}s") from None
                call.out = _as_output(self.name, out)
                break
            except Exception as exc:  # noqa: BLE001 - the row's error, returned as data
                delay = self._backoff(call.tries, exc)
                if delay is None:
                    call.error = exc
                    break
                if delay:
                    await asyncio.sleep(delay) if isinstance(self.clock, SystemClock) \
                        else self.clock.sleep(delay)
        call.duration = time.perf_counter() - t0
        call.usage = self._finish_usage(ctx)
        return call

    def run_batch(self, rows: list[dict[str, Any]], items: Sequence[ItemContext | None], *,
                  invoke: Callable[..., Any] | None = None,
                  loop: asyncio.AbstractEventLoop | None = None) -> list[Call]:
        """Run a batched step on up to ``batch_size`` rows: one call, one result per row.

        A transient error of the call retries the whole batch; an exception *instance*
        in the returned list fails only its row. Usage is split evenly across the rows
        (calls are counted on the first row, so calls add up exactly).
        """
        ctx = StepContext(self, None, items)
        start, t0 = time.time(), time.perf_counter()
        tries = 0
        error: BaseException | None = None
        results: list[Any] = []
        while True:
            tries += 1
            try:
                out = self._call_once(rows, ctx, invoke)
                if inspect.isawaitable(out):
                    assert loop is not None
                    out = loop.run_until_complete(out)
                if not isinstance(out, (list, tuple)) or len(out) != len(rows):
                    got = f"{len(out)} results" if isinstance(out, (list, tuple)) else \
                        f"a {type(out).__name__}"
                    raise Permanent(f"batched step {self.name!r} returned {got} for "
                                    f"{len(rows)} rows; return a list with one result per row")
                results = list(out)
                break
            except Exception as exc:  # noqa: BLE001 - the batch's error, returned as data
                delay = self._backoff(tries, exc)
                if delay is None:
                    error = exc
                    break
                if delay:
                    self.clock.sleep(delay)
        duration = (time.perf_counter() - t0) / len(rows)
        usage = self._finish_usage(ctx, rows=len(rows))
        n = len(rows)
        calls = []
        for i in range(n):
            share = Usage(usd=usage.usd / n, tokens=usage.tokens // n + (
                usage.tokens % n if i == 0 else 0), calls=usage.calls if i == 0 else 0)
            c = Call(usage=share, tries=tries, start=start, duration=duration)
            if error is not None:
                c.error = error
            elif isinstance(results[i], BaseException):
                c.error = results[i]
            else:
                c.out = _as_output(self.name, results[i])
            calls.append(c)
        return calls

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        """Use the step alone on one row (outside a pipeline): its new columns, or raise."""
        if self.batched:
            call = self.run_batch([row], [current_item()])
            if call[0].error is not None:
                raise call[0].error
            return call[0].out or {}
        if self.is_async:
            async def one() -> Call:
                return await self.run_async(row, current_item(), asyncio.Semaphore(1),
                                            self.options.timeout)
            call1 = asyncio.run(one())
        else:
            call1 = self.run(row)
        if call1.error is not None:
            raise call1.error
        return call1.out or {}

    def check_workers(self, processes: int) -> None:
        """Fail before a run if the rate limit cannot be split across ``processes``."""
        if self.options.rate_limit is not None and processes > 1:
            self.options.rate_limit.split(processes)

    def close(self) -> None:
        """Close the pooled HTTP clients of this process."""
        self._local.clients.close()


def _takes_context(fn: Callable[..., Any]) -> bool:
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


def step(name: str | Callable[..., Any] | None = None, *, version: str = "1",
         rate_limit: str | float | RateLimit | None = None, concurrency: int | None = None,
         retries: int | RetryPolicy = 0, timeout: float | None = None, cost: float = 0.0,
         cost_per_call: float = 0.0, batch_size: int | None = None, cache: bool = True,
         cache_key: Sequence[str] | Callable[[dict[str, Any]], Any] | None = None,
         http: ClientFactory | Callable[..., Any] | None = None) -> Any:
    """Declare a step: ``@bk.step(rate_limit="100/min", concurrency=10, retries=3)``.

    Args:
        name: the step's name (default: the function's name); also usable bare,
            ``@bk.step``.
        version: change it when the step's logic changes: cached results are keyed by
            (name, version, inputs), so a new version computes afresh.
        rate_limit: calls allowed, e.g. ``"100/min"``, ``"5/s"``, ``"1000/h"`` or calls per
            second as a number; shared by the threads of a worker process.
        concurrency: calls in flight at most, whatever the number of workers (async
            steps: coroutines in flight per worker; default 100).
        retries: in-step retries of transient errors (429/5xx, timeouts, connection
            errors, ``bk.Transient``); a ``Retry-After`` pauses the whole step.
        timeout: seconds per call (default: the run's ``timeout``); a call that takes
            longer fails with ``ItemTimeout`` (transient).
        cost: USD per row.
        cost_per_call: USD per call: calls counted with ``ctx.cost(calls=...)``, or one
            per invocation of the function when it counts none.
        batch_size: make a batched step: the function gets a list of up to this many
            rows (of one chunk) and returns a list with one result per row; an
            exception instance in the list fails only its row.
        cache: reuse results of identical inputs within and across batches and runs
            (``False`` for steps with side effects; ``batch.run(..., refresh=True)``
            ignores cached results once).
        cache_key: the inputs that identify a result: a list of column names, or a
            function of the row; default: every column the step sees.
        http: a ``ClientFactory`` (headers, auth, base URL, limits) or a callable that
            makes an ``httpx.Client``, for ``ctx.http``/``ctx.ahttp``.

    Example:
        >>> import batchkit as bk
        >>> @bk.step(rate_limit="600/min", concurrency=4)
        ... def double(row):
        ...     return {"twice": row["n"] * 2}
        >>> double({"n": 21})
        {'twice': 42}
    """
    def make(fn: Callable[..., Any]) -> Step:
        if not callable(fn):
            raise ConfigError(f"@bk.step decorates a function, got {type(fn).__name__}")
        step_name = name if isinstance(name, str) else getattr(fn, "__name__", "step")
        policy = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)
        limit = RateLimit.parse(rate_limit) if rate_limit is not None else None
        return Step(fn, StepOptions(step_name, version, limit, concurrency, policy, cost,
                                    cost_per_call, batch_size, timeout, cache, cache_key,
                                    http))

    if callable(name) and not isinstance(name, str):
        fn, name = name, None
        return make(fn)
    return make


