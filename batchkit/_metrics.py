"""Metrics of a batch, computed from its attempt log and its items.

``compute_metrics(batch.attempts(), batch.items())`` is a pure function: frames in,
a frozen ``Metrics`` out. Every figure is a query over data that survives the run
(throughput, latency percentiles, calls, tokens, retries, failures, cost, ETA), so
the same numbers come out in a notebook, in the CLI and after a restart.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl

__all__ = ["Metrics", "compute_metrics", "percentile"]

_EPOCH = datetime(1970, 1, 1)
_US = 1_000_000
_WINDOW_US = 60 * _US  # "items/min over the last minute"
_STATUSES = ("pending", "running", "done", "failed")
_ATTEMPT_COLUMNS: dict[str, Any] = {
    "_id": pl.Int64, "attempt": pl.Int32, "step": pl.String, "run_id": pl.String,
    "started_at": pl.Datetime("us"), "duration_s": pl.Float64, "outcome": pl.String,
    "error_type": pl.String, "error_message": pl.String, "usd": pl.Float64,
    "tokens": pl.Int64, "calls": pl.Int64, "tries": pl.Int32}
_ITEM_COLUMNS: dict[str, Any] = {"_id": pl.Int64, "_status": pl.String,
                                 "_retryable": pl.Boolean}
_STEP_SCHEMA: dict[str, Any] = {
    "step": pl.String, "attempts": pl.Int64, "p50": pl.Float64, "p95": pl.Float64,
    "p99": pl.Float64, "calls": pl.Int64, "tokens": pl.Int64, "usd": pl.Float64,
    "cache_hits": pl.Int64, "failures": pl.Int64, "retries": pl.Int64}


def percentile(values: pl.Series | list[float], p: int) -> float | None:
    """The ``p``-th percentile of ``values`` by the nearest-rank method (None if empty).

    Nearest rank: sort the ``n`` values (nulls dropped) and take the one at rank
    ``ceil(p * n / 100)`` (1-based, at least 1). The result is always one of the
    values, never an interpolation: the p95 of 1..20 is 19, of 1..10 it is 10.

    Example:
        >>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50)
        3.0
        >>> percentile(list(range(1, 21)), 95), percentile([], 99)
        (19.0, None)
    """
    series = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.Float64)
    series = series.drop_nulls().cast(pl.Float64).sort()
    n = series.len()
    if not n:
        return None
    rank = max(1, (p * n + 99) // 100)
    return float(series[rank - 1])


def _with(frame: pl.DataFrame, schema: dict[str, Any]) -> pl.DataFrame:
    """``frame`` with the columns of ``schema`` it lacks added as nulls."""
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in frame.columns]
    return frame.with_columns(missing) if missing else frame


def _as_us(moment: datetime) -> int:
    """Microseconds since the epoch of a naive-UTC (or aware) datetime."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _num(value: float | None, fmt: str = ",.2f", unit: str = "") -> str:
    """``value`` formatted (with a trailing unit), or a dash for None."""
    return "–" if value is None else format(value, fmt) + unit


def _usd(value: float | None) -> str:
    return "–" if value is None else f"${value:,.4f}"


