"""``batch.plan``: run a measured sample of a batch, calibrate step profiles, project the rest.

The data flow: pending items → a sample run (a normal ``batch.run`` over a few
of them, spread over the batch; their results are kept) → its attempt log →
invocations counted, limiter waits replayed and taken out, ``ctx.memo`` work
counted once (``_calibrate.invocation_log`` / ``deduct_waits`` /
``discount_memo``) → retry rates pooled over the steps that call services
(``pooled_retry_rates``: a 20-item sample sees a handful of transient errors) →
``calibrate`` with the limits declared on the steps → ``project`` for the whole
volume at the given or recommended workers and chunk size.

What comes from where:

* measured, from the log: per step latency p50 / p95 of one invocation of its
  function, invocations per item, USD and tokens per item, cache hits, retry
  and failure rates;
* declared, from the steps: rate limits, concurrency caps, async slots
  (``per_worker``), request batch sizes;
* chosen: workers (``workers=`` or ``recommend()``'s count) and the chunk size
  (``chunk_size=`` or the recommended one; the projection follows the chunks,
  so run with the plan's ``chunk_size``).

A "call" in a plan made here is one invocation of a step's function: what its
rate limit paces and its concurrency cap counts. Async steps run the rows of a
chunk concurrently, up to their ``concurrency`` (default 100) per worker: their
profile's ``per_worker``. The sample runs in chunks small enough that every
worker gets one and no async row waits for a slot, so the logged durations are
the calls' own (limiter waits are replayed and taken out). What the log cannot
show: a Retry-After that pauses a step delays every row waiting on its limiter,
and that wait stays in those rows' durations (the p50 shrugs it off).

``plan_from_log`` does the same from an attempt log alone and ``plan_from_runs``
from a batch's earlier runs (``sample=0`` and ``batchkit plan``): nothing runs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from ._calibrate import (
    calibrate,
    deduct_waits,
    discount_memo,
    invocation_log,
    pooled_retry_rates,
)
from ._errors import ConfigError
from ._pipeline import Pipeline
from ._plan import Projection, StepProfile, _is_number, parse_duration, project
from ._plan_advice import _chunk
from ._ratelimit import RateLimit
from ._report import RunReport
from ._runner import check_function, make_options
from ._steps import Step

if TYPE_CHECKING:
    from ._batch import Batch

__all__ = ["Sample", "plan_batch", "plan_from_log", "plan_from_runs", "profiles_from_log",
           "remaining_projection", "step_limits"]

#: run() arguments the sample run takes through ``**run_kwargs``
RUN_ARGS = ("backend", "chunk_size", "retries", "timeout", "max_failure_rate", "progress",
            "refresh", "alerts", "on_alert", "halt_on")
_ASYNC_DEFAULT = 100  # coroutines in flight per worker when an async step sets none
_TOLERANCES = "'skip' (dead-letter failed items and go on), 'halt' (stop at the first " \
              "failure) or a share of failures to tolerate, e.g. 0.15"


@dataclass(frozen=True)
class Sample:
    """What a plan was measured from: a sample run, or earlier runs' attempt log.

    Attributes:
        items: items the sample ran (0: planned from earlier runs, nothing ran).
        done, failed: how the sampled items ended.
        seconds: the sample run's wall time (None when nothing ran).
        cost: USD the sample spent (its results are kept: it is not paid again).
        workers: the sample run's workers (None when nothing ran).
        run_ids: the runs whose attempt log the profiles come from.
        logged_items: items in that log.
        remaining: items still pending after the sample.
        report: the sample run's ``RunReport`` (None when nothing ran).

    Example:
        >>> Sample(items=0, done=0, failed=0, seconds=None, cost=0.0, workers=None,
        ...        run_ids=("r1",), logged_items=40, remaining=60).describe()
        'measured from the attempt log of 1 earlier run (40 items); nothing ran for this plan'
    """

    items: int
    done: int
    failed: int
    seconds: float | None
    cost: float
    workers: int | None
    run_ids: tuple[str, ...]
    logged_items: int
    remaining: int
    report: RunReport | None = None

    def describe(self) -> str:
        """One sentence: what the profiles were measured from."""
        from ._plan_report import plural, seconds_text, usd

        if not self.items:
            return (f"measured from the attempt log of {plural(len(self.run_ids), 'earlier run')}"
                    f" ({self.logged_items:,} items); nothing ran for this plan")
        took = seconds_text(self.seconds) if self.seconds is not None else "?"
        return (f"measured from a sample of {plural(self.items, 'item')} run with "
                f"{plural(self.workers or 0, 'worker')}: {self.done} done, {self.failed} failed "
                f"in {took} for {usd(self.cost)}; their results are kept, so the sample is "
                "not run or paid again")


# -- what the steps declare -----------------------------------------------------------------

def _steps_of(fn: Any) -> tuple[Step, ...] | None:
    if isinstance(fn, Pipeline):
        return fn.steps
    if isinstance(fn, Step):
        return (fn,)
    return None


def step_limits(fn: Any, *, backend: str = "threads", workers: int = 1
                ) -> dict[str, dict[str, Any]]:
    """The limits a pipeline's steps declare, as ``StepProfile`` fields per step.

    ``rate_limit`` (the run's total: threads share one limiter, N processes pace
    themselves to rate / N each), ``concurrency`` (a sync step's cap; N processes
    have one cap each), ``per_worker`` (an async step's concurrency: rows in
    flight per worker, 100 when it sets none) and ``batch_size`` (a batched step:
    ``calls`` is 1, a row, and a request carries ``batch_size`` of them). A plain
    function declares nothing (an empty dict).

    Example:
        >>> import batchkit as bk
        >>> search = bk.step("search", rate_limit="100/min", concurrency=4)(lambda r: {})
        >>> verify = bk.step("verify", batch_size=50)(lambda rows: [{} for _ in rows])
        >>> limits = step_limits(bk.pipeline(search, verify))
        >>> str(limits["search"]["rate_limit"]), limits["search"]["concurrency"], limits["verify"]
        ('100/min', 4, {'batch_size': 50, 'calls': 1.0, 'cost': 0.0})
        >>> async def ask(row):
        ...     return {}
        >>> step_limits(bk.step("ask", concurrency=8)(ask))
        {'ask': {'per_worker': 8}}
    """
    steps = _steps_of(fn)
    if steps is None:
        return {}
    processes = workers if backend == "processes" else 1
    out: dict[str, dict[str, Any]] = {}
    for s in steps:
        o = s.options
        entry: dict[str, Any] = {}
        if o.rate_limit is not None:
            entry["rate_limit"] = o.rate_limit
        if o.concurrency is not None and not s.is_async:
            entry["concurrency"] = o.concurrency * processes
        if s.is_async and not s.batched:
            entry["per_worker"] = o.concurrency or _ASYNC_DEFAULT
        if o.batch_size is not None:
            entry["batch_size"] = o.batch_size
            entry["calls"] = 1.0
            entry["cost"] = o.cost  # per row; the rest of its price is per request
        out[s.name] = entry
    return out


# -- calibration from a log -----------------------------------------------------------------

def profiles_from_log(attempts: pl.DataFrame, limits: Mapping[str, Mapping[str, Any]], *,
                      name: str, steps: tuple[str, ...] | None,
                      memo_misses: Mapping[str, int] | None = None,
                      external: Collection[str] | None = None) -> list[StepProfile]:
    """Step profiles from an attempt log and the declared limits (see the module docs).

    ``limits``: per step, profile fields the log cannot know (``step_limits``).
    ``steps``: the pipeline's step names (its rows are used, in that order), ()
    for a plain function (its item rows), or None for an unknown pipeline (every
    step in the log). ``memo_misses``: values each step's ``ctx.memo`` computed in
    the logged runs (``discount_memo``). ``external``: the steps that call services
    (their retry rates are pooled: ``pooled_retry_rates``); None: every step that
    counts calls.

    Example:
        >>> import polars as pl
        >>> from datetime import datetime, timedelta
        >>> t = datetime(2026, 1, 1)
        >>> log = pl.DataFrame({"_id": [1, 2], "attempt": [1, 1], "run_id": ["r", "r"],
        ...     "step": ["s", "s"], "started_at": [t, t + timedelta(seconds=1)],
        ...     "duration_s": [0.5, 0.7], "outcome": ["done", "done"], "usd": [0.01, 0.01],
        ...     "tokens": [0, 0], "calls": [1, 1], "tries": [1, 1]})
        >>> p = profiles_from_log(log, {"s": {"per_worker": 4}}, name="x", steps=("s",))[0]
        >>> p.latency, p.per_worker, p.cost
        (0.6, 4, 0.01)
    """
    log = attempts
    if steps is not None and steps:
        log = log.filter(pl.col("step").is_in(list(steps)))
    elif steps is not None:  # a plain function: item rows
        log = log.filter(pl.col("step").is_null())
    batched = {s for s, v in limits.items() if v.get("batch_size")}
    log = invocation_log(log.with_columns(_logged_calls=pl.col("calls")), batched=batched)
    rates = {s: RateLimit.parse(v["rate_limit"]) for s, v in limits.items()
             if v.get("rate_limit") is not None}
    log = deduct_waits(log, {s: (rates.get(s), v.get("concurrency"))
                             for s, v in limits.items()})
    log = discount_memo(log, memo_misses or {}, calls="_logged_calls")
    pooled = pooled_retry_rates(log, calls="_logged_calls", steps=external)
    log = log.drop("_logged_calls")
    present = set(log["step"].drop_nulls().unique().to_list()) if log.height else set()
    config = {s: dict(v) for s, v in limits.items() if s in present or not present}
    for s, rate in pooled.items():
        config.setdefault(s, {}).setdefault("retry_rate", rate)
    if steps:
        missing = [s for s in steps if s not in present]
        if missing:
            raise ConfigError(
                f"the attempt log has no rows of steps {missing}: no logged item reached "
                "them (every one failed or stopped before). Look at batch.failed(), fix the "
                "cause and plan again")
        order = {s: i for i, s in enumerate(steps)}
        config = dict(sorted(config.items(), key=lambda kv: order.get(kv[0], len(order))))
    called = log.filter(pl.col("step").is_not_null() & (pl.col("outcome") != "cached"))
    for s, entry in config.items():
        if entry.get("batch_size") and "cost_per_request" not in entry:
            rows = called.filter(pl.col("step") == s)
            invocations = float(rows["calls"].sum() or 0)
            per_row = float(entry.get("cost", 0.0)) * rows.height
            spent = float(rows["usd"].fill_null(0).sum() or 0)
            entry.setdefault("cost", 0.0)
            entry["cost_per_request"] = max(0.0, spent - per_row) / invocations \
                if invocations else 0.0
    return calibrate(log, steps=config, name=name)


def plan_from_log(attempts: pl.DataFrame, *, fn: Any = None, name: str = "batch",
                  volume: int, workers: int | None = None, chunk_size: int | None = None,
                  deadline: float | str | timedelta | None = None,
                  budget: float | None = None, backend: str = "threads",
                  limits: Mapping[str, Mapping[str, Any]] | None = None,
                  fn_name: str | None = None, memo_misses: Mapping[str, int] | None = None
                  ) -> Projection:
    """A projection calibrated from an attempt log: nothing runs.

    Args:
        attempts: the attempt log (``batch.attempts()``, or the rows of some runs).
        fn: the pipeline (its steps' limits and names) or the plain function the
            log came from; None: every step in the log, limits from ``limits`` only.
        name: the batch name (for the report).
        volume, workers, chunk_size, deadline, budget: as ``bk.project``; workers
            None takes the recommended count, chunk_size None the recommended size.
        backend: the backend the run will use (processes split limits).
        limits: per step, profile fields that override or add to the declared
            limits (``{"search": {"rate_limit": "100/min"}}``).
        fn_name: the profile's name for a plain function (default: its name).
        memo_misses: values each step's ``ctx.memo`` computed in the logged runs
            (counted once, not per item: ``_calibrate.discount_memo``).

    Raises:
        ConfigError: an empty log, or steps the log never reached.

    Example:
        >>> import polars as pl
        >>> from datetime import datetime
        >>> log = pl.DataFrame({"_id": [1, 2], "attempt": [1, 1], "run_id": ["r", "r"],
        ...     "step": [None, None], "started_at": [datetime(2026, 1, 1)] * 2,
        ...     "duration_s": [1.0, 1.0], "outcome": ["done", "done"], "usd": [0.01, 0.01],
        ...     "tokens": [0, 0], "calls": [0, 0], "tries": [1, 1]},
        ...     schema_overrides={"step": pl.String})
        >>> proj = plan_from_log(log, name="doc", volume=100, workers=2)
        >>> proj.seconds, round(proj.cost, 2)
        (50.0, 1.0)
    """
    if attempts.height == 0:
        raise ConfigError(f"batch {name!r} has no attempt log yet: nothing has run. Plan from "
                          "a sample instead (batch.plan(fn, sample=20) runs 20 items), or run "
                          "some items first")
    steps = _steps_of(fn)
    if steps is not None and len(steps) == 1 and attempts.filter(
            pl.col("step") == steps[0].name).height == 0:
        # a bare step run as a row function (batch.run(step)) logs item rows only
        attempts = attempts.filter(pl.col("step").is_null()).with_columns(
            step=pl.lit(steps[0].name))
    declared = step_limits(fn, backend=backend, workers=workers or 1)
    for step_name, extra in (limits or {}).items():
        declared.setdefault(step_name, {}).update(extra)
    if steps is not None:
        names: tuple[str, ...] | None = tuple(s.name for s in steps)
    elif fn is not None:
        names = ()
    else:
        names = None
    label = fn_name or (getattr(fn, "__name__", None) if fn is not None else None) or "item"
    external = {s.name for s in steps if s.options.http is not None} \
        if steps is not None else None
    profiles = profiles_from_log(attempts, declared, name=label, steps=names,
                                 memo_misses=memo_misses, external=external)
    kw: dict[str, Any] = {"volume": volume, "deadline": deadline, "budget": budget}
    draft = project(profiles, workers=workers or 1, **kw)
    if workers is None:
        rec = draft.recommend()
        workers, chunk = rec.workers, chunk_size or rec.chunk_size
    else:
        chunk = chunk_size or _chunk(draft, workers)[0]
    return project(profiles, workers=workers, chunk_size=chunk, **kw)


# -- batch.plan -----------------------------------------------------------------------------

def _check_whole(what: str, value: Any, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be a whole number >= {minimum}, got {value!r}; {hint}")
    return value


def _tolerance(value: Any) -> tuple[str, float | None]:
    if value in ("skip", "halt"):
        return str(value), None
    if _is_number(value) and 0 <= value < 1:
        return "skip", float(value)
    raise ConfigError(f"failure_tolerance must be {_TOLERANCES}; got {value!r}")


def _pick(ids: list[int], k: int) -> list[int]:
    """``k`` ids spread evenly over ``ids`` (a sample of the whole batch, not its head)."""
    if k >= len(ids):
        return list(ids)
    return [ids[(i * len(ids)) // k] for i in range(k)]


def plan_batch(batch: Batch, fn: Callable[..., Any], *, sample: int = 20,
               volume: int | None = None, deadline: float | str | timedelta | None = None,
               budget: float | None = None, failure_tolerance: str | float = "skip",
               workers: int | None = None, **run_kwargs: Any) -> Projection:
    """See ``Batch.plan`` (every argument is checked here before anything runs)."""
    unknown = sorted(set(run_kwargs) - set(RUN_ARGS))
    if unknown:
        special = {"only": "plan picks the sample's items itself",
                   "on_error": "use failure_tolerance='skip' or 'halt'",
                   "budget": "budget= is the plan's budget, not the sample run's",
                   "deadline": "deadline= is the plan's deadline"}
        why = "; ".join(f"{k}: {special[k]}" for k in unknown if k in special)
        raise ConfigError(f"plan() got run arguments it does not take: {unknown}"
                          f"{' (' + why + ')' if why else ''}; it passes {list(RUN_ARGS)} to "
                          "the sample run")
    if isinstance(fn, Step):
        fn = Pipeline((fn,))  # its limits known, its calls logged per step
    sample = _check_whole("sample", sample, 0, "the items to run and measure (0: plan from "
                          "the attempt log of earlier runs, running nothing)")
    if volume is not None:
        _check_whole("volume", volume, 1, "the items to plan for (default: the batch's total)")
    if workers is not None:
        _check_whole("workers", workers, 1, "or None to take the recommended count")
    deadline_s = parse_duration(deadline) if deadline is not None else None
    if budget is not None and (not _is_number(budget) or budget <= 0):
        raise ConfigError(f"budget must be USD > 0 or None, got {budget!r}")
    on_error, max_failure_rate = _tolerance(failure_tolerance)
    if max_failure_rate is not None and run_kwargs.get("max_failure_rate") is not None:
        raise ConfigError("give the tolerated failure share once: failure_tolerance=0.15 or "
                          "max_failure_rate=0.15, not both")
    options = make_options(
        backend=run_kwargs.get("backend", "threads"), workers=workers,
        chunk_size=run_kwargs.get("chunk_size"), retries=run_kwargs.get("retries", 3),
        timeout=run_kwargs.get("timeout"), on_error=on_error,
        max_failure_rate=run_kwargs.get("max_failure_rate", max_failure_rate),
        progress=run_kwargs.get("progress", "auto"))
    fn_name = check_function(fn, options.backend, options.workers)
    if not isinstance(fn, Pipeline) and _positional_params(fn) == 0:
        raise ConfigError(f"{fn_name!r} takes no row: plan() needs the one-row function or "
                          "pipeline that batch.run would run")
    counts = batch.counts()
    total = sum(counts.values())
    if total == 0:
        raise ConfigError(f"batch {batch.name!r} has no items: add rows first with "
                          "batch.add(frame, key=...)")
    if sample and counts["pending"] == 0:
        raise ConfigError(f"batch {batch.name!r} has no pending items to sample ({counts}); "
                          "plan from the attempt log of earlier runs with sample=0")

    runs: tuple[str, ...]
    report: RunReport | None = None
    misses: dict[str, int] = {}
    if sample:
        ids = _pick(batch.store.ids_with_status(batch.name, "pending").to_list(), sample)
        memos = _memo_counts(batch, fn)
        report = batch.run(fn, workers=options.workers, on_error=on_error,
                           max_failure_rate=options.max_failure_rate,
                           only=pl.col("_id").is_in(ids),
                           chunk_size=_sample_chunk(fn, len(ids), options.workers),
                           **{k: v for k, v in run_kwargs.items()
                              if k not in ("max_failure_rate", "chunk_size")})
        attempts = batch.attempts().filter(pl.col("run_id") == report.run_id)
        misses = {k: n - memos.get(k, 0) for k, n in _memo_counts(batch, fn).items()}
        runs = (report.run_id,)
        if report.processed == 0:
            raise ConfigError(f"the sample run processed no items (outcome "
                              f"{report.outcome!r}: {report.halt_reason or 'nothing ran'}); "
                              "plan again once the batch can run")
    else:
        attempts = batch.attempts()
        if attempts.height == 0:
            raise ConfigError(f"batch {batch.name!r} has no attempt log yet: nothing has "
                              "run. Plan from a sample instead (sample=20 runs 20 items and "
                              "keeps their results), or run the batch first")
        runs = tuple(attempts["run_id"].unique(maintain_order=True).to_list())
        misses = _memo_counts(batch, fn)  # every stored value was computed in those runs
    proj = plan_from_log(attempts, fn=fn, name=batch.name, volume=volume or total,
                         workers=workers, chunk_size=options.chunk_size, deadline=deadline_s,
                         budget=budget, backend=options.backend, fn_name=fn_name,
                         memo_misses=misses)
    after = batch.counts()
    proj.sample = Sample(
        items=report.processed if report is not None else 0,
        done=report.succeeded if report is not None else 0,
        failed=report.failed if report is not None else 0,
        seconds=report.elapsed_s if report is not None else None,
        cost=report.cost_usd if report is not None else 0.0,
        workers=options.workers if report is not None else None, run_ids=runs,
        logged_items=attempts["_id"].n_unique(), remaining=after["pending"], report=report)
    proj.name = batch.name
    proj.retry = options.retry
    proj.on_error = on_error
    return proj


def plan_from_runs(batch: Batch, fn: Any = None, *, volume: int | None = None,
                   deadline: float | str | timedelta | None = None,
                   budget: float | None = None, workers: int | None = None,
                   chunk_size: int | None = None, backend: str = "threads",
                   limits: Mapping[str, Mapping[str, Any]] | None = None) -> Projection:
    """Plan a batch from the attempt log of its earlier runs; nothing runs (``batchkit plan``).

    Like ``batch.plan(fn, sample=0, ...)``, but ``fn`` may be None: then every step
    in the log is planned, with the limits given in ``limits`` (per step, profile
    fields: ``{"search": {"rate_limit": "100/min"}}``) and none declared.

    Raises:
        ConfigError: a bad argument, a batch without items or without an attempt log.

    Example:
        >>> import polars as pl, batchkit as bk
        >>> b = bk.Batch("earlier", store=":memory:")
        >>> _ = b.add(pl.DataFrame({"n": range(10)}), key="n")
        >>> _ = b.run(lambda row: {"m": row["n"]}, progress=False)
        >>> plan = plan_from_runs(b, volume=1000, workers=2, limits={"item": {"rate_limit": 50}})
        >>> plan.volume, plan.sample.logged_items, plan.bottleneck.kind
        (1000, 10, 'rate_limit')
    """
    if isinstance(fn, Step):
        fn = Pipeline((fn,))
    for what, value, hint in (("volume", volume, "the items to plan for"),
                              ("workers", workers, "or None to take the recommended count"),
                              ("chunk_size", chunk_size, "or None to take the recommended")):
        if value is not None:
            _check_whole(what, value, 1, hint)
    deadline_s = parse_duration(deadline) if deadline is not None else None
    if budget is not None and (not _is_number(budget) or budget <= 0):
        raise ConfigError(f"budget must be USD > 0 or None, got {budget!r}")
    for step_name, fields in (limits or {}).items():
        if not isinstance(fields, Mapping):
            raise ConfigError(f"limits[{step_name!r}] must map profile fields to values, "
                              f"e.g. {{'rate_limit': '100/min'}}; got {fields!r}")
    fn_name = check_function(fn, backend, workers or 1) if fn is not None else None
    total = sum(batch.counts().values())
    if total == 0:
        raise ConfigError(f"batch {batch.name!r} has no items: add rows first with "
                          "batch.add(frame, key=...)")
    attempts = batch.attempts()
    if attempts.height == 0:
        raise ConfigError(f"batch {batch.name!r} has no attempt log yet: nothing has run. "
                          "Run some items first, or plan from a sample (batch.plan(fn, "
                          "sample=20); `batchkit plan --demo` for the demo)")
    proj = plan_from_log(attempts, fn=fn, name=batch.name, volume=volume or total,
                         workers=workers, chunk_size=chunk_size, deadline=deadline_s,
                         budget=budget, backend=backend, limits=limits, fn_name=fn_name,
                         memo_misses=_memo_counts(batch, fn))
    proj.sample = Sample(items=0, done=0, failed=0, seconds=None, cost=0.0, workers=None,
                         run_ids=tuple(attempts["run_id"].unique(maintain_order=True)),
                         logged_items=attempts["_id"].n_unique(),
                         remaining=batch.counts()["pending"])
    proj.name = batch.name
    return proj


def _sample_chunk(fn: Any, items: int, workers: int) -> int:
    """Chunks for the sample: one or more per worker, none longer than an async step's slots.

    Every worker then runs a share of the sample (the shared limits see the plan's
    workers), and no async row waits for a slot of its worker, a wait the log
    could not tell from the call's own time.

    Example:
        >>> _sample_chunk(None, 20, 5)
        4
    """
    slots = [s.options.concurrency or _ASYNC_DEFAULT for s in _steps_of(fn) or ()
             if s.is_async and not s.batched]
    return max(1, min([math.ceil(items / workers), *slots]))


def _memo_counts(batch: Batch, fn: Any) -> dict[str, int]:
    """Values stored in each step's ``ctx.memo`` so far."""
    steps = _steps_of(fn) or ()
    stored = batch.store.load_memos([(s.name, s.options.version) for s in steps])
    return {s.name: len(stored.get((s.name, s.options.version)) or {}) for s in steps}


def _positional_params(fn: Any) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def remaining_projection(proj: Projection) -> Projection | None:
    """The plan for the items still pending after its sample (None: none left or no sample).

    Example:
        >>> remaining_projection(project([StepProfile("a", latency=1.0)], volume=5, workers=1))
    """
    sample = proj.sample
    if sample is None or sample.remaining <= 0 or math.isinf(proj.items_per_min):
        return None
    return proj.at(volume=sample.remaining)
