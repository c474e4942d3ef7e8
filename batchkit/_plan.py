"""Plan before you pay: project a batch's time, cost and workers from step profiles.

A ``StepProfile`` says what one item costs in one step: external calls, latency
per call (p50, optionally p95), USD, tokens, and the step's limits (rate limit,
concurrency cap, request batching) and measured rates (cache hits, retries,
failures). ``project`` turns profiles plus a volume and a worker count into a
``Projection``; ``batchkit._calibrate.calibrate`` makes the profiles from an
attempt log, ``batchkit._plan_advice`` recommends a configuration and
``batchkit._plan_report`` writes the words.

**The model.** ``W`` workers each run their items one at a time through the
steps (items sequential within a chunk). For step ``s``, per item *entering the
pipeline*:

* ``reach_s = (1 - failure_rate_1) * ... * (1 - failure_rate_{s-1})``: the share
  of items that get to the step (an item that fails in a step skips the rest).
* ``units_s = reach_s * calls_s * (1 - cache_hit_rate_s)``: calls that must be made.
* ``requests_s = units_s * (1 + retry_rate_s) / batch_size_s`` (batch size 1 when
  the step is not batched). With a chunk size ``C``, batches are grouped within a
  chunk, so a chunk makes ``ceil(C * units_s / batch_size_s)`` requests: per item
  ``ceil(C * units_s / batch_size_s) / C * (1 + retry_rate_s)``. Without one,
  batches are taken as full. A batch that fails transiently retries as a batch.
* ``work_s = requests_s * latency_s``: seconds of one worker's time (``work``
  per request instead of ``latency`` when the profile states it: calibration
  does, for steps a worker spends more or less time on than one call's latency,
  such as async steps running a chunk's rows together, or waits on a shared
  limit).

Throughput (items/s entering the pipeline) is the smallest of

* (a) workers: ``W / sum(work_s)``;
* (b) each rate-limited step: ``rate_s / requests_s`` (``rate_s`` in calls/s);
* (c) each step with a concurrency cap ``k_s``: ``k_s / work_s`` (Little's law:
  calls in flight = arrival rate x time in the step).

The bottleneck is the smallest, named with its number ("contact search: 50
calls/min ÷ 2 calls/item = 25 items/min"). Time for ``volume`` items is
``volume / throughput``. The min is the steady-state bound; near a knee where two
limits are close real runs are a little slower (queueing), and the last round of
chunks may leave workers idle for up to one chunk's work (the recommended chunk
size gives every worker at least 8 chunks). Checkpoints are left out: one commit
per chunk costs about 3 ms (../shared/FACTS.md), under 1% of any chunk the
recommendation picks. Pipeline fill (the first item's latency) is left out too.

**p95.** ``seconds_p95`` is a pessimistic time: every call at its step's p95
latency in (a) and (c) (rate limits do not depend on latency). Check a deadline
against it when a late finish is expensive.

**Cost.** ``cost`` is USD per item that reaches the step at its stated calls,
without cache or retries; the projection charges
``volume * sum(reach_s * cost_s * (1 - cache_hit_rate_s) * (1 + retry_rate_s))``
(cache hits are free, each retry pays again; batching does not change the price
per item), plus ``cost_per_request`` for every request made (a batched request
counts once, so batching does change that part). Tokens are counted like ``cost``.

Example:
    >>> proj = project([StepProfile("search", calls=2, latency=0.5, cost=0.01,
    ...                             rate_limit="60/min")], volume=600, workers=4)
    >>> proj.bottleneck.why
    'search: 60 calls/min ÷ 2 calls/item = 30 items/min'
    >>> proj.seconds, round(proj.cost, 2)
    (1200.0, 6.0)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from ._errors import ConfigError
from ._plan_report import (
    alert_thresholds,
    num,
    plain_text,
    plural,
    rate_unit,
    render_html,
    render_markdown,
    render_report,
    seconds_text,
    table_frame,
    usd,
)
from ._policy import RetryPolicy
from ._ratelimit import RateLimit

if TYPE_CHECKING:
    from ._plan_advice import Recommendation

__all__ = ["Binding", "Bottleneck", "Projection", "StepProfile", "parse_duration", "project"]

_EPS = 1e-9
_DURATION_UNITS = {
    "ms": 0.001, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([a-z]+)")
_DURATION_FORMS = "seconds > 0, a timedelta, or a string like '8h', '30min', '90s', '1h30min'"


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _whole(what: str, value: Any, *, minimum: int = 1, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be a whole number >= {minimum}, got {value!r}{hint}")
    return value


def parse_duration(value: float | str | timedelta, *, what: str = "deadline") -> float:
    """Read a duration: seconds, a ``timedelta`` or ``"8h"``, ``"30min"``, ``"90s"``, ``"1h30min"``.

    Units: ``ms``, ``s``/``sec``, ``m``/``min``, ``h``/``hr``, ``d``/``day`` (and
    plurals). ``what`` names the argument in the error message.

    Raises:
        ConfigError: not a duration > 0; the message names the value.

    Example:
        >>> parse_duration("8h"), parse_duration("1h30min"), parse_duration(90)
        (28800.0, 5400.0, 90.0)
    """
    seconds: float | None = None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        compact = re.sub(r"\s+", "", value.lower())
        parts = _DURATION_PART.findall(compact)
        if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", compact):
            seconds = float(compact)
        elif parts and "".join(n + u for n, u in parts) == compact:
            unknown = [u for _, u in parts if u not in _DURATION_UNITS]
            if unknown:
                raise ConfigError(f"unknown time unit {unknown[0]!r} in {what} {value!r}; "
                                  f"write it as {_DURATION_FORMS}")
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    elif _is_number(value):
        seconds = float(value)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"cannot read {what} {value!r}; write it as {_DURATION_FORMS}")
    return seconds


@dataclass(frozen=True)
class StepProfile:
    """What one item costs in one step, and the step's limits.

    Validated when made: a bad value raises ``ConfigError`` naming it.

    Args:
        name: the step's name.
        calls: external calls per item, unbatched (a local step: 1 invocation).
        latency: seconds per call, p50.
        cost: USD per item at ``calls`` (before cache hits and retries).
        rate_limit: the service's limit, ``"100/min"``, a number per second or a
            ``RateLimit``; None for none. Stored as a ``RateLimit``.
        concurrency: most calls in flight across all workers; None for no cap.
        batch_size: calls one batched request carries (None: not batched).
        cache_hit_rate: share of items served from cache, 0..1 (no call, no cost).
        retry_rate: extra tries per item that calls the step (0.1: one in ten retried).
        failure_rate: share of items reaching the step that fail in it, 0..1.
        latency_p95: seconds per call, p95 (None: same as ``latency``).
        tokens: tokens per item at ``calls``.
        cost_per_request: USD per request made, on top of ``cost`` (a batched
            request is priced once whatever it carries).
        work: seconds of a worker's time per request when it is not ``latency``
            (None: ``latency``); ``work_p95`` likewise at p95 (None: ``work``
            scaled like ``latency_p95``). Calls stay in flight for ``latency``
            (concurrency caps count that).

    Example:
        >>> StepProfile("search", calls=5, latency=0.6, cost=0.05, rate_limit="100/min").rate
        RateLimit(calls=100, per=60.0, burst=1)
    """

    name: str
    calls: float = 1.0
    latency: float = 0.0
    cost: float = 0.0
    rate_limit: RateLimit | str | float | None = None
    concurrency: int | None = None
    batch_size: int | None = None
    cache_hit_rate: float = 0.0
    retry_rate: float = 0.0
    failure_rate: float = 0.0
    latency_p95: float | None = None
    tokens: float = 0.0
    cost_per_request: float = 0.0
    work: float | None = None
    work_p95: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a step profile needs a non-empty name, got {self.name!r}")
        where = f"step profile {self.name!r}"
        for attr, high, meaning in (
            ("calls", None, "calls per item"), ("latency", None, "seconds per call"),
            ("cost", None, "USD per item"), ("tokens", None, "tokens per item"),
            ("cost_per_request", None, "USD per request"),
            ("retry_rate", None, "extra tries per item"),
            ("cache_hit_rate", 1.0, "a share of items, 0 to 1"),
            ("failure_rate", 1.0, "a share of items, 0 to 1"),
        ):
            value = getattr(self, attr)
            if not _is_number(value) or value < 0 or (high is not None and value > high):
                limit = f"between 0 and {high:g}" if high is not None else ">= 0"
                raise ConfigError(f"{where}: {attr} must be a number {limit} ({meaning}), "
                                  f"got {value!r}")
        if self.latency_p95 is not None and (
                not _is_number(self.latency_p95) or self.latency_p95 < self.latency):
            raise ConfigError(f"{where}: latency_p95 must be seconds >= latency "
                              f"({self.latency!r}) or None, got {self.latency_p95!r}")
        for attr in ("work", "work_p95"):
            value = getattr(self, attr)
            if value is not None and (not _is_number(value) or value < 0):
                raise ConfigError(f"{where}: {attr} must be seconds >= 0 or None, got {value!r}")
        if self.work is not None and self.work_p95 is not None and self.work_p95 < self.work:
            raise ConfigError(f"{where}: work_p95 must be >= work ({self.work!r}), "
                              f"got {self.work_p95!r}")
        for attr in ("concurrency", "batch_size"):
            if getattr(self, attr) is not None:
                _whole(f"{where}: {attr}", getattr(self, attr), hint=" or None")
        if self.rate_limit is not None:
            try:
                rate = RateLimit.parse(self.rate_limit)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
            object.__setattr__(self, "rate_limit", rate)

    @property
    def rate(self) -> RateLimit | None:
        """The rate limit as a ``RateLimit`` (None when the step has none)."""
        rate = self.rate_limit
        return rate if isinstance(rate, RateLimit) else None

    @property
    def p95(self) -> float:
        """Seconds per call at p95 (``latency`` when unknown)."""
        return self.latency if self.latency_p95 is None else self.latency_p95

    @property
    def worker_seconds(self) -> tuple[float, float]:
        """A worker's seconds per request at p50 and at p95 (``work``, else ``latency``)."""
        if self.work is None:
            return self.latency, self.p95
        if self.work_p95 is not None:
            return self.work, self.work_p95
        scale = self.p95 / self.latency if self.latency > 0 else 1.0
        return self.work, self.work * scale


