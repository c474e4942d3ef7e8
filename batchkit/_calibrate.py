"""Calibration: step profiles measured from an attempt log.

``calibrate`` reads ``batch.attempts()`` (one row per attempt; step rows for each
step of a pipeline, item rows with ``step`` null) and returns the
``StepProfile`` values ``project`` needs, so that projecting the sample's own
volume gives back its measured calls, cost and tokens. What the log cannot
know (rate limits, concurrency caps, request batch sizes) comes from the step
declarations through ``steps``.

Convention for batched steps: the sum of a step's ``calls`` over its rows is
the number of requests made (a batch request counted once, on one of its rows).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping
from dataclasses import fields
from typing import Any

import polars as pl

from ._errors import ConfigError
from ._plan import StepProfile

__all__ = ["calibrate", "deduct_waits", "discount_memo", "invocation_log", "measure_steps",
           "pooled_retry_rates"]

_PROFILE_FIELDS = tuple(f.name for f in fields(StepProfile) if f.name != "name")
_LOG_COLUMNS = ("_id", "attempt", "step", "started_at", "duration_s", "outcome", "usd",
                "tokens", "calls", "tries")


def calibrate(attempts: pl.DataFrame, *, steps: dict[str, dict[str, Any]] | None = None,
              name: str = "item") -> list[StepProfile]:
    """Step profiles measured from an attempt log (``batch.attempts()``).

    Per step, over its rows (per item rows when there are no step rows: one
    profile called ``name``):

    * ``cache_hit_rate``: share of items whose rows are all ``cached``;
    * ``retry_rate``: extra tries per item that called the step: in-step retries
      (``tries - 1``) plus the step's rows of later attempts;
    * ``calls``, ``cost`` (``usd``), ``tokens``: per try, so that the projection's
      ``x (1 - cache_hit_rate) x (1 + retry_rate)`` gives back the measured totals;
      a step that records no calls is a local step: 1 call per try;
    * ``latency`` / ``latency_p95``: p50 / p95 (linear interpolation) of
      ``duration_s / calls`` over ``done`` rows with calls (``duration_s`` for a
      local step);
    * ``failure_rate``: share of items whose last row for the step is ``failed``.

    ``steps`` adds what the log cannot know, per step: ``rate_limit``,
    ``concurrency``, ``batch_size``, or any other profile field to override. For
    a batched step the log's ``calls`` are taken as the requests made (a batch
    request counted once), so ``calls`` becomes requests per item x
    ``batch_size``: full batches are assumed unless ``steps`` states ``calls``.

    Raises:
        ConfigError: missing columns, no rows, or a ``steps`` entry that names an
            unknown field or a step the log never ran.

    Example:
        >>> import polars as pl
        >>> log = pl.DataFrame({"_id": [1, 2], "attempt": [1, 1], "step": ["s", "s"],
        ...     "started_at": [None, None], "duration_s": [1.0, 3.0],
        ...     "outcome": ["done", "done"], "usd": [0.01, 0.01], "tokens": [0, 0],
        ...     "calls": [1, 1], "tries": [1, 1]})
        >>> p = calibrate(log, steps={"s": {"rate_limit": "10/s"}})[0]
        >>> p.calls, p.latency, str(p.rate)
        (1.0, 2.0, '10/s')
    """
    if not isinstance(attempts, pl.DataFrame):
        raise ConfigError(f"attempts must be a polars DataFrame, got {type(attempts).__name__}")
    missing = [c for c in _LOG_COLUMNS if c not in attempts.columns]
    if missing:
        raise ConfigError(f"the attempt log lacks columns {missing}; it needs "
                          f"{list(_LOG_COLUMNS)} (batch.attempts() has them)")
    if attempts.height == 0:
        raise ConfigError("the attempt log has no rows: run a sample first")
    config = dict(steps or {})
    for step_name, overrides in config.items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"steps[{step_name!r}] must be a dict of profile fields, "
                              f"got {overrides!r}")
        unknown = sorted(set(overrides) - set(_PROFILE_FIELDS))
        if unknown:
            raise ConfigError(f"steps[{step_name!r}] has unknown fields {unknown}; "
                              f"allowed: {list(_PROFILE_FIELDS)}")
    measured = measure_steps(attempts, order=list(config), name=name)
    absent = [s for s in config if s not in measured]
    if absent:
        raise ConfigError(f"steps {absent} have no rows in the attempt log; run a sample "
                          f"that reaches them, or leave them out of steps")
    out = []
    for step_name, values in measured.items():
        overrides = dict(config.get(step_name, {}))
        batch = overrides.get("batch_size")
        if batch and "calls" not in overrides and values["calls"] > 0:
            values["calls"] *= batch
        values.update(overrides)
        try:
            out.append(StepProfile(step_name, **values))
        except ConfigError as exc:
            raise ConfigError(f"calibrating step {step_name!r}: {exc}") from exc
    return out


def _measure(rows: pl.DataFrame) -> dict[str, Any]:
    """One step's (or the whole item's) profile fields from its rows."""
    items = rows["_id"].n_unique()
    called = rows.filter(pl.col("outcome") != "cached")
    n_called = called["_id"].n_unique()
    tries = int(called["tries"].fill_null(1).sum()) if n_called else 0
    calls = float(called["calls"].fill_null(0).sum())
    last = (rows.sort(["_id", "attempt", "started_at"], nulls_last=False)
            .group_by("_id", maintain_order=True).agg(pl.col("outcome").last()))
    failed = int((last["outcome"] == "failed").sum())
    done = called.filter(pl.col("outcome") == "done")
    if calls > 0:
        timed = done.filter(pl.col("calls") > 0)
        if timed.height == 0:
            timed = called.filter(pl.col("calls") > 0)
        per_call = timed["duration_s"] / timed["calls"]
        calls_per_try = calls / tries
    else:  # a local step: one invocation per try, its duration is the latency
        per_call = (done if done.height else called)["duration_s"]
        calls_per_try = 1.0 if n_called else 0.0
    per_call = per_call.drop_nulls()
    p50 = per_call.quantile(0.5, interpolation="linear") if per_call.len() else None
    p95 = per_call.quantile(0.95, interpolation="linear") if per_call.len() else None
    return {
        "calls": calls_per_try,
        "latency": float(p50) if p50 is not None else 0.0,
        "latency_p95": float(p95) if p95 is not None else None,
        "cost": float(rows["usd"].fill_null(0).sum()) / tries if tries else 0.0,
        "tokens": float(rows["tokens"].fill_null(0).sum()) / tries if tries else 0.0,
        "cache_hit_rate": (items - n_called) / items,
        "retry_rate": (tries - n_called) / n_called if n_called else 0.0,
        "failure_rate": failed / items,
    }


def measure_steps(attempts: pl.DataFrame, *, order: list[str], name: str
                  ) -> dict[str, dict[str, Any]]:
    """Profile fields per step, in pipeline order: by first start, then as in ``order``.

    Without step rows, one entry called ``name`` from the item rows.
    """
    steps = attempts.filter(pl.col("step").is_not_null())
    if steps.height == 0:
        return {name: _measure(attempts)}
    first = (steps.with_row_index("_row").group_by("step")
             .agg(pl.col("started_at").min(), pl.col("_row").min()))

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        rank = order.index(row["step"]) if row["step"] in order else len(order)
        return (row["started_at"] is None, row["started_at"] or 0, rank, row["_row"])

    names = [row["step"] for row in sorted(first.iter_rows(named=True), key=key)]
    return {s: _measure(steps.filter(pl.col("step") == s)) for s in names}


# -- a pipeline's log, made ready for calibration -------------------------------------------

def invocation_log(attempts: pl.DataFrame, *, batched: Collection[str] = ()) -> pl.DataFrame:
    """The attempt log with ``calls`` counted as invocations of each step's function.

    A step's rate limit and concurrency cap pace *invocations* of its function, and
    a call's latency is the time of one invocation, so ``batch.plan`` calibrates in
    invocations: a sync or async step's row invokes the function once per try; a
    batched step invokes it once per try for all the rows of one request, which
    share ``started_at`` and ``duration_s`` (the request's time split evenly): the
    first row of each request gets the request's invocations and its whole
    duration, the others none. Item rows (``step`` null) and cached rows keep
    their values.

    Example:
        >>> import polars as pl
        >>> from datetime import datetime
        >>> t = datetime(2026, 1, 1)
        >>> log = pl.DataFrame({"_id": [1, 2, 3], "attempt": [1, 1, 1], "run_id": ["r"] * 3,
        ...     "step": ["verify"] * 3, "started_at": [t] * 3, "duration_s": [0.5] * 3,
        ...     "outcome": ["done"] * 3, "calls": [4, 0, 0], "tries": [1, 1, 1]})
        >>> out = invocation_log(log, batched={"verify"})
        >>> out["calls"].to_list(), out["duration_s"].to_list()
        ([1, 0, 0], [1.5, 0.5, 0.5])
    """
    called = (pl.col("step").is_not_null() & (pl.col("outcome") != "cached"))
    is_batched = pl.col("step").is_in(list(batched))
    group = ["run_id", "step", "started_at", "duration_s", "attempt"]
    rank = pl.col("_id").rank("ordinal").over(group)
    size = pl.len().over(group)
    tries = pl.col("tries").fill_null(1).cast(pl.Int64)
    return attempts.with_columns(
        calls=pl.when(called & is_batched).then(pl.when(rank == 1).then(tries).otherwise(0))
        .when(called).then(tries).otherwise(pl.col("calls")),
        duration_s=pl.when(called & is_batched & (rank == 1))
        .then(pl.col("duration_s") * size).otherwise(pl.col("duration_s")),
    )


def deduct_waits(attempts: pl.DataFrame, limits: Mapping[str, tuple[Any, int | None]]
                 ) -> pl.DataFrame:
    """Take the time spent waiting on a step's own limits out of its logged durations.

    A step row's ``duration_s`` runs from before the step waits for a concurrency
    slot and its rate limiter to the end of the call, so in a run where a limit
    binds it holds queueing, not only the service's latency. The queue is replayed
    per run and step from the log (``limits``: step → (``RateLimit`` or None,
    concurrency cap or None)): invocations in order of ``started_at``; one takes
    a slot when one is free (a slot is held from admission to the end of the
    call), then the rate limiter admits it at ``max(arrival, tat - (burst - 1) x
    T)`` and moves ``tat`` on by ``T = 1 / rate`` (GCRA, as ``Limiter``). The
    replayed wait is taken off the row's duration. Expects ``invocation_log``'s
    counting (a batched request's duration on its first row). Retries inside a
    row are replayed as its first invocation only.

    Example:
        >>> import polars as pl
        >>> from datetime import datetime, timedelta
        >>> from batchkit._ratelimit import RateLimit
        >>> t = datetime(2026, 1, 1)
        >>> log = pl.DataFrame({"_id": [1, 2, 3], "attempt": [1] * 3, "run_id": ["r"] * 3,
        ...     "step": ["s"] * 3, "started_at": [t] * 3, "duration_s": [0.1, 1.1, 2.1],
        ...     "outcome": ["done"] * 3, "calls": [1, 1, 1], "tries": [1] * 3})
        >>> deduct_waits(log, {"s": (RateLimit(1, per=1), None)})["duration_s"].round(6).to_list()
        [0.1, 0.1, 0.1]
    """
    limited = {s: v for s, v in limits.items() if v[0] is not None or v[1] is not None}
    if not limited or attempts.height == 0:
        return attempts
    frame = attempts.with_row_index("_row")
    picked = frame.filter(pl.col("step").is_in(list(limited)) & (pl.col("outcome") != "cached")
                          & (pl.col("calls") > 0) & pl.col("started_at").is_not_null())
    waits: dict[int, float] = {}
    for (_run, name), rows in picked.group_by(["run_id", "step"]):
        rate, cap = limited[str(name)]
        starts = (rows["started_at"].dt.epoch("us") / 1e6).to_list()
        order = sorted(range(rows.height), key=lambda k: starts[k])
        durations = rows["duration_s"].fill_null(0.0).to_list()
        ids = rows["_row"].to_list()
        period = 1.0 / rate.per_second if rate is not None else 0.0
        tau = (rate.burst - 1) * period if rate is not None else 0.0
        tat: float | None = None
        holding: list[float] = []  # ends of the calls holding a concurrency slot
        for k in order:
            start, admitted = starts[k], starts[k]
            if cap is not None:
                while holding and holding[0] <= admitted:
                    heapq.heappop(holding)
                if len(holding) >= cap:
                    admitted = max(admitted, heapq.heappop(holding))
            if rate is not None:
                if tat is not None and tat - tau > admitted:
                    admitted = tat - tau
                tat = max(tat if tat is not None else admitted, admitted) + period
            wait = min(max(0.0, admitted - start), durations[k])
            if cap is not None:
                heapq.heappush(holding, start + durations[k])
            waits[ids[k]] = wait
    if not waits:
        return attempts
    wait_col = pl.DataFrame({"_row": list(waits), "_wait": list(waits.values())},
                            schema={"_row": pl.UInt32, "_wait": pl.Float64})
    return (frame.join(wait_col, on="_row", how="left")
            .with_columns(duration_s=pl.col("duration_s") - pl.col("_wait").fill_null(0.0))
            .sort("_row").drop("_row", "_wait"))


def discount_memo(attempts: pl.DataFrame, misses: Mapping[str, int], *,
                  calls: str = "calls") -> pl.DataFrame:
    """Count a step's ``ctx.memo`` work once, not per item: scale its memo rows down.

    A memo value is computed once per key and then reused, so a sample (which
    meets most keys for the first time) does far more of that work per item
    than the full run. ``misses`` says how many values each step's memo
    computed in the logged runs; that many of the step's rows with the most
    calls per try (the rows that computed one) get their duration, cost and
    tokens scaled to the usual calls: the median of the other rows (half of a
    sample's rows may have computed one). A step that counts no calls of
    its own shows no such rows and is left as it is. ``calls`` names the column
    with the logged calls (``invocation_log`` replaces ``calls``: keep a copy);
    apply it after ``deduct_waits``, which works on whole durations.

    Example:
        >>> import polars as pl
        >>> log = pl.DataFrame({"_id": [1, 2, 3], "step": ["s"] * 3, "outcome": ["done"] * 3,
        ...     "calls": [2, 1, 1], "tries": [1, 1, 1], "duration_s": [0.6, 0.3, 0.3],
        ...     "usd": [0.02, 0.01, 0.01], "tokens": [0, 0, 0]})
        >>> discount_memo(log, {"s": 1})["usd"].to_list()
        [0.01, 0.01, 0.01]
    """
    wanted = {s: n for s, n in misses.items() if n > 0}
    if not wanted or attempts.height == 0:
        return attempts
    frame = attempts.with_row_index("_row")
    scale: dict[int, float] = {}
    for name, n in wanted.items():
        rows = frame.filter((pl.col("step") == name) & (pl.col("outcome") != "cached")
                            & (pl.col(calls) > 0))
        if rows.height == 0:
            continue
        per_try = rows[calls].cast(pl.Float64) / rows["tries"].fill_null(1).cast(pl.Float64)
        ordered = rows.with_columns(_per_try=per_try).sort("_per_try", descending=True)
        rest = ordered["_per_try"].slice(n)
        found = (rest if rest.len() else ordered["_per_try"]).median()
        if not isinstance(found, (int, float)):
            continue
        usual = float(found)  # the calls of a row that computed no memo value
        extra = ordered.head(n).filter(pl.col("_per_try") > usual)
        for row, value in zip(extra["_row"].to_list(), extra["_per_try"].to_list()):
            scale[row] = usual / value
    if not scale:
        return attempts
    factor = pl.DataFrame({"_row": list(scale), "_scale": list(scale.values())},
                          schema={"_row": pl.UInt32, "_scale": pl.Float64})
    f = pl.col("_scale").fill_null(1.0)
    return (frame.join(factor, on="_row", how="left")
            .with_columns(duration_s=pl.col("duration_s") * f, usd=pl.col("usd") * f,
                          tokens=(pl.col("tokens") * f).round().cast(attempts.schema["tokens"]))
            .sort("_row").drop("_row", "_scale"))


def pooled_retry_rates(attempts: pl.DataFrame, *, calls: str = "calls",
                       steps: Collection[str] | None = None,
                       weight: float = 20.0) -> dict[str, float]:
    """Retry rates per step, each pulled toward what every external call of the log shows.

    A 20-item sample sees a handful of transient errors, so one step's own retry
    rate is mostly luck (0%, 5% or 30% for the same service). The services' calls
    all share one figure, though: retries per call ``q`` over every step whose
    rows count their calls (``calls``: the function's own count; steps that count
    none are local and keep their own rate; ``steps``, when given, names the
    steps that call services, the others keep their own rate). A step whose tries make ``c`` calls
    would then retry ``rho = p / (1 - p)`` times per item, ``p = 1 - (1 - q)^c``;
    its estimate is ``(retries + weight x rho) / (items + weight)``: its own rate
    once it has many more than ``weight`` items, that prior with few. Expects
    ``invocation_log``'s counting (invocations in ``calls`` are not what is asked
    for here: pass the logged count's column).

    Returns:
        step → retry rate, for the steps that count calls (empty with fewer than two).

    Example:
        >>> import polars as pl
        >>> log = pl.DataFrame({"_id": [1, 2, 1, 2], "step": ["a", "a", "b", "b"],
        ...     "outcome": ["done"] * 4, "calls": [1, 1, 2, 4], "tries": [1, 1, 1, 2]})
        >>> {k: round(v, 4) for k, v in pooled_retry_rates(log, weight=2).items()}
        {'a': 0.0714, 'b': 0.4031}
    """
    rows = attempts.filter(pl.col("step").is_not_null() & (pl.col("outcome") != "cached")
                           & (pl.col(calls) > 0))
    if steps is not None:
        rows = rows.filter(pl.col("step").is_in(list(steps)))
    if rows.height == 0:
        return {}
    tries = pl.col("tries").fill_null(1).cast(pl.Float64)
    per = rows.group_by("step", maintain_order=True).agg(
        items=pl.len(), retries=(tries - 1.0).sum(), calls=pl.col(calls).sum(),
        per_try=(pl.col(calls).cast(pl.Float64) / tries).filter(tries == 1.0).median(),
        per_try_all=(pl.col(calls).cast(pl.Float64) / tries).median())
    if per.height < 2:
        return {}
    total_calls = float(per["calls"].sum())
    q = min(0.5, float(per["retries"].sum()) / total_calls) if total_calls else 0.0
    out = {}
    for r in per.iter_rows(named=True):
        c = r["per_try"] if r["per_try"] is not None else r["per_try_all"]
        p_try = 1.0 - (1.0 - q) ** float(c)
        rho = p_try / (1.0 - p_try)
        out[str(r["step"])] = (r["retries"] + weight * rho) / (r["items"] + weight)
    return out
