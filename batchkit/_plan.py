"""Plan before you pay: project a batch's time, cost and workers from step profiles.

A ``StepProfile`` says what one item costs in one step: external calls, latency
per call (p50 and p95), USD, tokens, the step's limits (rate limit,
concurrency cap, request batching, calls one worker keeps in flight) and
measured rates (cache hits, retries, failures). ``project`` turns profiles plus
a volume and a worker count into a ``Projection``; ``batchkit._calibrate`` makes
the profiles from an attempt log, ``batchkit._plan_advice`` recommends a
configuration and ``batchkit._plan_report`` writes the words.

**How batchkit runs a pipeline** (``_pipeline.py``): each of ``W`` workers takes
a chunk of ``C`` items and runs it *step by step*: the first step over every
item of the chunk, then the second, and so on; a sync step runs the chunk's
items one at a time, an async step ``per_worker`` at once, a batched step in
requests of ``batch_size``. Workers start together and a shared rate limit
keeps them together, so they go through the steps nearly in lockstep: every
worker searches, then every worker looks up contacts. A rate limit is used
only while its step runs, and **the steps' times add up**.

**The model.** For step ``s``, per item *entering the pipeline*:

* ``reach_s = (1 - failure_rate_1) * ... * (1 - failure_rate_{s-1})``: the share
  of items that get to the step (an item that fails in a step skips the rest).
* ``units_s = reach_s * calls_s * (1 - cache_hit_rate_s)``: calls that must be made.
* ``requests_s = units_s * (1 + retry_rate_s) / batch_size_s`` (batch size 1 when
  not batched). With a chunk size ``C`` a chunk makes ``ceil(C * units_s /
  batch_size_s)`` requests; without one, batches are taken as full.
* time per item, the largest of
  (a) ``requests_s x latency_s / (W x per_worker_s)``: the calls' time over the
  concurrency available (workers x calls each keeps in flight);
  (b) ``requests_s / rate_s``: the rate limit;
  (c) ``requests_s x latency_s / concurrency_s``: a cap on calls in flight
  across all workers (Little's law).

The projected time is ``volume x sum over steps`` of that, at p50 latencies
(robust where a mean is not: in a 20-item sample a Retry-After that pauses a
step shows as latency in every row waiting on it; ``seconds_p95`` takes p95). The
bottleneck is the step with the largest time, named with the number that makes
it one ("contacts: 50 calls/min ÷ 2 calls/item = 25 items/min").

**With a chunk size** the projection follows the chunks: ``ceil(volume / C)``
chunks go out to the workers in rounds of ``W``; in each round every step's
phase takes the largest of (a) for one worker's chunk, (b) and (c) for the
round's items, and the last round may hold fewer chunks (workers idle: the even
finish ``recommend`` sizes chunks for). An async step runs a chunk's calls
``per_worker`` at a time, so its phase is ``n / k - 1`` waves at the p50 latency
and one last wave as slow as the slowest of ``k`` calls (the ``k/(k+1)`` quantile,
between p50 and p95), or just the slowest of ``n`` calls when ``n <= k``.
Left out: the last calls of a rate-limited phase (workers that finished their
share start the next step meanwhile: measured on the demo, the phases overlap
by about that much) and checkpoint commits (~3 ms a chunk, ../shared/FACTS.md).

**p95.** ``seconds_p95`` is a pessimistic time: every call at its step's p95
latency in (a) and (c) (rate limits do not depend on latency).

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
from ._plan_model import _EPS, Binding, Bottleneck, _figures, _Term, _terms, _why
from ._plan_report import (
    alert_thresholds,
    plain_text,
    render_html,
    render_markdown,
    render_report,
    table_frame,
    usd,
)
from ._policy import RetryPolicy
from ._ratelimit import RateLimit

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ._plan_advice import Recommendation

__all__ = ["Binding", "Bottleneck", "Projection", "StepProfile", "parse_duration", "project"]

_DURATION_UNITS = {
    "ms": 0.001, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([a-z]+)")
_DURATION_FORMS = "seconds > 0, a timedelta, or a string like '8h', '30min', '90s', '1h30min'"
_KEEP: Any = object()  # at(): keep the projection's chunk size


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
        per_worker: calls one worker keeps in flight in this step: 1 for a sync
            step (items one at a time), an async step's ``concurrency``.
        batch_size: calls one batched request carries (None: not batched).
        cache_hit_rate: share of items served from cache, 0..1 (no call, no cost).
        retry_rate: extra tries per item that calls the step (0.1: one in ten retried).
        failure_rate: share of items reaching the step that fail in it, 0..1.
        latency_p95: seconds per call, p95 (None: same as ``latency``).
        tokens: tokens per item at ``calls``.
        cost_per_request: USD per request made, on top of ``cost`` (a batched
            request is priced once whatever it carries).

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
    per_worker: int = 1
    batch_size: int | None = None
    cache_hit_rate: float = 0.0
    retry_rate: float = 0.0
    failure_rate: float = 0.0
    latency_p95: float | None = None
    tokens: float = 0.0
    cost_per_request: float = 0.0

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
        for attr in ("concurrency", "batch_size"):
            if getattr(self, attr) is not None:
                _whole(f"{where}: {attr}", getattr(self, attr), hint=" or None")
        _whole(f"{where}: per_worker", self.per_worker,
               hint=" (calls one worker keeps in flight; 1 for a sync step)")
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



class Projection:
    """Projected time and cost of a batch; make one with ``project``.

    Attributes:
        steps: the step profiles, in pipeline order.
        volume, workers, chunk_size: what is projected (chunk_size None: the
            steady state, full request batches).
        deadline: seconds or None; budget: USD or None.
        seconds: projected wall time at p50 latencies; seconds_p95: every call at p95.
        cost: projected USD; cost_per_item: cost / volume.
        items_per_min: the pipeline's throughput; bottleneck: the step that takes
            the most time and what binds it.
        calls: projected requests in all; tokens: tokens in all.
        expected_done / expected_failed: items projected to end done / failed.
        meets_deadline / meets_budget: True/False, None when not given.
        sample: what ``batch.plan`` measured the profiles from (None for ``project``).

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
        self._terms = _terms(self._figs, volume=volume, workers=workers, chunk_size=chunk_size)
        self.seconds = sum(t.seconds for t in self._terms)
        self.seconds_p95 = sum(t.seconds for t in _terms(
            self._figs, volume=volume, workers=workers, chunk_size=chunk_size, p95=True))
        self.items_per_min = 60.0 * volume / self.seconds if self.seconds > 0 else math.inf
        self.bottleneck = self._bottleneck()
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

    def _bottleneck(self) -> Bottleneck:
        top = max(self._terms, key=lambda t: t.seconds)
        if top.seconds <= 0 or top.kind == "none":
            return Bottleneck("none", "none", math.inf, "no step takes time", 0.0)
        per_item = top.parts[top.kind]
        return Bottleneck(top.name, top.kind, 60.0 / per_item if per_item > 0 else math.inf,
                          _why(top, self.workers, chunk=self._chunking),
                          top.seconds / self.seconds)

    @property
    def _chunking(self) -> tuple[int, int] | None:
        return None if self.chunk_size is None else (self.chunk_size, self.volume)

    def _carry(self, other: Projection) -> Projection:
        """``other`` with this projection's sample and run settings (for what-ifs)."""
        other.sample, other.name = self.sample, self.name
        other.retry, other.on_error = self.retry, self.on_error
        return other

    @property
    def work_per_item(self) -> float:
        """Seconds one worker needs per item with nothing else in the way: the calls' time
        over the calls it keeps in flight, summed over the steps (steady state)."""
        return sum(f.busy / f.profile.per_worker for f in self._figs)

    @property
    def table(self) -> pl.DataFrame:
        """One row per step: calls, effective calls, time per item, limits, cost, bottleneck.

        Columns: ``step``, ``calls`` (per item, as profiled), ``effective_calls``
        (requests per item entering the pipeline), ``reach``, ``latency_s``,
        ``latency_p95_s``, ``per_worker``, ``seconds_per_item``
        (the step's projected time ÷ volume), ``share_of_time``, ``limited_by``
        (``workers``, ``rate_limit``, ``concurrency``), ``rate_limit``,
        ``rate_items_per_min`` (what the rate limit allows while the step runs),
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

    def at(self, *, volume: int | None = None, workers: int | None = None,
           chunk_size: int | None = _KEEP, deadline: float | str | timedelta | None = _KEEP,
           budget: float | None = _KEEP) -> Projection:
        """The same plan at another volume, worker count, chunk size, deadline or budget.

        A what-if: arguments left out keep the plan's values; ``chunk_size``,
        ``deadline`` and ``budget`` may be set to None (steady state, none).

        Example:
            >>> proj = project([StepProfile("a", latency=1.0)], volume=60, workers=1)
            >>> proj.at(workers=2).seconds, proj.at(volume=30, chunk_size=10).seconds
            (30.0, 30.0)
            >>> proj.at(deadline="30s").meets_deadline
            False
        """
        chunk = self.chunk_size if chunk_size is _KEEP else chunk_size
        if chunk is not None:
            _whole("chunk_size", chunk, hint=" or None")
        if deadline is _KEEP:
            deadline = self.deadline
        elif deadline is not None:
            deadline = parse_duration(deadline)
        if budget is _KEEP:
            budget = self.budget
        elif budget is not None and (not _is_number(budget) or budget <= 0):
            raise ConfigError(f"budget must be USD > 0 or None, got {budget!r}")
        return self._carry(Projection(
            self.steps,
            volume=self.volume if volume is None else _whole("volume", volume),
            workers=self.workers if workers is None else _whole("workers", workers),
            deadline=deadline, budget=budget, chunk_size=chunk))

    def _limits(self) -> list[tuple[_Term, str, float]]:
        """Each rate-limited or capped step: (term, kind, seconds per item of the limit)."""
        out = []
        for t in _terms(self._figs, volume=self.volume, workers=self.workers, chunk_size=None):
            limits = {k: v for k, v in t.parts.items() if k != "workers" and v > 0}
            if limits:
                kind, seconds = max(limits.items(), key=lambda kv: kv[1])
                out.append((t, kind, seconds))
        return out

    @property
    def saturation_workers(self) -> int | None:
        """Workers from which every rate-limited or capped step runs at its limit (None: none).

        More workers than this only speed up the steps without a limit.

        Example:
            >>> project([StepProfile("s", calls=2, latency=3.0, rate_limit="60/min")],
            ...         volume=10, workers=1).saturation_workers
            3
        """
        limits = self._limits()
        if not limits:
            return None
        return max(max(1, math.ceil(t.fig.busy / (t.fig.profile.per_worker * s) - _EPS))
                   for t, _, s in limits)

    def binding_volume(self, deadline: float | str | timedelta | None = None) -> Binding:
        """Where the rate or concurrency limits, not the workers, decide the deadline.

        However many workers, every limited step takes at least its limit's time
        per item, one step after another; so at most ``Binding.volume`` items fit
        in the deadline, and beyond it the fix is a higher tier (``recommend``
        says which). ``Binding.volume_at_workers`` is where the plan's own workers
        miss it.

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
            (12000, 'contacts', 3, 4000)
        """
        if deadline is None and self.deadline is None:
            raise ConfigError("binding_volume needs a deadline: pass one or give the "
                              "projection a deadline (project(..., deadline='8h'))")
        d = parse_duration(deadline) if deadline is not None else self.deadline
        assert d is not None
        at_workers = math.floor(self.items_per_min * d / 60.0 + _EPS) \
            if math.isfinite(self.items_per_min) else 0
        limits = self._limits()
        if not limits:
            return Binding(d, None, None, "no rate limit or concurrency cap", None, at_workers)
        floor = sum(s for _, _, s in limits)
        top, kind, _ = max(limits, key=lambda x: x[2])
        return Binding(d, math.floor(d / floor + _EPS), top.name, _why(top, self.workers, kind),
                       self.saturation_workers, at_workers)

    def scaling(self, volumes: Iterable[int], *, workers: int | str | None = None
                ) -> pl.DataFrame:
        """Time, cost and bottleneck at other volumes.

        Args:
            volumes: the volumes to project.
            workers: None keeps the projection's workers; a number fixes them;
                ``"auto"`` takes the recommended count (and chunk size) at each volume.

        Returns:
            A frame with ``volume``, ``workers``, ``seconds``, ``seconds_p95``,
            ``cost``, ``cost_per_item``, ``items_per_min``, ``bottleneck`` (the
            step), ``limited_by`` (what binds it), ``meets_deadline`` and
            ``meets_budget`` (null without a deadline / budget).

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
                         "limited_by": proj.bottleneck.kind,
                         "meets_deadline": proj.meets_deadline,
                         "meets_budget": proj.meets_budget})
        if not rows:
            raise ConfigError("scaling needs at least one volume, got none")
        return pl.DataFrame(rows, schema_overrides={"meets_deadline": pl.Boolean,
                                                    "meets_budget": pl.Boolean})

    def recommend(self, *, max_workers: int = 64, headroom: float = 1.0) -> Recommendation:
        """Workers, chunk size and per-step concurrency for this volume, with the reasons.

        Workers: the smallest count whose projected time meets ``deadline x
        headroom``; without a deadline, the count from which every rate or
        concurrency limit binds while its step runs; when no count meets it,
        the count past which more workers save under 5%. The chunk size trades
        amortised checkpoints against failure isolation, an even finish and full
        request batches (see ``reasons``). When the deadline or budget cannot be
        met, ``actions`` say by how much and what would meet them.

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

    def plot(self, *, volumes: Iterable[int] | None = None,
             workers: Iterable[int] | None = None) -> Figure:
        """What-if charts: time and cost against volume and against workers (matplotlib).

        Deadline and budget are drawn as lines; see ``batchkit._charts.plan``.

        Example:
            >>> fig = project([StepProfile("a", latency=1.0, cost=0.1)], volume=60,
            ...               workers=2, budget=5).plot()
            >>> len(fig.axes)
            4
        """
        from ._charts.plan import plot_cost_time

        return plot_cost_time(self, volumes=volumes, workers=workers)

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
        workers: workers, each running chunks step by step; None takes
            ``recommend()``'s count.
        deadline: seconds, a ``timedelta`` or ``"8h"`` / ``"30min"`` / ``"90s"``.
        budget: USD.
        chunk_size: items per chunk (the projection follows the chunk rounds and
            groups request batches within a chunk); None projects the steady state.

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