@dataclass(frozen=True)
class Bottleneck:
    """The limit that sets the pace, with the number that makes it one.

    Attributes:
        step: the step whose limit binds, ``"workers"``, or ``"none"`` (nothing
            takes time).
        kind: ``"workers"``, ``"rate_limit"``, ``"concurrency"`` or ``"none"``.
        items_per_min: the throughput this limit allows.
        why: the arithmetic, e.g. ``"contacts: 50 calls/min ÷ 2 calls/item = 25 items/min"``.

    Example:
        >>> project([StepProfile("s", latency=2.0)], volume=10, workers=3).bottleneck.why
        '3 workers ÷ 2 s of work per item = 90 items/min'
    """

    step: str
    kind: str
    items_per_min: float
    why: str

    def __str__(self) -> str:
        return self.why


@dataclass(frozen=True)
class Binding:
    """Where the limits, not the workers, decide whether a deadline is met.

    Attributes:
        deadline: the deadline in seconds.
        volume: the most items any number of workers can finish by the deadline
            (the binding limit's throughput x deadline); above it the deadline is
            missed whatever the workers. None when no rate or concurrency limit
            exists (more workers always help).
        step: the limit's step (None without limits); why: its arithmetic.
        workers: the worker count from which that limit binds (more only wait).
        volume_at_workers: the most items the projection's own workers finish by
            the deadline.

    Example:
        >>> proj = project([StepProfile("s", calls=2, latency=1.0, rate_limit="60/min")],
        ...                volume=100, workers=1)
        >>> b = proj.binding_volume("1h")
        >>> b.volume, b.workers, b.volume_at_workers
        (1800, 1, 1800)
    """

    deadline: float
    volume: int | None
    step: str | None
    why: str
    workers: int | None
    volume_at_workers: int

    def __str__(self) -> str:
        if self.volume is None:
            return (f"no rate or concurrency limit binds: more workers always help; "
                    f"the plan's workers finish {self.volume_at_workers:,} items "
                    f"in {seconds_text(self.deadline)}")
        return (f"{self.step} binds from {self.workers} workers ({self.why}); at most "
                f"{self.volume:,} items fit in {seconds_text(self.deadline)}, the plan's "
                f"workers finish {self.volume_at_workers:,}")


