"""The projection's arithmetic: each step's figures and time (``batchkit._plan`` has the model).

Pure functions on ``StepProfile`` values, kept apart from ``Projection`` so the
numbers can be read in one place: ``_figures`` (calls, requests, cost per item
entering the pipeline), ``_terms`` (each step's seconds for a volume, steady or
in chunk rounds, and what binds it) and ``_why`` (the arithmetic in words); and
the values that name the result, ``Bottleneck`` and ``Binding`` (re-exported
by ``batchkit._plan``).

Example:
    >>> from batchkit._plan import StepProfile
    >>> figs = _figures([StepProfile("s", calls=2, latency=0.5, rate_limit="60/min")], None)
    >>> t = _terms(figs, volume=10, workers=4, chunk_size=None)[0]
    >>> t.seconds, t.kind, _why(t, 4)
    (20.0, 'rate_limit', 's: 60 calls/min ÷ 2 calls/item = 30 items/min')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._plan_report import binding_text, num, plural, rate_unit, secs

if TYPE_CHECKING:
    from ._plan import StepProfile

__all__ = ["Binding", "Bottleneck"]

_EPS = 1e-9


@dataclass(frozen=True)
class Bottleneck:
    """The step that takes the most time, what binds it, and the number that makes it so.

    Attributes:
        step: the step's name, or ``"none"`` (nothing takes time).
        kind: what sets the step's pace: ``"workers"`` (the calls' time over the
            concurrency available), ``"rate_limit"``, ``"concurrency"`` (a cap),
            or ``"none"``.
        items_per_min: the step's pace while it runs.
        why: the arithmetic, e.g. ``"contacts: 50 calls/min ÷ 2 calls/item = 25 items/min"``.
        share: the step's share of the projected time.

    Example:
        >>> from batchkit._plan import StepProfile, project
        >>> project([StepProfile("s", latency=2.0)], volume=10, workers=3).bottleneck.why
        's: 3 workers ÷ 2 s of calls per item = 90 items/min'
    """

    step: str
    kind: str
    items_per_min: float
    why: str
    share: float = 1.0

    def __str__(self) -> str:
        return self.why


@dataclass(frozen=True)
class Binding:
    """Where the limits, not the workers, decide whether a deadline is met.

    Attributes:
        deadline: the deadline in seconds.
        volume: the most items any number of workers can finish by the deadline:
            with enough workers each rate-limited or capped step still takes its
            limit's time, one after another; above it the deadline is missed
            whatever the workers. None when no step has a rate or concurrency limit.
        step: the limit that takes the most of that time (None without limits);
            why: its arithmetic.
        workers: the worker count from which every limited step runs at its
            limit (more workers only speed up the unlimited steps).
        volume_at_workers: the most items the projection's own workers finish by
            the deadline.

    Example:
        >>> from batchkit._plan import StepProfile, project
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
        return binding_text(self)


@dataclass(frozen=True)
class _Fig:
    """One step's figures per item entering the pipeline (chunk-size dependent)."""

    profile: StepProfile
    reach: float
    units: float      # calls that must be made (cache hits removed), before batching
    requests: float   # requests made, retries and batching included
    busy: float       # call-seconds at p50 latency (requests x latency)
    busy_p95: float
    cost: float
    tokens: float


@dataclass(frozen=True)
class _Term:
    """One step's projected time: its seconds over the volume, and the part that binds."""

    fig: _Fig
    seconds: float                  # the step's share of the projected time, in seconds
    kind: str                       # "workers", "rate_limit", "concurrency" or "none"
    parts: dict[str, float]         # seconds per item of each part (steady state)

    @property
    def name(self) -> str:
        return self.fig.profile.name


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
        out.append(_Fig(p, reach, units, requests, requests * p.latency, requests * p.p95,
                        p.cost * paid + requests * p.cost_per_request, p.tokens * paid))
        reach *= 1.0 - p.failure_rate
    return out


def _slowest(m: float, p50: float, p95: float) -> float:
    """Expected slowest of ``m`` calls: the ``m/(m+1)`` quantile, from p50 up to p95."""
    q = m / (m + 1.0)
    return p50 + (max(p95, p50) - p50) * min(1.0, max(0.0, (q - 0.5) / 0.45))


