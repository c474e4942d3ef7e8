"""Steps and pipelines: single-item workflows made of calls to the outside world.

A *step* is a row function with the limits of the service it calls: a rate limit
shared by every thread of the run, a cap on calls in flight, in-step retries that
honour ``Retry-After`` by pausing the whole step, and a pooled HTTP client. A
*pipeline* runs steps in order over one row, each step seeing the row plus the
columns the steps before it returned; the pipeline is itself a row function, so
``batch.run(pipeline)`` runs it with every guarantee of the engine.

What is here today (issue 3, first increment): rate limits, concurrency limits,
pooled ``ctx.http`` (a client per worker thread), in-step retries with a step-wide
pause on 429, static and dynamic cost counted per row (``ctx.cost``), ``ctx.memo``
within a process, and pipelines. Still to come: per-step checkpoints in the store, a cache of step
results across runs, ``ctx.memo`` persisted in the store, async steps and request
batching (``batch_size``).

Limits hold for the whole run: with ``backend="threads"`` every worker thread shares
one limiter and one concurrency cap; with ``backend="processes"`` each of the N worker
processes paces itself to ``rate / N`` (``RateLimit.split``; a rate that cannot be
split fails before the run starts), and a concurrency cap applies per process.
"""

from __future__ import annotations

import functools
import inspect
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._clock import Clock, SystemClock
from ._errors import ConfigError
from ._http import ClientPool
from ._policy import RetryPolicy, classify
from ._ratelimit import Limiter, RateLimit
from ._worker import ItemContext, current_item, process_share

__all__ = ["Pipeline", "Step", "StepContext", "pipeline", "step"]


@dataclass
class Usage:
    """What one row spent in one step: USD, tokens and calls."""

    usd: float = 0.0
    tokens: int = 0
    calls: int = 0