@dataclass(frozen=True)
class _Fig:
    """One step's figures per item entering the pipeline."""

    profile: StepProfile
    reach: float
    units: float      # calls that must be made (cache hits removed), before batching
    requests: float   # requests made, retries and batching included
    work: float       # worker seconds at p50 latency
    work_p95: float
    busy: float       # seconds in flight (requests x latency): what concurrency caps count
    busy_p95: float
    cost: float
    tokens: float


def _figures(steps: Sequence[StepProfile], chunk_size: int | None) -> list[_Fig]:
    out, reach = [], 1.0
    for p in steps:
        units = reach * p.calls * (1.0 - p.cache_hit_rate)
        requests = units
        if p.batch_size:
            requests = (math.ceil(chunk_size * units / p.batch_size - _EPS) / chunk_size
                        if chunk_size else units / p.batch_size)
        requests *= 1.0 + p.retry_rate
        paid = reach * (1.0 - p.cache_hit_rate) * (1.0 + p.retry_rate)
        work, work_p95 = p.worker_seconds
        out.append(_Fig(p, reach, units, requests, requests * work, requests * work_p95,
                        requests * p.latency, requests * p.p95,
                        p.cost * paid + requests * p.cost_per_request, p.tokens * paid))
        reach *= 1.0 - p.failure_rate
    return out


