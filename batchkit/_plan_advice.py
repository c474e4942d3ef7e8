"""Recommendations from a projection: workers, chunk size, per-step concurrency, what would help.

**Workers.** The smallest count whose projected time meets the deadline (times
``headroom``): ``ceil(volume / target x work per item)``. Never more than the
count from which the slowest rate or concurrency limit binds
(``ceil(limit's items/s x work per item)``): more workers would only wait on it.
Without a deadline, that count (capped by ``max_workers`` and the volume).

**Chunk size.** Four forces, in this order of precedence:

1. an even finish: at least 8 chunks per worker, so the last round leaves
   workers idle for at most an eighth of their share;
2. failure isolation: at most 5 minutes of one worker's work per chunk, so a
   crash (which loses the chunks in flight) makes a worker redo at most that;
3. full request batches: batched steps group their calls within a chunk, so a
   chunk should hold enough items to fill one request;
4. amortised checkpoints: at least 1 s of work per chunk, so the ~3 ms commit
   of each checkpoint (../shared/FACTS.md) costs under 1%.

The size is ``min(max(4, 3), 1, 2)``: as large as 3 and 4 want, as small as 1
and 2 demand.

**Concurrency.** A step's own cap is kept. Otherwise the calls in flight at the
projected throughput with p95 latency (Little's law: items/s x seconds in the
step), rounded up, at most one per worker (workers run items one at a time):
a cap that protects the service without slowing the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._plan import _EPS, Projection, _Fig
from ._plan_report import num, pct, plural, rate_unit, seconds_text, usd

__all__ = ["Recommendation", "recommend"]

_MIN_CHUNK_S = 1.0      # least work per chunk: a ~3 ms checkpoint commit stays under 1%
_MAX_CHUNK_S = 300.0    # most work per chunk: a crash makes a worker redo at most 5 min
_CHUNKS_PER_WORKER = 8  # an even finish: the idle tail is at most 1/8 of a worker's share
_MAX_CHUNK = 10_000
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
        needs a higher tier on contacts: 50/min → 120/min
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


def _workers(proj: Projection, target: float | None, max_workers: int) -> tuple[int, str]:
    """The worker count before chunking, and why."""
    work, volume = proj.work_per_item, proj.volume
    if work <= 0:
        return 1, "the steps take no worker time"
    limit = proj._limit()
    limit_s = limit.items_per_min / 60.0
    saturate = proj.saturation_workers
    if target is not None and volume / target <= limit_s + _EPS:
        need = volume / target
        count = max(1, math.ceil(need * work - _EPS))
        why = (f"the smallest count that meets {seconds_text(target)}: {volume:,} items need "
               f"{num(60 * need)} items/min, and each worker does 60 ÷ {num(work)} s "
               f"= {num(60 / work)} items/min")
    elif saturate is not None:
        count = saturate
        why = (f"the count from which the binding limit sets the pace ({limit.why}); "
               "more would only wait on it")
    else:
        count = max_workers
        why = f"no deadline and no rate or concurrency limit: max_workers={max_workers}"
    if count > max_workers:
        why += f"; capped at max_workers={max_workers} (needs {count})"
    if count > volume:
        why += f"; capped at the volume ({volume:,} items)"
    return max(1, min(count, max_workers, volume)), why


def _chunk(proj: Projection, workers: int) -> tuple[int, str]:
    """The chunk size at ``workers`` (full batches assumed while choosing), and why."""
    plan = proj.at(workers=workers)
    per_item = 60.0 * workers / plan.items_per_min if plan.items_per_min > 0 else 0.0
    if math.isinf(plan.items_per_min):
        per_item = 0.0
    lo = math.ceil(_MIN_CHUNK_S / per_item - _EPS) if per_item > 0 else _MAX_CHUNK
    hi_loss = max(1, math.floor(_MAX_CHUNK_S / per_item + _EPS)) if per_item > 0 else _MAX_CHUNK
    hi_even = max(1, proj.volume // (_CHUNKS_PER_WORKER * workers))
    fills = [(math.ceil(f.profile.batch_size / f.units - _EPS), f) for f in plan._figs
             if f.profile.batch_size and f.units > 0]
    fill, fig = max(fills, key=lambda t: t[0]) if fills else (1, None)
    want = max(lo, fill, 1)
    size = max(1, min(want, hi_even, hi_loss, _MAX_CHUNK))
    chunks = math.ceil(proj.volume / size)
    parts = [f"{seconds_text(size * per_item)} of work per chunk, {chunks:,} chunks "
             f"({num(chunks / workers)} per worker)"]
    if per_item > 0:
        parts.append(f"checkpoint commits (~3 ms each) cost {pct(COMMIT_S / (size * per_item))} "
                     "of the work")
    if fig is not None:
        batch = fig.profile.batch_size
        if size >= fill:
            parts.append(f"fills {fig.profile.name}'s requests ({batch} per request) "
                         "within each chunk")
        else:
            parts.append(f"{fig.profile.name}'s requests go {num(size * fig.units)} of "
                         f"{batch} full (a full one needs {fill} items per chunk)")
    if size == hi_even and hi_even < want:
        parts.append(f"kept to {hi_even} so each worker gets at least {_CHUNKS_PER_WORKER} "
                     "chunks and they finish together")
    elif size == hi_loss and hi_loss < want:
        parts.append(f"kept to at most {seconds_text(_MAX_CHUNK_S)} of work per chunk: a crash "
                     "makes a worker redo at most that")
    return size, f"chunk size {size}: " + "; ".join(parts)


def _concurrency(plan: Projection) -> tuple[dict[str, int], list[str]]:
    per_s = plan.items_per_min / 60.0
    caps, auto, reasons = {}, [], []
    for f in plan._figs:
        p = f.profile
        if p.concurrency is not None:
            caps[p.name] = p.concurrency
            allows = 60.0 * p.concurrency / f.busy if f.busy > 0 else math.inf
            binds = plan.bottleneck.kind == "concurrency" and plan.bottleneck.step == p.name
            reasons.append(f"{p.name}: your concurrency cap {p.concurrency} allows "
                           f"{num(allows)} items/min" + (" and binds" if binds else ""))
            continue
        inflight = per_s * f.busy_p95 if math.isfinite(per_s) else 0.0
        caps[p.name] = max(1, min(plan.workers, math.ceil(inflight - _EPS)))
        auto.append(f"{p.name} {caps[p.name]} (≈{num(inflight)} in flight)")
    if auto:
        reasons.append("concurrency (calls in flight at p95 latency by Little's law, at most "
                       f"one per worker): {', '.join(auto)}")
    return caps, reasons


def _actions(plan: Projection, max_workers: int) -> list[str]:
    out: list[str] = []
    volume, deadline, budget = plan.volume, plan.deadline, plan.budget
    if deadline is not None and plan.meets_deadline is False:
        over = plan.seconds - deadline
        out.append(f"misses the {seconds_text(deadline)} deadline by {seconds_text(over)} "
                   f"({pct(over / deadline)}): projected {seconds_text(plan.seconds)}")
        need = volume / deadline
        figs = {f.profile.name: f for f in plan._figs}
        for b in plan._bounds:
            if b.kind == "workers" or b.items_per_min / 60.0 >= need - _EPS:
                continue
            f: _Fig = figs[b.step]
            rate = f.profile.rate
            if b.kind == "rate_limit" and rate is not None:
                tier = math.ceil(need * f.requests * rate.per - _EPS)
                out.append(f"needs a higher tier on {b.step}: {num(rate.calls)}/{rate_unit(rate)}"
                           f" → {tier}/{rate_unit(rate)}")
            elif b.kind == "concurrency":
                out.append(f"needs concurrency on {b.step}: {f.profile.concurrency} → "
                           f"{math.ceil(need * f.busy - _EPS)}")
        needed = math.ceil(need * plan.work_per_item - _EPS)
        if needed > plan.workers:
            note = f" (more than max_workers={max_workers})" if needed > max_workers else ""
            raised = " with those limits raised" if len(out) > 1 else ""
            out.append(f"needs {needed} workers{raised}{note}")
        fits = math.floor(plan.items_per_min * deadline / 60.0 + _EPS)
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


def recommend(proj: Projection, *, max_workers: int, headroom: float) -> Recommendation:
    """See ``Projection.recommend`` (arguments checked there)."""
    target = None if proj.deadline is None else proj.deadline * headroom
    workers, why_workers = _workers(proj, target, max_workers)
    first = workers
    while True:
        chunk, why_chunk = _chunk(proj, workers)
        plan = proj._carry(Projection(proj.steps, volume=proj.volume, workers=workers,
                                      deadline=proj.deadline, budget=proj.budget,
                                      chunk_size=chunk))
        more_helps = plan._limit().items_per_min > plan.items_per_min * (1 + 1e-9)
        if (target is None or plan.seconds <= target + _EPS or not more_helps
                or workers >= min(max_workers, proj.volume)):
            break
        workers += 1  # partly filled batches at this chunk size cost worker time
    if workers > first:
        why_workers += (f"; {workers} rather than {first}: the chunk size leaves request "
                        "batches partly filled")
    if proj.chunk_size is not None and proj.chunk_size != chunk:
        why_chunk += f" (the plan has {proj.chunk_size})"
    caps, why_caps = _concurrency(plan)
    time = f"time {seconds_text(plan.seconds)} (every call at p95: " \
           f"{seconds_text(plan.seconds_p95)})"
    if proj.deadline is not None:
        time += f", {pct(plan.seconds / proj.deadline)} of the {seconds_text(proj.deadline)} " \
                "deadline"
        if plan.meets_deadline and plan.seconds_p95 > proj.deadline + _EPS:
            work95 = sum(f.work_p95 for f in plan._figs)
            safe = math.ceil(proj.volume / proj.deadline * work95 - _EPS)
            time += (f"; at p95 latencies it misses the deadline, which {plural(safe, 'worker')} "
                     "would meet if the limits allow")
    cost = f"cost {usd(plan.cost)} ({usd(plan.cost_per_item)}/item)"
    if proj.budget is not None:
        cost += f", {pct(plan.cost / proj.budget)} of the {usd(proj.budget)} budget"
    reasons = (f"{plural(workers, 'worker')}: {why_workers}", f"bottleneck: {plan.bottleneck.why}",
               why_chunk, *why_caps, time, cost)
    return Recommendation(workers, chunk, caps, plan, tuple(reasons),
                          tuple(_actions(plan, max_workers)))
