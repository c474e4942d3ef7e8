"""Recommendations from a projection: workers, chunk size, per-step concurrency, what would help.

**Workers.** The smallest count whose projected time meets the deadline (times
``headroom``). The time falls with more workers until every rate-limited or
capped step runs at its limit; after that only the unlimited steps get faster.
Without a deadline: the count from which every limited step runs at its limit
(``saturation_workers``), or ``max_workers`` when no step has a limit. When no
count up to ``max_workers`` meets the deadline: the smallest count within 5% of
the time ``max_workers`` would take (more would barely help), and ``actions``
say what would meet it.

**Chunk size.** The projection with a chunk size counts what chunking costs:
the last round's idle workers (an uneven finish), async steps' waves (a chunk
smaller than ``per_worker`` leaves calls unused, every chunk waits for its
slowest call) and request batches filled only within a chunk. So the size is
the smallest whose projected time is within 2% of the fastest and whose
batched steps make the fewest requests among those (full batches spare the
service and the per-request price), among sizes from 1 s of a worker's time
(a ~3 ms checkpoint commit, ../shared/FACTS.md, stays under 1%; less when that
leaves a worker without a chunk) up to 5 minutes (a crash loses the chunks in
flight: the workers redo at most that) and the volume. If the deadline is still
missed there, one more worker is added until it is met.

**Concurrency.** A step's own cap is kept. Otherwise the calls in flight while
the step runs, at its pace and p95 latency (Little's law), rounded up, at most
workers x ``per_worker``: a cap that protects the service without slowing the plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from ._plan import Projection
from ._plan_model import _EPS
from ._plan_report import num, pct, plural, rate_unit, seconds_text, usd
from ._ratelimit import RateLimit

__all__ = ["Recommendation", "recommend"]

_MIN_CHUNK_S = 1.0      # least work per chunk: a ~3 ms checkpoint commit stays under 1%
_MAX_CHUNK_S = 300.0    # most work per chunk: a crash makes a worker redo at most 5 min
_MAX_CHUNK = 10_000
_DIMINISHING = 1.05     # more workers than this close to the best time barely help
_CLOSE = 1.02           # chunk sizes this close to the fastest are as good: take the smallest
COMMIT_S = 0.003        # one checkpoint commit (fdatasync), ../shared/FACTS.md


@dataclass(frozen=True)
class Recommendation:
    """Workers, chunk size and per-step concurrency, with the reasons and what would help.

    Attributes:
        workers: recommended workers. chunk_size: items per chunk.
        concurrency: per step, the cap to set (the profile's own when it has one).
        projection: the plan at these settings (its seconds, cost, bottleneck).
        reasons: one line per choice, with the numbers.
        actions: when the deadline or budget is missed: by how much and what would
            meet it (empty when both are met).

    Example:
        >>> from batchkit._plan import StepProfile, project
        >>> proj = project([StepProfile("contacts", calls=2, latency=1.0, rate_limit="50/min")],
        ...                volume=600, workers=1, deadline="10min")
        >>> print(proj.recommend().actions[1])
        needs a higher tier on contacts: 50/min → 120/min, with 2 workers
    """

    workers: int
    chunk_size: int
    concurrency: dict[str, int]
    projection: Projection
    reasons: tuple[str, ...]
    actions: tuple[str, ...]

    @property
    def seconds(self) -> float:
        """Projected time at these settings."""
        return self.projection.seconds

    @property
    def cost(self) -> float:
        """Projected cost at these settings."""
        return self.projection.cost

    @property
    def meets_deadline(self) -> bool | None:
        """Whether the projected time meets the deadline (None without one)."""
        return self.projection.meets_deadline

    @property
    def meets_budget(self) -> bool | None:
        """Whether the projected cost fits the budget (None without one)."""
        return self.projection.meets_budget

    def __str__(self) -> str:
        caps = ", ".join(f"{k} {v}" for k, v in self.concurrency.items())
        lines = [f"workers {self.workers}, chunk size {self.chunk_size}, concurrency: {caps}"]
        lines += [f"- {r}" for r in self.reasons]
        lines += [f"! {a}" for a in self.actions]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return "\n".join([f"**workers {self.workers}, chunk size {self.chunk_size}**", ""]
                         + [f"- {r}" for r in self.reasons]
                         + [f"- **{a}**" for a in self.actions])


def _smallest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest ``n`` in ``lo..hi`` with ``ok(n)`` (``ok`` monotone), or None."""
    if hi < lo or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _steady(proj: Projection, workers: int) -> float:
    return proj.at(workers=workers, chunk_size=None).seconds


def _workers(proj: Projection, target: float | None, max_workers: int) -> tuple[int, str]:
    """The worker count before chunking, and why."""
    if proj.work_per_item <= 0:
        return 1, "the steps take no worker time"
    cap = max(1, min(max_workers, proj.volume))
    saturate = proj.saturation_workers
    limits = proj._limits()
    if target is None:
        if saturate is None:
            return cap, f"no deadline and no rate or concurrency limit: max_workers={max_workers}"
        top = max(limits, key=lambda x: x[2])
        why = (f"the count from which every rate-limited or capped step runs at its limit "
               f"(the largest: {_why_of(proj, top)}); more only speed up the other steps")
        if saturate > cap:
            why += f"; capped at {cap} (needs {saturate})"
        return min(saturate, cap), why
    count = _smallest(1, cap, lambda w: _steady(proj, w) <= target + _EPS)
    if count is not None:
        need = proj.volume / target
        give = "gives" if count == 1 else "give"
        return count, (f"the smallest count that meets {seconds_text(target)}: {proj.volume:,} "
                       f"items need {num(60 * need)} items/min; {plural(count, 'worker')} "
                       f"{give} {num(proj.at(workers=count, chunk_size=None).items_per_min)}")
    best = _steady(proj, cap)
    count = _smallest(1, cap, lambda w: _steady(proj, w) <= _DIMINISHING * best + _EPS) or cap
    floor = sum(s for _, _, s in limits) * proj.volume
    why = (f"no count up to {cap} meets {seconds_text(target)} (with {cap} workers: "
           f"{seconds_text(best)}"
           + (f"; the limits alone take {seconds_text(floor)}" if floor > 0 else "")
           + f"); {count} is within 5% of that, more would barely help")
    return count, why


def _why_of(proj: Projection, limit: tuple[object, str, float]) -> str:
    from ._plan_model import _why

    term, kind, _ = limit
    return _why(term, proj.workers, kind)  # type: ignore[arg-type]


def _chunk(proj: Projection, workers: int) -> tuple[int, str]:
    """The chunk size at ``workers``, and why (see the module docs)."""
    steady = proj.at(workers=workers, chunk_size=None)
    per_item = workers * steady.seconds / proj.volume  # a worker's wall time per item
    if per_item <= 0:
        return 1, "chunk size 1: the steps take no time"
    hi = max(1, min(proj.volume, _MAX_CHUNK, math.floor(_MAX_CHUNK_S / per_item + _EPS)))
    every = math.ceil(proj.volume / workers)  # one chunk per worker
    lo = max(1, min(hi, every, math.ceil(_MIN_CHUNK_S / per_item - _EPS)))
    sizes = {lo, hi} | {s for s in (round(lo * 1.3 ** j) for j in range(40)) if s <= hi}
    sizes |= {c for r in range(1, 65) if lo <= (c := math.ceil(proj.volume / (workers * r)))
              <= hi}  # the sizes that make whole rounds
    plans = {c: _at_chunk(proj, workers, c) for c in sorted(sizes)}
    best = min(p.seconds for p in plans.values())
    fast = {c: p for c, p in plans.items() if p.seconds <= _CLOSE * best + _EPS}

    def batched(p: Projection) -> float:  # requests of the batched steps
        return sum(f.requests for f in p._figs if f.profile.batch_size)
    fewest = min(batched(p) for p in fast.values())
    size = min(c for c, p in fast.items() if batched(p) <= fewest * (1 + 1e-9) + _EPS)
    chunks = math.ceil(proj.volume / size)
    plan = plans[size]
    parts = [f"the smallest size within 2% of the fastest projection ({seconds_text(best)}: "
             "chunk rounds, async waves and request batches counted) with the fewest "
             f"batched requests, among sizes from {lo} (1 s of a worker's time, or one chunk per "
             f"worker) to {hi} ({seconds_text(_MAX_CHUNK_S)} of it, or the volume)",
             f"{seconds_text(size * per_item)} per chunk, {plural(chunks, 'chunk')} "
             f"({num(chunks / workers)} per worker)",
             f"checkpoint commits (~3 ms each) cost {pct(COMMIT_S / (size * per_item))} of it"]
    for f in plan._figs:
        p = f.profile
        if p.batch_size and f.units > 0:
            fill = math.ceil(p.batch_size / f.units - _EPS)
            parts.append(f"fills {p.name}'s requests ({p.batch_size} per request)"
                         if size >= fill else f"{p.name}'s requests go {num(size * f.units)} "
                         f"of {p.batch_size} full (a full one needs {fill} items per chunk)")
        if p.per_worker > 1 and f.requests > 0 and size * f.requests < p.per_worker:
            parts.append(f"{p.name} keeps {num(size * f.requests)} of its {p.per_worker} "
                         "calls in flight per worker busy")
    if size == hi and hi < proj.volume:
        parts.append(f"kept to at most {seconds_text(_MAX_CHUNK_S)} of a worker's time per "
                     "chunk: a crash makes the workers redo at most that")
    return size, f"chunk size {size}: " + "; ".join(parts)


def _concurrency(plan: Projection) -> tuple[dict[str, int], list[str]]:
    caps, auto, reasons = {}, [], []
    for t in plan._terms:
        p, f = t.fig.profile, t.fig
        if p.concurrency is not None:
            caps[p.name] = p.concurrency
            allows = 60.0 / t.parts["concurrency"] if t.parts.get("concurrency") else math.inf
            binds = t.kind == "concurrency"
            reasons.append(f"{p.name}: your concurrency cap {p.concurrency} allows "
                           f"{num(allows)} items/min" + (" and binds" if binds else ""))
            continue
        per_item = max(t.parts.values())  # seconds per item while the step runs
        inflight = f.busy_p95 / per_item if per_item > 0 else 0.0
        caps[p.name] = max(1, min(plan.workers * p.per_worker, math.ceil(inflight - _EPS)))
        auto.append(f"{p.name} {caps[p.name]} (≈{num(inflight)} in flight)")
    if auto:
        reasons.append("concurrency (calls in flight while the step runs, at p95 latency by "
                       f"Little's law, at most workers x calls per worker): {', '.join(auto)}")
    return caps, reasons


def _raised(plan: Projection, factor: float, workers: int) -> Projection:
    """The plan with every rate limit and concurrency cap ``factor`` times higher."""
    steps = []
    for p in plan.steps:
        rate = p.rate
        steps.append(replace(
            p, rate_limit=RateLimit(rate.calls * factor, per=rate.per, burst=rate.burst)
            if rate is not None else None,
            concurrency=math.ceil(p.concurrency * factor - _EPS)
            if p.concurrency is not None else None))
    return plan._carry(Projection(steps, volume=plan.volume, workers=workers,
                                  deadline=plan.deadline, budget=plan.budget,
                                  chunk_size=plan.chunk_size))


def _tiers(plan: Projection, max_workers: int) -> list[str]:
    """What higher limits (and how many workers) would meet the deadline, or []."""
    deadline = plan.deadline
    assert deadline is not None
    if not plan._limits():
        return []
    cap = max(1, min(max_workers, plan.volume))

    def meets(w: int, factor: float) -> bool:
        return _raised(plan, factor, w).seconds <= deadline + _EPS

    top = 1e4
    workers = _smallest(plan.workers, cap, lambda w: meets(w, top)) if cap >= plan.workers \
        else None
    if workers is None:
        return []
    lo, hi = 1.0, top
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if meets(workers, mid) else (mid, hi)
    raised = _raised(plan, hi, workers)
    base = plan.at(workers=workers)
    out = []
    for t, r in zip(base._terms, raised._terms, strict=True):
        p = t.fig.profile
        if t.kind == "rate_limit" and p.rate is not None:
            # just enough for the step to take what it takes at the raised limit
            needed = t.parts["rate_limit"] / max(r.parts.get("rate_limit", 0.0),
                                                 t.parts["workers"], _EPS)
            tier = math.ceil(p.rate.calls * min(hi, needed) - _EPS)
            out.append(f"needs a higher tier on {p.name}: {num(p.rate.calls)}/"
                       f"{rate_unit(p.rate)} → {tier}/{rate_unit(p.rate)}")
        elif t.kind == "concurrency" and p.concurrency is not None:
            needed = t.parts["concurrency"] / max(r.parts.get("concurrency", 0.0),
                                                  t.parts["workers"], _EPS)
            out.append(f"needs concurrency on {p.name}: {p.concurrency} → "
                       f"{math.ceil(p.concurrency * min(hi, needed) - _EPS)}")
    if out and workers != plan.workers:
        out[-1] += f", with {plural(workers, 'worker')}"
    return out


def _actions(plan: Projection, max_workers: int) -> list[str]:
    out: list[str] = []
    volume, deadline, budget = plan.volume, plan.deadline, plan.budget
    if deadline is not None and plan.meets_deadline is False:
        over = plan.seconds - deadline
        out.append(f"misses the {seconds_text(deadline)} deadline by {seconds_text(over)} "
                   f"({pct(over / deadline)}): projected {seconds_text(plan.seconds)}")
        cap = max(1, min(max_workers, volume))
        more = _smallest(plan.workers, cap, lambda w: plan.at(workers=w).seconds
                         <= deadline + _EPS) if cap > plan.workers else None
        if more is not None:
            out.append(f"needs {plural(more, 'worker')}")
        else:
            out += _tiers(plan, max_workers)
        fits = math.floor(volume * deadline / plan.seconds + _EPS)
        out.append(f"or allow {seconds_text(plan.seconds)}, or run at most {fits:,} items "
                   "by the deadline")
    if budget is not None and plan.meets_budget is False:
        over = plan.cost - budget
        out.append(f"over the {usd(budget)} budget by {usd(over)} ({pct(over / budget)}): "
                   f"{usd(plan.cost_per_item)}/item against {usd(budget / volume)}/item allowed")
        out.append(f"or run at most {math.floor(budget / plan.cost_per_item + _EPS):,} items "
                   "within the budget")
        top = max(plan._figs, key=lambda f: f.cost)
        cut = over / volume
        p = top.profile
        if cut < top.cost and p.cache_hit_rate < 1:
            hits = 1.0 - (1.0 - p.cache_hit_rate) * (top.cost - cut) / top.cost
            out.append(f"or {pct(hits)} cache hits on {p.name} (now {pct(p.cache_hit_rate)}): "
                       f"its cost falls from {usd(top.cost)} to {usd(top.cost - cut)}/item")
    return out


def _at_chunk(proj: Projection, workers: int, chunk: int) -> Projection:
    return proj._carry(Projection(proj.steps, volume=proj.volume, workers=workers,
                                  deadline=proj.deadline, budget=proj.budget, chunk_size=chunk))


def recommend(proj: Projection, *, max_workers: int, headroom: float) -> Recommendation:
    """See ``Projection.recommend`` (arguments checked there)."""
    target = None if proj.deadline is None else proj.deadline * headroom
    workers, why_workers = _workers(proj, target, max_workers)
    first, cap = workers, max(1, min(max_workers, proj.volume))
    while True:
        chunk, why_chunk = _chunk(proj, workers)
        plan = _at_chunk(proj, workers, chunk)
        if target is None or plan.seconds <= target + _EPS or workers >= cap or \
                _steady(proj, workers) > target + _EPS:
            break  # met, or missed whatever the chunks: more workers are not the fix
        workers += 1  # chunk rounds, async waves and partly filled batches cost time
    if workers > first:
        why_workers += (f"; {workers} rather than {first}: chunk rounds, async waves and "
                        "partly filled request batches take time at this chunk size")
    if proj.chunk_size is not None and proj.chunk_size != chunk:
        why_chunk += f" (the plan has {proj.chunk_size})"
    caps, why_caps = _concurrency(plan)
    time = f"time {seconds_text(plan.seconds)} (every call at p95: " \
           f"{seconds_text(plan.seconds_p95)})"
    if proj.deadline is not None:
        time += f", {pct(plan.seconds / proj.deadline)} of the {seconds_text(proj.deadline)} " \
                "deadline"
        if plan.meets_deadline and plan.seconds_p95 > proj.deadline + _EPS:
            time += "; at p95 latencies it misses the deadline"
    cost = f"cost {usd(plan.cost)} ({usd(plan.cost_per_item)}/item)"
    if proj.budget is not None:
        cost += f", {pct(plan.cost / proj.budget)} of the {usd(proj.budget)} budget"
    b = plan.bottleneck
    reasons = (f"{plural(workers, 'worker')}: {why_workers}",
               f"bottleneck: {b.why}, {pct(b.share)} of the time", why_chunk, *why_caps, time,
               cost)
    return Recommendation(workers, chunk, caps, plan, tuple(reasons),
                          tuple(_actions(plan, max_workers)))