def _bounds(figs: Sequence[_Fig], workers: int, *, p95: bool = False) -> list[Bottleneck]:
    """Every limit's throughput (items/min), the workers first."""
    work = sum(f.work_p95 if p95 else f.work for f in figs)
    out = [Bottleneck("workers", "workers", 60.0 * workers / work if work > 0 else math.inf,
                      f"{plural(workers, 'worker')} ÷ {num(work)} s of work per item"
                      f" = {num(60.0 * workers / work) if work > 0 else 'no limit'} items/min")]
    for f in figs:
        p, rate = f.profile, f.profile.rate
        if rate is not None and f.requests > 0:
            per_min = 60.0 * rate.per_second / f.requests
            out.append(Bottleneck(p.name, "rate_limit", per_min,
                                  f"{p.name}: {num(rate.calls)} calls/{rate_unit(rate)} ÷ "
                                  f"{num(f.requests)} calls/item = {num(per_min)} items/min"))
        seconds = f.busy_p95 if p95 else f.busy
        if p.concurrency is not None and seconds > 0:
            per_min = 60.0 * p.concurrency / seconds
            latency = p.p95 if p95 else p.latency
            out.append(Bottleneck(p.name, "concurrency", per_min,
                                  f"{p.name}: concurrency {p.concurrency} ÷ ({num(f.requests)} "
                                  f"calls/item × {num(latency)} s/call) = {num(per_min)} "
                                  "items/min"))
    return out