def _chunk_seconds(n: float, k: int, p50: float, p95: float) -> float:
    """Seconds one worker takes for ``n`` calls, ``k`` in flight at once."""
    if k <= 1 or n <= 1:
        return n * p50
    if n <= k:
        return _slowest(n, p50, p95)
    return (n / k - 1.0) * p50 + _slowest(k, p50, p95)


def _parts(f: _Fig, workers: int, lat: float) -> dict[str, float]:
    """Seconds per item of each limit on the step, in the steady state (no chunks)."""
    p = f.profile
    out = {"workers": f.requests * lat / (workers * p.per_worker)}
    rate = p.rate
    if rate is not None and f.requests > 0:
        out["rate_limit"] = f.requests / rate.per_second
    if p.concurrency is not None:
        out["concurrency"] = f.requests * lat / p.concurrency
    return out


def _binding(parts: dict[str, float]) -> str:
    # on a tie a limit is named rather than the workers: more workers would not help
    kind, seconds = max(parts.items(), key=lambda kv: (round(kv[1], 12), kv[0] != "workers"))
    return kind if seconds > 0 else "none"


def _terms(figs: Sequence[_Fig], *, volume: int, workers: int, chunk_size: int | None,
           p95: bool = False) -> list[_Term]:
    """Every step's projected seconds for ``volume`` items (the module docs' model)."""
    out = []
    for f in figs:
        p = f.profile
        lat = p.p95 if p95 else p.latency
        parts = _parts(f, workers, lat)
        if chunk_size is None:
            seconds = volume * max(parts.values())
            kind = _binding(parts)
        else:
            seconds, kind = _rounds(f, parts, volume=volume, workers=workers,
                                    chunk=chunk_size, lat=lat)
        out.append(_Term(f, seconds, kind, parts))
    return out


def _rounds(f: _Fig, parts: dict[str, float], *, volume: int, workers: int, chunk: int,
            lat: float) -> tuple[float, str]:
    """A step's seconds over the chunk rounds, and what binds it in a full round."""
    p = f.profile
    chunks = math.ceil(volume / chunk)
    rounds = math.ceil(chunks / workers)
    last_items = volume - (rounds - 1) * workers * chunk
    last_chunks = chunks - (rounds - 1) * workers

    def phase(items: float, biggest: float) -> dict[str, float]:
        limits = {k: v * items for k, v in parts.items() if k != "workers"}
        return {"workers": _chunk_seconds(biggest * f.requests, p.per_worker, lat, p.p95),
                **limits}

    full = phase(workers * chunk, chunk) if rounds > 1 else None
    last = phase(last_items, chunk if last_chunks > 1 else last_items)
    seconds = (rounds - 1) * max(full.values()) if full is not None else 0.0
    seconds += max(last.values())
    return seconds, _binding(full if full is not None else last)


def _why(t: _Term, workers: int, kind: str | None = None, *,
         chunk: tuple[int, int] | None = None) -> str:
    """The arithmetic of one of a step's limits, in items per minute.

    ``chunk``: (chunk size, volume) when the projection follows chunks: an async
    step's pace then comes from its waves.
    """
    f, p = t.fig, t.fig.profile
    kind = kind or t.kind
    per_item = t.parts.get(kind, 0.0)
    pace = num(60.0 / per_item) if per_item > 0 else "∞"
    if kind == "workers" and t.kind == "workers" and chunk is not None and p.per_worker > 1:
        n = chunk[0] * f.requests
        per_item = t.seconds / chunk[1]
        pace = num(60.0 / per_item) if per_item > 0 else "∞"
        return (f"{p.name}: {plural(workers, 'worker')}, each running a chunk's {num(n)} "
                f"calls {min(p.per_worker, math.ceil(n - _EPS))} at a time, each wave as slow "
                f"as its slowest call = {pace} items/min")
    if kind == "rate_limit" and p.rate is not None:
        return (f"{p.name}: {num(p.rate.calls)} calls/{rate_unit(p.rate)} ÷ {num(f.requests)} "
                f"calls/item = {pace} items/min")
    if kind == "concurrency":
        return (f"{p.name}: concurrency {p.concurrency} ÷ ({num(f.requests)} calls/item × "
                f"{secs(p.latency)}/call) = {pace} items/min")
    slots = plural(workers, "worker") + (f" × {p.per_worker} in flight" if p.per_worker > 1
                                         else "")
    return f"{p.name}: {slots} ÷ {secs(f.busy)} of calls per item = {pace} items/min"