@dataclass(frozen=True)
class Metrics:
    """Figures of a batch from its attempt log and items (see ``compute_metrics``).

    Attributes:
        total: rows in the batch.
        counts: rows per status (pending, running, done, failed always present).
        attempts: item attempts in the log (item rows: ``step`` null).
        ended: item attempts that ended their row (outcome ``done`` or ``failed``).
        first_started_at / last_finished_at: the log's first start and last end
            (naive UTC; None for an empty log).
        now: the moment "the last minute" and the ETA refer to.
        items_per_min: ``ended`` / minutes from ``first_started_at`` to
            ``last_finished_at`` (None when the log is empty or spans no time).
        items_per_min_recent: attempts that ended in the minute before ``now`` per
            minute (the window is cut to start at ``first_started_at`` when the log is
            shorter than a minute); None when the window is empty.
        duration_p50_s / duration_p95_s / duration_p99_s: nearest-rank percentiles
            (see ``percentile``) of the durations of item rows with outcome ``done``,
            ``failed`` or ``retry``.
        calls / tokens: sums over item rows (an item row carries its steps' sums).
        retries: item attempts that failed transiently and were scheduled again
            (outcome ``retry``).
        step_retries: in-step retries: the sum of ``tries - 1`` over step rows.
        transient_recovered: rows now done whose log shows a retry (an item row with
            outcome ``retry`` or a step row with ``tries > 1``).
        permanent_failures: failed rows whose last error was not retryable
            (``_retryable`` false).
        retries_exhausted: failed rows whose last error was retryable (attempts used up).
        dead_letters: failed rows (permanent, exhausted, or unknown).
        cost_usd: USD over item rows.
        cost_per_done_usd: ``cost_usd`` / rows done: what one result cost, failures
            included (None with no row done).
        cost_per_ended_usd: ``cost_usd`` / rows done or failed (None with neither).
        eta_s: seconds to finish the pending and running rows at
            ``items_per_min_recent``; 0 when none is left, None without a rate.
        cache_hits: step rows served from the cache (outcome ``cached``).
        steps: one row per step, in order of first start: ``step``, ``attempts``
            (step rows, cached included), ``p50``/``p95``/``p99`` (seconds, over step
            rows that ran: cached ones excluded), ``calls``, ``tokens``, ``usd``,
            ``cache_hits``, ``failures`` (outcome ``failed``), ``retries`` (sum of
            ``tries - 1``).

    Example:
        >>> m = compute_metrics(pl.DataFrame(), pl.DataFrame())
        >>> m.total, m.items_per_min, m.cost_usd, m.eta_s
        (0, None, 0.0, 0.0)
    """

    total: int
    counts: dict[str, int]
    attempts: int
    ended: int
    first_started_at: datetime | None
    last_finished_at: datetime | None
    now: datetime | None
    items_per_min: float | None
    items_per_min_recent: float | None
    duration_p50_s: float | None
    duration_p95_s: float | None
    duration_p99_s: float | None
    calls: int
    tokens: int
    retries: int
    step_retries: int
    transient_recovered: int
    permanent_failures: int
    retries_exhausted: int
    dead_letters: int
    cost_usd: float
    cost_per_done_usd: float | None
    cost_per_ended_usd: float | None
    eta_s: float | None
    cache_hits: int
    steps: pl.DataFrame = field(compare=False, repr=False)

    @property
    def span_s(self) -> float | None:
        """Seconds from the first attempt's start to the last attempt's end."""
        if self.first_started_at is None or self.last_finished_at is None:
            return None
        return (self.last_finished_at - self.first_started_at).total_seconds()

    @property
    def failure_rate(self) -> float:
        """Failed share of the rows that ended (0 when none ended)."""
        ended = self.counts["done"] + self.counts["failed"]
        return self.counts["failed"] / ended if ended else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able figures: datetimes as ISO text, ``steps`` as a list of dicts.

        Example:
            >>> d = compute_metrics(pl.DataFrame(), pl.DataFrame()).to_dict()
            >>> d["counts"], d["steps"], d["span_s"]
            ({'pending': 0, 'running': 0, 'done': 0, 'failed': 0}, [], None)
        """
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, pl.DataFrame):
                value = value.to_dicts()
            elif isinstance(value, dict):
                value = dict(value)
            out[name] = value
        out.update(span_s=self.span_s, failure_rate=self.failure_rate)
        return out

    def _lines(self) -> list[tuple[str, str]]:
        c = self.counts
        return [
            ("items", f"{self.total:,}: {c['done']:,} done · {c['failed']:,} failed · "
                      f"{c['pending']:,} pending · {c['running']:,} running"),
            ("throughput", f"{_num(self.items_per_min, ',.1f')} items/min overall · "
                           f"{_num(self.items_per_min_recent, ',.1f')} in the last minute"),
            ("ETA", _duration_text(self.eta_s)),
            ("item duration", f"p50 {_num(self.duration_p50_s, unit=' s')} · "
                              f"p95 {_num(self.duration_p95_s, unit=' s')} · "
                              f"p99 {_num(self.duration_p99_s, unit=' s')}"),
            ("calls", f"{self.calls:,} calls · {self.tokens:,} tokens · "
                      f"{self.cache_hits:,} cache hits"),
            ("retries", f"{self.retries:,} retried attempts · {self.step_retries:,} in-step "
                        f"retries · {self.transient_recovered:,} rows recovered"),
            ("failures", f"{self.dead_letters:,} dead letters: {self.permanent_failures:,} "
                         f"permanent · {self.retries_exhausted:,} retries exhausted"),
            ("cost", f"{_usd(self.cost_usd)} total · {_usd(self.cost_per_done_usd)} per done "
                     f"row · {_usd(self.cost_per_ended_usd)} per ended row"),
        ]

    def _step_table(self) -> tuple[list[str], list[list[str]]]:
        head = ["step", "attempts", "p50 s", "p95 s", "p99 s", "calls", "tokens", "usd",
                "cache hits", "failures", "retries"]
        rows = [[str(r["step"]), f"{r['attempts']:,}", _num(r["p50"]), _num(r["p95"]),
                 _num(r["p99"]), f"{r['calls']:,}", f"{r['tokens']:,}", f"{r['usd']:,.4f}",
                 f"{r['cache_hits']:,}", f"{r['failures']:,}", f"{r['retries']:,}"]
                for r in self.steps.iter_rows(named=True)]
        return head, rows

    def __str__(self) -> str:
        lines = self._lines()
        width = max(len(k) for k, _ in lines)
        out = ["Metrics", *(f"  {k:<{width}}  {v}" for k, v in lines)]
        if self.steps.height:
            head, rows = self._step_table()
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
            out.append("  steps")
            for row in [head, *rows]:
                cells = [row[0].ljust(widths[0])] + [v.rjust(w) for v, w in
                                                     zip(row[1:], widths[1:])]
                out.append("    " + "  ".join(cells).rstrip())
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(f"<tr><th style='text-align:left'>{esc(k)}</th>"
                       f"<td style='text-align:left'>{esc(v)}</td></tr>"
                       for k, v in self._lines())
        steps = ""
        if self.steps.height:
            head, body = self._step_table()
            steps = ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
                     + "".join("<tr>" + "".join(
                         f"<td style='text-align:{'left' if i == 0 else 'right'}'>{esc(v)}</td>"
                         for i, v in enumerate(r)) + "</tr>" for r in body) + "</table>")
        return f"<div><b>Metrics</b><table>{rows}</table>{steps}</div>"


def _step_frame(step_rows: pl.DataFrame) -> pl.DataFrame:
    if step_rows.is_empty():
        return pl.DataFrame(schema=_STEP_SCHEMA)
    sums = (step_rows.group_by("step").agg(
        pl.col("_start_us").min().alias("_first"),
        pl.len().cast(pl.Int64).alias("attempts"),
        pl.col("calls").fill_null(0).sum().cast(pl.Int64),
        pl.col("tokens").fill_null(0).sum().cast(pl.Int64),
        pl.col("usd").fill_null(0.0).sum().cast(pl.Float64),
        (pl.col("outcome") == "cached").sum().cast(pl.Int64).alias("cache_hits"),
        (pl.col("outcome") == "failed").sum().cast(pl.Int64).alias("failures"),
        (pl.col("tries").fill_null(1).cast(pl.Int64) - 1).clip(lower_bound=0).sum()
        .cast(pl.Int64).alias("retries"))
        .sort("_first", "step"))
    ran = step_rows.filter(pl.col("outcome").fill_null("") != "cached")
    pcts: dict[str, list[float | None]] = {"p50": [], "p95": [], "p99": []}
    for name in sums["step"]:
        durations = ran.filter(pl.col("step") == name)["duration_s"]
        for p in (50, 95, 99):
            pcts[f"p{p}"].append(percentile(durations, p))
    return (sums.with_columns(*(pl.Series(k, v, dtype=pl.Float64) for k, v in pcts.items()))
            .select(list(_STEP_SCHEMA)))


def compute_metrics(attempts: pl.DataFrame, items: pl.DataFrame, *,
                    now: datetime | None = None) -> Metrics:
    """Throughput, latency, calls, retries, failures, cost and ETA of a batch.

    Throughput counts item attempts that ended their row (so a row re-run after it
    failed counts once per ending) over the log's span, idle time between runs
    included: pass the log of one run (``attempts.filter(pl.col("run_id") == r)``)
    for that run's figures. Row counts, per-row costs, failures and recoveries come
    from ``items`` (the rows' current state). Missing columns count as null, and
    empty frames give zeros and Nones. See ``Metrics`` for every figure.

    Args:
        attempts: the attempt log (``batch.attempts()``): one row per attempt of a
            row (``step`` null) and per step of it.
        items: the rows with their status columns (``batch.items()``): ``_id``,
            ``_status`` and ``_retryable`` are read.
        now: the moment "the last minute" ends and the ETA starts (naive UTC, or
            aware); default: the end of the last attempt.

    Returns:
        A frozen ``Metrics``.

    Example:
        >>> from datetime import datetime
        >>> t0 = datetime(2024, 1, 1)
        >>> log = pl.DataFrame({"_id": [1, 2], "step": [None, None],
        ...     "started_at": [t0, t0], "duration_s": [30.0, 60.0],
        ...     "outcome": ["done", "done"], "usd": [0.25, 0.5]})
        >>> items = pl.DataFrame({"_id": [1, 2, 3], "_status": ["done", "done", "pending"]})
        >>> m = compute_metrics(log, items)
        >>> m.items_per_min, m.duration_p50_s, m.cost_per_done_usd, m.eta_s
        (2.0, 30.0, 0.375, 30.0)
    """
    log = _with(attempts, _ATTEMPT_COLUMNS)
    start = pl.col("started_at").cast(pl.Datetime("us")).dt.epoch("us")
    log = log.with_columns(
        start.alias("_start_us"),
        (start + (pl.col("duration_s").fill_null(0.0) * _US).round().cast(pl.Int64))
        .alias("_end_us"))
    rows = _with(items, _ITEM_COLUMNS)

    counts = {s: 0 for s in _STATUSES}
    for status, n in rows.group_by("_status").len().iter_rows():
        if status is not None:
            counts[status] = counts.get(status, 0) + n

    item_rows = log.filter(pl.col("step").is_null())
    step_rows = log.filter(pl.col("step").is_not_null())
    ended_rows = item_rows.filter(pl.col("outcome").is_in(["done", "failed"]))
    first_us: int | None = log["_start_us"].min() if log.height else None  # type: ignore[assignment]
    last_us: int | None = log["_end_us"].max() if log.height else None  # type: ignore[assignment]

    per_min = recent = None
    now_us: int | None = _as_us(now) if now is not None else last_us
    if first_us is not None and last_us is not None and last_us > first_us:
        per_min = ended_rows.height / ((last_us - first_us) / (60 * _US))
    if first_us is not None and now_us is not None:
        window = min(_WINDOW_US, now_us - first_us)
        if window > 0:
            in_window = ended_rows.filter((pl.col("_end_us") > now_us - _WINDOW_US)
                                          & (pl.col("_end_us") <= now_us)).height
            recent = in_window / (window / (60 * _US))

    timed = item_rows.filter(pl.col("outcome").is_in(["done", "failed", "retry"]))["duration_s"]
    retried_ids = pl.concat([
        item_rows.filter(pl.col("outcome") == "retry").select(pl.col("_id").cast(pl.Int64)),
        step_rows.filter(pl.col("tries").fill_null(1) > 1).select(pl.col("_id").cast(pl.Int64)),
    ])["_id"].unique()
    done_ids = rows.filter(pl.col("_status") == "done")["_id"].cast(pl.Int64)
    failed = rows.filter(pl.col("_status") == "failed")

    cost = float(item_rows["usd"].fill_null(0.0).sum())
    ended_items = counts["done"] + counts["failed"]
    left = counts["pending"] + counts["running"]
    if left == 0:
        eta: float | None = 0.0
    else:
        eta = 60.0 * left / recent if recent else None

    return Metrics(
        total=rows.height,
        counts=counts,
        attempts=item_rows.height,
        ended=ended_rows.height,
        first_started_at=_from_us(first_us),
        last_finished_at=_from_us(last_us),
        now=_from_us(now_us),
        items_per_min=per_min,
        items_per_min_recent=recent,
        duration_p50_s=percentile(timed, 50),
        duration_p95_s=percentile(timed, 95),
        duration_p99_s=percentile(timed, 99),
        calls=int(item_rows["calls"].fill_null(0).sum()),
        tokens=int(item_rows["tokens"].fill_null(0).sum()),
        retries=item_rows.filter(pl.col("outcome") == "retry").height,
        step_retries=int((step_rows["tries"].fill_null(1).cast(pl.Int64) - 1)
                         .clip(lower_bound=0).sum()),
        transient_recovered=len(set(done_ids.to_list()) & set(retried_ids.to_list())),
        permanent_failures=failed.filter(pl.col("_retryable").eq(False)).height,
        retries_exhausted=failed.filter(pl.col("_retryable").eq(True)).height,
        dead_letters=counts["failed"],
        cost_usd=cost,
        cost_per_done_usd=cost / counts["done"] if counts["done"] else None,
        cost_per_ended_usd=cost / ended_items if ended_items else None,
        eta_s=eta,
        cache_hits=step_rows.filter(pl.col("outcome") == "cached").height,
        steps=_step_frame(step_rows),
    )