def _slowest(bounds: Sequence[Bottleneck]) -> Bottleneck:
    # on a tie a limit is named rather than the workers: more workers would not help
    best = min(bounds, key=lambda b: (round(b.items_per_min, 9), b.kind == "workers"),
               default=None)
    if best is None or math.isinf(best.items_per_min):
        return Bottleneck("none", "none", math.inf, "no step takes time or calls a limit")
    return best


class Projection:
    """Projected time and cost of a batch; make one with ``project``.

    Attributes:
        steps: the step profiles, in pipeline order.
        volume, workers, chunk_size: what is projected (chunk_size None: full batches).
        deadline: seconds or None; budget: USD or None.
        seconds: projected wall time at p50 latencies; seconds_p95: every call at p95.
        cost: projected USD; cost_per_item: cost / volume.
        items_per_min: the pipeline's throughput; bottleneck: the limit that sets it.
        calls: projected requests in all; tokens: tokens in all.
        expected_done / expected_failed: items projected to end done / failed.
        meets_deadline / meets_budget: True/False, None when not given.

    Example:
        >>> proj = project([StepProfile("a", calls=2, latency=0.5, cost=0.01)],
        ...                volume=120, workers=2, deadline="2min", budget=1)
        >>> proj.seconds, proj.meets_deadline, proj.meets_budget
        (60.0, True, False)
    """

    def __init__(self, steps: Sequence[StepProfile], *, volume: int, workers: int,
                 deadline: float | None = None, budget: float | None = None,
                 chunk_size: int | None = None) -> None:
        self.steps = tuple(steps)
        self.volume, self.workers, self.chunk_size = volume, workers, chunk_size
        self.deadline, self.budget = deadline, budget
        self._figs = _figures(self.steps, chunk_size)
        self._bounds = _bounds(self._figs, workers)
        self.bottleneck = _slowest(self._bounds)
        self.items_per_min = self.bottleneck.items_per_min
        self.seconds = 60.0 * volume / self.items_per_min
        self.seconds_p95 = 60.0 * volume / _slowest(_bounds(self._figs, workers, p95=True)
                                                    ).items_per_min
        self.cost = volume * sum(f.cost for f in self._figs)
        self.cost_per_item = self.cost / volume
        self.calls = volume * sum(f.requests for f in self._figs)
        self.tokens = volume * sum(f.tokens for f in self._figs)
        self.expected_done = volume * math.prod(1.0 - p.failure_rate for p in self.steps)
        self.expected_failed = volume - self.expected_done
        self.meets_deadline = None if deadline is None else self.seconds <= deadline + _EPS
        self.meets_budget = None if budget is None else self.cost <= budget + _EPS
        # set by batch.plan: what the profiles were measured from, and the run's settings
        self.sample: Any = None  # a batchkit._batchplan.Sample
        self.name: str | None = None
        self.retry: RetryPolicy | None = None
        self.on_error: str | None = None

    def _carry(self, other: Projection) -> Projection:
        """``other`` with this projection's sample and run settings (for what-ifs)."""
        other.sample, other.name = self.sample, self.name
        other.retry, other.on_error = self.retry, self.on_error
        return other

    @property
    def work_per_item(self) -> float:
        """Seconds of one worker's time per item (p50), the sum over steps."""
        return sum(f.work for f in self._figs)

    @property
    def table(self) -> pl.DataFrame:
        """One row per step: calls, effective calls, time per item, limits, cost, bottleneck.

        Columns: ``step``, ``calls`` (per item, as profiled), ``effective_calls``
        (requests per item entering the pipeline), ``reach``, ``latency_s``,
        ``latency_p95_s``, ``seconds_per_item`` (worker time), ``share_of_time``,
        ``rate_limit``, ``rate_items_per_min`` (what the rate limit allows),
        ``rate_limited_seconds`` (time the rate limit alone needs for the volume),
        ``concurrency``, ``concurrency_items_per_min``, ``calls_total``,
        ``cost_per_item``, ``cost_total``, ``tokens_total``, ``bottleneck``.
        """
        return table_frame(self)

    def alert_thresholds(self) -> dict[str, float | None]:
        """Alert thresholds fitted to this plan, as ``Thresholds`` keyword arguments.

        Failure rate: the scenario's 5% / 15%, or the plan's own failure share
        plus 5 / 15 points; throughput below a half / a quarter of the plan;
        cost per item above 125% / 200% of the plan; ETA past 80% / 100% of the
        deadline. None: not watched (no cost, or no time taken).

        Example:
            >>> project([StepProfile("a", latency=1.0, cost=0.1)], volume=60,
            ...         workers=1).alert_thresholds()["throughput_warn"]
            30.0
        """
        return alert_thresholds(self)

    def at(self, *, volume: int | None = None, workers: int | None = None) -> Projection:
        """The same plan at another volume or worker count (a what-if).

        Example:
            >>> proj = project([StepProfile("a", latency=1.0)], volume=60, workers=1)
            >>> proj.at(workers=2).seconds
            30.0
        """
        return self._carry(Projection(
            self.steps,
            volume=self.volume if volume is None else _whole("volume", volume),
            workers=self.workers if workers is None else _whole("workers", workers),
            deadline=self.deadline, budget=self.budget, chunk_size=self.chunk_size))

    @property
    def saturation_workers(self) -> int | None:
        """Workers from which a rate or concurrency limit sets the pace (None: no limit).

        More workers than this only wait on the limit.

        Example:
            >>> project([StepProfile("s", calls=2, latency=3.0, rate_limit="60/min")],
            ...         volume=10, workers=1).saturation_workers
            3
        """
        limit = self._limit()
        if limit.kind == "none":
            return None
        return max(1, math.ceil(limit.items_per_min / 60.0 * self.work_per_item - _EPS))

    def _limit(self) -> Bottleneck:
        """The slowest limit that workers cannot buy (rate limits, concurrency caps)."""
        return _slowest([b for b in self._bounds if b.kind != "workers"])

    def binding_volume(self, deadline: float | str | timedelta | None = None) -> Binding:
        """Where the rate or concurrency limits, not the workers, decide the deadline.

        Up to ``Binding.volume`` items, enough workers meet the deadline; beyond
        it the binding limit sets the time whatever the workers, and the fix is a
        higher tier (``recommend`` says which). ``Binding.volume_at_workers`` is
        where the plan's own workers miss it.

        Args:
            deadline: defaults to the projection's deadline.

        Raises:
            ConfigError: no deadline here or in the projection.

        Example:
            >>> proj = project([StepProfile("extract", latency=24.0),
            ...                 StepProfile("contacts", calls=2, latency=3.0, rate_limit="50/min")],
            ...                volume=500, workers=5)
            >>> b = proj.binding_volume("8h")
            >>> b.volume, b.step, b.workers, b.volume_at_workers
            (12000, 'contacts', 13, 4800)
        """
        if deadline is None and self.deadline is None:
            raise ConfigError("binding_volume needs a deadline: pass one or give the "
                              "projection a deadline (project(..., deadline='8h'))")
        d = parse_duration(deadline) if deadline is not None else self.deadline
        assert d is not None
        at_workers = math.floor(self.items_per_min * d / 60.0 + _EPS)
        limit = self._limit()
        if limit.kind == "none":
            return Binding(d, None, None, "no rate limit or concurrency cap", None, at_workers)
        return Binding(d, math.floor(limit.items_per_min * d / 60.0 + _EPS), limit.step,
                       limit.why, self.saturation_workers, at_workers)

    def scaling(self, volumes: Iterable[int], *, workers: int | str | None = None
                ) -> pl.DataFrame:
        """Time, cost and bottleneck at other volumes.

        Args:
            volumes: the volumes to project.
            workers: None keeps the projection's workers; a number fixes them;
                ``"auto"`` takes the recommended count at each volume.

        Returns:
            A frame with ``volume``, ``workers``, ``seconds``, ``seconds_p95``,
            ``cost``, ``cost_per_item``, ``items_per_min``, ``bottleneck`` (the
            step, or ``workers``), ``meets_deadline`` and ``meets_budget`` (null
            without a deadline / budget).

        Example:
            >>> proj = project([StepProfile("a", latency=1.0, cost=0.1)], volume=60, workers=1)
            >>> proj.scaling([60, 120])["seconds"].to_list()
            [60.0, 120.0]
        """
        if workers is not None and workers != "auto":
            _whole("workers", workers, hint=", None or 'auto'")
        rows = []
        for volume in volumes:
            if workers == "auto":
                proj = self.at(volume=volume).recommend().projection
            else:
                proj = self.at(volume=volume, workers=workers)  # type: ignore[arg-type]
            rows.append({"volume": proj.volume, "workers": proj.workers,
                         "seconds": proj.seconds, "seconds_p95": proj.seconds_p95,
                         "cost": proj.cost, "cost_per_item": proj.cost_per_item,
                         "items_per_min": proj.items_per_min,
                         "bottleneck": proj.bottleneck.step,
                         "meets_deadline": proj.meets_deadline,
                         "meets_budget": proj.meets_budget})
        if not rows:
            raise ConfigError("scaling needs at least one volume, got none")
        return pl.DataFrame(rows, schema_overrides={"meets_deadline": pl.Boolean,
                                                    "meets_budget": pl.Boolean})

    def recommend(self, *, max_workers: int = 64, headroom: float = 1.0) -> Recommendation:
        """Workers, chunk size and per-step concurrency for this volume, with the reasons.

        Workers: the smallest count whose projected time meets ``deadline x
        headroom``, never more than the count from which a rate or concurrency
        limit binds (more would only wait on it); without a deadline, that count.
        The chunk size trades amortised checkpoints against failure isolation,
        an even finish and full request batches (see ``reasons``). When the
        deadline or budget cannot be met, ``actions`` say by how much and what
        would meet them.

        Args:
            max_workers: the most workers to recommend.
            headroom: share of the deadline to aim at (0.8 keeps the run clear of
                the "ETA past 80% of the deadline" alert).

        Example:
            >>> proj = project([StepProfile("a", latency=10.0)], volume=360, workers=1,
            ...                deadline="10min")
            >>> rec = proj.recommend()
            >>> rec.workers, rec.meets_deadline
            (6, True)
        """
        from ._plan_advice import recommend

        _whole("max_workers", max_workers)
        if not _is_number(headroom) or not 0 < headroom <= 1:
            raise ConfigError(f"headroom must be a share of the deadline in (0, 1], "
                              f"got {headroom!r}")
        return recommend(self, max_workers=max_workers, headroom=headroom)

    def report(self, *, name: str | None = None, retry: RetryPolicy | int | None = None,
               on_error: str | None = None, volumes: Iterable[int] | None = None) -> str:
        """The architecture write-up in Markdown, filled with this plan's figures.

        Sections: workflow analysis, chunking and parallelism, state and resume,
        reliability, observability, projections and scaling. A plan made by
        ``batch.plan`` also says what it was measured from (the sample run).

        Args:
            name: the batch name (names the store tables; default: the plan's batch,
                else ``"batch"``).
            retry: the retry policy the run will use (default: the plan's, else
                ``RetryPolicy()``; a number is a retry count).
            on_error: ``"skip"`` (dead-letter and go on) or ``"halt"`` (default: the
                plan's failure tolerance, else ``"skip"``).
            volumes: volumes of the scaling table (default 1x, 2x, 5x, 10x the volume).

        Example:
            >>> text = project([StepProfile("a", latency=1.0)], volume=10, workers=2).report()
            >>> text.splitlines()[0]
            '# Batch plan: batch'
        """
        if isinstance(retry, int) and not isinstance(retry, bool):
            retry = RetryPolicy(retries=retry)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigError(f"retry must be a RetryPolicy, a retry count or None, got {retry!r}")
        on_error = on_error if on_error is not None else (self.on_error or "skip")
        if on_error not in ("skip", "halt"):
            raise ConfigError(f"on_error must be 'skip' or 'halt', got {on_error!r}")
        vols = ([self.volume * k for k in (1, 2, 5, 10)] if volumes is None
                else [_whole("volume", v) for v in volumes])
        return render_report(self, name=name or self.name or "batch",
                             retry=retry or self.retry or RetryPolicy(), on_error=on_error,
                             volumes=vols)

    def __str__(self) -> str:
        return plain_text(self)

    def __repr__(self) -> str:
        return (f"Projection(volume={self.volume}, workers={self.workers}, "
                f"seconds={self.seconds:.1f}, cost={usd(self.cost)}, "
                f"bottleneck={self.bottleneck.step!r})")

    def _repr_markdown_(self) -> str:
        return render_markdown(self)

    def _repr_html_(self) -> str:
        return render_html(self)