class StepContext:
    """``ctx`` of a step function: the row's identity, a pooled HTTP client, cost and memo.

    Attributes:
        step: the step's name.
        item: the row's ``ItemContext`` (batch, key, attempt, run id), or None
            when the step is called outside a run.
        usage: what the row has spent in this step so far.

    Example:
        >>> ctx = StepContext(step("s")(lambda row: {}), None)
        >>> ctx.cost(usd=0.01, tokens=120); ctx.usage
        Usage(usd=0.01, tokens=120, calls=0)
    """

    def __init__(self, owner: Step, item: ItemContext | None) -> None:
        self._owner = owner
        self.step = owner.name
        self.item = item
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

    def cost(self, *, usd: float = 0.0, tokens: int = 0, calls: int = 0) -> None:
        """Add to what this row spent in this step (on top of the step's static cost)."""
        self.usage.usd += usd
        self.usage.tokens += tokens
        self.usage.calls += calls

    def memo(self, key: Any, fn: Callable[[], Any]) -> Any:
        """Compute ``fn()`` once per ``key`` and reuse it (shared by the worker's threads).

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

    def __post_init__(self) -> None:
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int)
            or self.concurrency < 1
        ):
            raise ConfigError(
                f"step {self.name!r}: concurrency must be a positive whole number or None, "
                f"got {self.concurrency!r}")
        for name in ("cost", "cost_per_call"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"step {self.name!r}: {name} must be USD >= 0, got {value!r}")


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
        self.clients = ClientPool(concurrency=options.concurrency or 16)
        self.memos: dict[Any, Any] = {}
        self.lock = threading.Lock()


_LOCALS: dict[str, _Local] = {}
_LOCALS_LOCK = threading.Lock()


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
        self._token = uuid.uuid4().hex
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        # a step is called as fn(row): keep its own signature, not the wrapped (row, ctx)
        del self.__wrapped__  # type: ignore[attr-defined]

    @property
    def _local(self) -> _Local:
        """This process's state of the step: limiter, concurrency slots, clients, memo.

        Keyed by the step's token, so the copies a worker process unpickles for each
        chunk share one limiter, one client pool and one memo.
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
                  f"retries={o.retry.retries}" if o.retry.retries else ""]
        return f"Step({self.name!r}{''.join(', ' + x for x in limits if x)})"

    def _memo(self, key: Any, fn: Callable[[], Any]) -> Any:
        local = self._local
        with local.lock:
            if key in local.memos:
                return local.memos[key]
        value = fn()
        with local.lock:
            return local.memos.setdefault(key, value)

    def run(self, row: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        """Run the step on one row; return its new columns and what it spent."""
        ctx = StepContext(self, current_item())
        retry = self.options.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                out = self._call_once(row, ctx)
                break
            except Exception as exc:
                info = classify(exc)
                if not info.transient or attempt > retry.retries:
                    raise
                delay = retry.delay(attempt, retry_after=info.retry_after)
                limiter = self._local.limiter
                if info.retry_after is not None and limiter is not None:
                    limiter.pause(delay)  # the service said wait: the whole step waits
                else:
                    self.clock.sleep(delay)
        usage = ctx.usage
        if not usage.calls:  # the function did not count its calls: one per invocation
            usage.calls = ctx._invocations
        usage.usd += self.options.cost + self.options.cost_per_call * usage.calls
        if out is None:
            out = {}
        if not isinstance(out, dict):
            out = {self.name: out}
        return out, usage

    def _call_once(self, row: dict[str, Any], ctx: StepContext) -> Any:
        local = self._local
        if local.slots is not None:
            local.slots.acquire()
        try:
            if local.limiter is not None:
                local.limiter.acquire()
            ctx._invocations += 1
            return self.fn(row, ctx) if self._wants_ctx else self.fn(row)
        finally:
            if local.slots is not None:
                local.slots.release()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        """Use the step alone as a row function: ``batch.run(my_step)``."""
        out, _ = self.run(row)
        return out

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
         retries: int | RetryPolicy = 0, cost: float = 0.0,
         cost_per_call: float = 0.0) -> Any:
    """Declare a step: ``@bk.step(rate_limit="100/min", concurrency=10, retries=3)``.

    Args:
        name: the step's name (default: the function's name); also usable bare,
            ``@bk.step``.
        version: change it when the step's logic changes (cached results are keyed
            by it once step caching lands).
        rate_limit: calls allowed, e.g. ``"100/min"``, ``"5/s"``, ``"1000/h"`` or calls per
            second as a number; shared by the threads of a worker process.
        concurrency: calls in flight at most, whatever the number of workers.
        retries: in-step retries of transient errors (429/5xx, timeouts, connection
            errors, ``bk.Transient``); a ``Retry-After`` pauses the whole step.
        cost: USD per row.
        cost_per_call: USD per call: calls counted with ``ctx.cost(calls=...)``, or one
            per invocation of the function when it counts none.

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
                                    cost_per_call))

    if callable(name) and not isinstance(name, str):
        fn, name = name, None
        return make(fn)
    return make


class Pipeline:
    """Steps run in order over one row; a row function for ``batch.run``.

    Each step gets the input row plus the columns returned by the steps before it,
    and the pipeline returns every new column, plus ``cost_usd`` (what the row spent
    across steps) when any step has a cost.

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

    def check_workers(self, processes: int) -> None:
        """Fail before a run if a rate limit cannot be split across ``processes``."""
        for s in self.steps:
            s.check_workers(processes)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        """Run every step on ``row``; return the new columns."""
        current = dict(row)
        new: dict[str, Any] = {}
        usd = 0.0
        for s in self.steps:
            out, usage = s.run(current)
            current.update(out)
            new.update(out)
            usd += usage.usd
        if usd or any(s.options.cost or s.options.cost_per_call for s in self.steps):
            new["cost_usd"] = round(usd, 10)
        return new

    def __repr__(self) -> str:
        return "pipeline(" + ", ".join(s.name for s in self.steps) + ")"

    def close(self) -> None:
        """Close every step's pooled clients."""
        for s in self.steps:
            s.close()


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
