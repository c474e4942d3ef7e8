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

from dataclasses import fields
from typing import Any

import polars as pl

from ._errors import ConfigError
from ._plan import StepProfile

__all__ = ["calibrate", "measure_steps"]

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