def _check_steps(steps: Any) -> tuple[StepProfile, ...]:
    if isinstance(steps, StepProfile):
        steps = [steps]
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable):
        raise ConfigError(f"steps must be a list of StepProfile, got {steps!r}")
    profiles = tuple(steps)
    if not profiles:
        raise ConfigError("steps must hold at least one StepProfile, got an empty list")
    seen: set[str] = set()
    for p in profiles:
        if not isinstance(p, StepProfile):
            raise ConfigError(f"steps must be StepProfile values, got {p!r}")
        if p.name in seen:
            raise ConfigError(f"two steps are named {p.name!r}; step names must be unique")
        seen.add(p.name)
    return profiles


def project(steps: Sequence[StepProfile], *, volume: int, workers: int | None = None,
            deadline: float | str | timedelta | None = None, budget: float | None = None,
            chunk_size: int | None = None) -> Projection:
    """Project time, cost and the bottleneck of ``volume`` items through ``steps``.

    Nothing runs: this is arithmetic on the profiles (the module docstring has
    the model). Every argument is checked before any computation.

    Args:
        steps: the pipeline's step profiles, in order (``calibrate`` makes them
            from an attempt log).
        volume: items to run (> 0).
        workers: workers, each running its items one at a time through the steps;
            None takes ``recommend()``'s count.
        deadline: seconds, a ``timedelta`` or ``"8h"`` / ``"30min"`` / ``"90s"``.
        budget: USD.
        chunk_size: items per chunk (request batches are grouped within a
            chunk); None projects full batches.

    Raises:
        ConfigError: a bad argument, named in the message.

    Example:
        >>> proj = project([StepProfile("search", calls=5, latency=0.6, cost=0.05,
        ...                             rate_limit="100/min")], volume=500, workers=5)
        >>> proj.bottleneck.kind, proj.seconds / 60, round(proj.cost, 2)
        ('rate_limit', 25.0, 25.0)
    """
    profiles = _check_steps(steps)
    _whole("volume", volume, hint=" (items to project)")
    if workers is not None:
        _whole("workers", workers, hint=" or None (recommend one)")
    if chunk_size is not None:
        _whole("chunk_size", chunk_size, hint=" or None")
    d = None if deadline is None else parse_duration(deadline)
    if budget is not None and (not _is_number(budget) or budget <= 0):
        raise ConfigError(f"budget must be USD > 0 or None, got {budget!r}")
    kw: dict[str, Any] = {"volume": volume, "deadline": d,
                          "budget": None if budget is None else float(budget),
                          "chunk_size": chunk_size}
    if workers is None:
        workers = Projection(profiles, workers=1, **kw).recommend().workers
    return Projection(profiles, workers=workers, **kw)


