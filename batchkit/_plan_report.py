"""Words and tables for plans: number formats, the summary of a projection, the architecture report.

Pure text: takes a ``Projection`` (duck-typed, so this module imports nothing of
``_plan`` at import time) and returns strings. The report's sections follow the
seed write-up (../shared/SCENARIOS.md): workflow analysis, chunking and
parallelism, state and resume, reliability, observability, projections.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from ._plan import Projection
    from ._policy import RetryPolicy

__all__ = ["alert_thresholds", "binding_text", "num", "pct", "plain_text", "plural", "rate_unit",
           "render_html", "render_markdown", "render_report", "seconds_text", "secs",
           "table_frame", "usd"]

_COMMIT_S = 0.003  # one checkpoint commit (fdatasync), ../shared/FACTS.md
_KINDS = {"workers": "workers", "rate_limit": "rate limit", "concurrency": "concurrency cap",
          "none": "nothing"}


def num(x: float) -> str:
    """A figure for people: whole numbers as such, else three significant digits.

    Example:
        >>> num(25.0), num(9.9337), num(0.04), num(12000.4), num(math.inf)
        ('25', '9.93', '0.04', '12,000', '∞')
    """
    if math.isinf(x):
        return "∞"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.3g}"


def secs(x: float) -> str:
    """Seconds for arithmetic: ``s`` from 1 s (and 0), ``ms`` below, three digits.

    Example:
        >>> secs(16), secs(1.5), secs(0.0433), secs(0.0000041), secs(0)
        ('16 s', '1.5 s', '43.3 ms', '0.0041 ms', '0 s')
    """
    return f"{num(x)} s" if x >= 1 or x == 0 else f"{num(x * 1000)} ms"


def usd(x: float) -> str:
    """Dollars: cents from $1 up, three significant digits below.

    Example:
        >>> usd(70), usd(0.14), usd(0.5), usd(0.0433), usd(1234.5)
        ('$70.00', '$0.14', '$0.50', '$0.0433', '$1,234.50')
    """
    return f"${x:,.2f}" if x >= 1 or round(x, 2) == x else f"${x:.3g}"


def pct(share: float) -> str:
    """A share as a percentage.

    Example:
        >>> pct(0.25), pct(0.0123), pct(1.5), pct(0.00001)
        ('25%', '1.2%', '150%', 'under 0.1%')
    """
    value = 100.0 * share
    if 0 < value < 0.1:
        return "under 0.1%"
    return f"{value:.1f}%" if value < 10 and round(value, 1) != round(value) else f"{value:.0f}%"


def plural(n: int, word: str) -> str:
    """``n`` and ``word``, plural unless ``n`` is 1.

    Example:
        >>> plural(1, "worker"), plural(5, "worker")
        ('1 worker', '5 workers')
    """
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def seconds_text(seconds: float) -> str:
    """A duration in the unit people would use.

    Example:
        >>> seconds_text(42), seconds_text(3018), seconds_text(28800), seconds_text(0.25)
        ('42 s', '50.3 min', '8 h', '250 ms')
    """
    if math.isinf(seconds):
        return "never"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{num(round(seconds, 1))} s"
    if seconds < 7200:
        return f"{num(round(seconds / 60, 1))} min"
    if seconds < 172800:
        return f"{num(round(seconds / 3600, 1))} h"
    return f"{num(round(seconds / 86400, 1))} days"


def rate_unit(rate: Any) -> str:
    """The unit of a ``RateLimit`` as written: ``min`` for 100/min.

    Example:
        >>> from batchkit._ratelimit import RateLimit
        >>> rate_unit(RateLimit.parse("100/min", burst=5))
        'min'
    """
    return str(rate).split("/", 1)[1].split(" ")[0]


def _verdicts(proj: Projection) -> tuple[str, str]:
    time = cost = ""
    if proj.deadline is not None:
        time = (f"; deadline {seconds_text(proj.deadline)}: "
                + ("met" if proj.meets_deadline else "missed"))
    if proj.budget is not None:
        cost = f"; budget {usd(proj.budget)}: " + ("within" if proj.meets_budget else "over")
    return time, cost


def _summary(proj: Projection) -> list[tuple[str, str]]:
    time, cost = _verdicts(proj)
    chunk = str(proj.chunk_size) if proj.chunk_size else "automatic (full request batches)"
    basis = [("measured", proj.sample.describe())] if proj.sample is not None else []
    return [
        *basis,
        ("items", f"{proj.volume:,}"), ("workers", str(proj.workers)), ("chunk size", chunk),
        ("time", f"{seconds_text(proj.seconds)} (p95: {seconds_text(proj.seconds_p95)}){time}"),
        ("cost", f"{usd(proj.cost)} ({usd(proj.cost_per_item)}/item){cost}"),
        ("throughput", f"{num(proj.items_per_min)} items/min"),
        ("bottleneck", proj.bottleneck.why),
    ]


def _limit_text(proj: Projection, t: Any) -> str:
    """What a step's rate or concurrency limit allows while it runs, or "no limit"."""
    limits = [v for k, v in t.parts.items() if k != "workers" and v > 0]
    return f"{num(60.0 / max(limits))} items/min" if limits else "no limit"


def _step_table(proj: Projection) -> tuple[list[str], list[list[str]]]:
    header = ["step", "calls/item", "time/item", "limited by", "limit allows", "cost/item",
              "binds"]
    rows = []
    for t in proj._terms:
        rows.append([t.name, num(t.fig.requests), seconds_text(t.seconds / proj.volume),
                     _KINDS.get(t.kind, t.kind), _limit_text(proj, t), usd(t.fig.cost),
                     "yes" if proj.bottleneck.step == t.name else ""])
    return header, rows


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plain_text(proj: Projection) -> str:
    """The projection for a terminal: summary lines and a step table."""
    lines = ["Projection"] + [f"  {k:<11} {v}" for k, v in _summary(proj)]
    header, rows = _step_table(proj)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    for r in [header, *rows]:
        lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def render_markdown(proj: Projection) -> str:
    """The projection as Markdown (a notebook's ``_repr_markdown_``)."""
    parts = ["**Projection**", ""] + [f"- **{k}**: {v}" for k, v in _summary(proj)]
    return "\n".join([*parts, "", _md_table(*_step_table(proj))])


def render_html(proj: Projection) -> str:
    """The projection as HTML (a notebook's ``_repr_html_``)."""
    e = html.escape
    summary = "".join(f"<tr><th style='text-align:left'>{e(k)}</th><td style='text-align:left'>"
                      f"{e(v)}</td></tr>" for k, v in _summary(proj))
    header, rows = _step_table(proj)
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(x)}</td>" for x in r) + "</tr>" for r in rows)
    return (f"<div><b>Projection</b><table>{summary}</table>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def table_frame(proj: Projection) -> pl.DataFrame:
    """The per-step frame of ``Projection.table``."""
    rows = []
    for t in proj._terms:
        f = t.fig
        p, rate = f.profile, f.profile.rate
        rate_s, cap_s = t.parts.get("rate_limit"), t.parts.get("concurrency")
        rows.append({
            "step": p.name, "calls": float(p.calls), "effective_calls": f.requests,
            "reach": f.reach, "latency_s": float(p.latency), "latency_p95_s": float(p.p95),
            "per_worker": p.per_worker,
            "seconds_per_item": t.seconds / proj.volume,
            "share_of_time": t.seconds / proj.seconds if proj.seconds else 0.0,
            "limited_by": t.kind, "rate_limit": str(rate) if rate else None,
            "rate_items_per_min": 60.0 / rate_s if rate_s else None,
            "rate_limited_seconds": (proj.volume * f.requests / rate.per_second
                                     if rate else None),
            "concurrency": p.concurrency,
            "concurrency_items_per_min": 60.0 / cap_s if cap_s else None,
            "calls_total": proj.volume * f.requests, "cost_per_item": f.cost,
            "cost_total": proj.volume * f.cost, "tokens_total": proj.volume * f.tokens,
            "bottleneck": p.name == proj.bottleneck.step,
        })
    schema = {"step": pl.String, "rate_limit": pl.String, "concurrency": pl.Int64,
              "per_worker": pl.Int64, "limited_by": pl.String, "bottleneck": pl.Boolean,
              "rate_items_per_min": pl.Float64, "rate_limited_seconds": pl.Float64,
              "concurrency_items_per_min": pl.Float64}
    return pl.DataFrame(rows, schema_overrides=schema)


def binding_text(b: Any) -> str:
    """A ``Binding`` in words."""
    if b.volume is None:
        return (f"no rate or concurrency limit: more workers always help; the plan's "
                f"workers finish {b.volume_at_workers:,} items in {seconds_text(b.deadline)}")
    return (f"with enough workers ({b.workers} or more) every limited step runs at its "
            f"limit, one after another, so at most {b.volume:,} items fit in "
            f"{seconds_text(b.deadline)} (the largest: {b.why}); the plan's workers "
            f"finish {b.volume_at_workers:,}")


# -- the architecture report --------------------------------------------------------------

def _workflow(proj: Projection) -> list[str]:
    header = ["step", "calls/item", "latency p50 / p95", "time/item", "parallel",
              "rate limit", "batching", "cache hits", "retries", "failures", "cost/item"]
    rows = []
    for t in proj._terms:
        f = t.fig
        p, rate = f.profile, f.profile.rate
        rate_s = t.parts.get("rate_limit")
        parallel = (f"{p.per_worker} calls in flight per worker" if p.per_worker > 1
                    else "one call at a time per worker")
        if p.concurrency:
            parallel += f", at most {p.concurrency} in all"
        rows.append([
            p.name, num(p.calls), f"{secs(p.latency)} / {secs(p.p95)}",
            seconds_text(t.seconds / proj.volume), parallel,
            f"{rate}: at most {num(60.0 / rate_s)} items/min" if rate and rate_s else
            (str(rate) if rate else "none"),
            f"{p.batch_size} per request: {num(f.requests)} requests/item" if p.batch_size
            else "no",
            pct(p.cache_hit_rate) if p.cache_hit_rate else "none",
            pct(p.retry_rate) if p.retry_rate else "none measured",
            pct(p.failure_rate) if p.failure_rate else "none measured",
            usd(f.cost),
        ])
    top = sorted(proj._terms, key=lambda t: t.seconds, reverse=True)[:3]
    where = ", ".join(f"{t.name} {pct(t.seconds / proj.seconds)} ({_KINDS[t.kind]})"
                      for t in top if proj.seconds > 0 and t.seconds > 0)
    out = ["## 1. Workflow analysis", "",
           f"Each item goes through {len(proj.steps)} steps in order. A worker runs its "
           "chunk step by step (every item of the chunk through one step, then the next), "
           "so the steps' times add up and a rate limit is used only while its step runs. "
           f"One worker alone needs {seconds_text(proj.work_per_item)} per item. Calls per "
           "item count cache hits, retries and request batching.", "",
           _md_table(header, rows), ""]
    if where:
        out += [f"Where the time goes: {where}.", ""]
    points = [f"- {f.profile.name}: {pct(f.profile.failure_rate)} of the items that reach it "
              f"fail (about {num(proj.volume * f.reach * f.profile.failure_rate)} of "
              f"{proj.volume:,})" for f in proj._figs if f.profile.failure_rate]
    points += [f"- {f.profile.name}: {pct(f.profile.retry_rate)} extra tries (transient errors)"
               for f in proj._figs if f.profile.retry_rate]
    out += ["Failure points:", ""]
    out += points or ["- the profiles show no failures or retries; the reliability "
                      "settings below still apply"]
    return [*out, ""]


def _parallelism(proj: Projection, rec: Any) -> list[str]:
    from ._plan_model import _why

    rows = []
    for t in proj._terms:
        arithmetic = "; ".join(_why(t, proj.workers, kind, chunk=proj._chunking)
                               for kind in t.parts
                               if t.parts[kind] > 0) or "takes no time"
        rows.append([t.name, _KINDS[t.kind], arithmetic,
                     seconds_text(t.seconds / proj.volume),
                     pct(t.seconds / proj.seconds) if proj.seconds else "0%",
                     "yes" if t.name == proj.bottleneck.step else ""])
    out = ["## 2. Chunking and parallelism", "",
           f"Each step's pace with {plural(proj.workers, 'worker')} (the slowest of its "
           "limits sets it; the steps' times add up):", "",
           _md_table(["step", "limited by", "arithmetic", "time/item", "share", "bottleneck"],
                     rows), "",
           f"Recommended configuration: {plural(rec.workers, 'worker')}, chunks of "
           f"{plural(rec.chunk_size, 'item')}, each chunk run step by step on one worker.", ""]
    out += [f"- {r}" for r in rec.reasons]
    out += ["- backend: threads, since the steps wait on external calls (a waiting thread "
            "holds no CPU); use processes only for CPU-heavy local steps, and then each of "
            "the N processes paces itself to rate/N of every limit", ""]
    return out


def _state(proj: Projection, rec: Any, name: str) -> list[str]:
    chunk = rec.chunk_size
    chunks = math.ceil(proj.volume / chunk)
    plan = rec.projection
    per_item = plan.workers * plan.seconds / plan.volume  # a worker's wall time per item
    commits = chunks * _COMMIT_S
    share = pct(commits / plan.seconds) if plan.seconds > 0 else pct(0)
    return ["## 3. State and resume", "",
            f"- store: one DuckDB file; table `{name}` holds every item with its status "
            "(pending, running, done, failed), attempts, current step, error and cost; "
            f"`{name}__results` the outputs; `{name}__attempts` one row per attempt",
            f"- checkpoint: after every chunk, in one transaction: "
            f"{plural(chunks, 'checkpoint')} of about 3 ms, {seconds_text(commits)} in all "
            f"({share} of the run)",
            f"- a crash loses at most the chunks in flight: {plan.workers} x {chunk} items, "
            f"about {seconds_text(chunk * per_item)} of each worker's time; steps an item "
            "already finished are checkpointed and not called again",
            "- resume: run the same `batch.run(...)` again; pending and interrupted items run, "
            "done items are skipped, `only=\"failed\"` re-runs the dead letters", ""]


def _reliability(proj: Projection, retry: RetryPolicy, on_error: str) -> list[str]:
    delays = ", ".join(num(min(retry.max_backoff, retry.backoff * 2 ** n))
                       for n in range(retry.retries))
    retries = (f"transient errors (timeouts, 429, 5xx, `bk.Transient`) are retried "
               f"{retry.retries} times with exponential backoff ({delays} s, "
               f"±{pct(retry.jitter)} jitter); a 429's Retry-After pauses the whole step"
               if retry.retries else "transient errors are not retried (retries=0)")
    extra = sum(proj.volume * f.requests * f.profile.retry_rate / (1 + f.profile.retry_rate)
                for f in proj._figs)
    tolerance = ("skip and log failures: a failed item goes to the dead-letter list "
                 "(`batch.failed()`, with a retry-eligible flag) and the batch goes on"
                 if on_error == "skip" else "halt: the first final failure stops the batch")
    cached = [f"{f.profile.name} {pct(f.profile.cache_hit_rate)}" for f in proj._figs
              if f.profile.cache_hit_rate]
    failing = (f"about {num(proj.expected_failed)} of {proj.volume:,} items "
               f"({pct(proj.expected_failed / proj.volume)}) are projected to fail"
               if proj.expected_failed > 0 else "the profiles show no failures")
    out = ["## 4. Reliability", "",
           f"- retries: {retries}; permanent errors fail at once",
           f"- projected retries: about {num(extra)} repeated calls" if extra > 0 else
           "- projected retries: none measured in the profiles",
           f"- failures: {tolerance}; {failing}",
           "- idempotency: every call can send `ctx.idempotency_key` (batch:key:attempt:step); "
           "step results are cached by their inputs, so a re-run never pays twice"
           + (f" (cache hits: {', '.join(cached)})" if cached else "")]
    if proj.budget is not None:
        out.append(f"- budget: `budget={num(proj.budget)}` stops dispatching chunks before the "
                   f"spend would pass {usd(proj.budget)} (projected {usd(proj.cost)})")
    return [*out, ""]


def alert_thresholds(proj: Projection) -> dict[str, float | None]:
    """Alert thresholds fitted to the plan (see ``Projection.alert_thresholds``)."""
    ipm, cpi = proj.items_per_min, proj.cost_per_item
    failure = 1.0 - proj.expected_done / proj.volume
    finite = math.isfinite(ipm)
    return {"failure_rate_warn": max(0.05, failure + 0.05),
            "failure_rate_critical": max(0.15, failure + 0.15),
            "throughput_warn": ipm / 2 if finite else None,
            "throughput_critical": ipm / 4 if finite else None,
            "cost_per_item_warn": 1.25 * cpi if cpi > 0 else None,
            "cost_per_item_critical": 2.0 * cpi if cpi > 0 else None,
            "eta_warn": 0.8, "eta_critical": 1.0}


def _observability(proj: Projection) -> list[str]:
    ipm = proj.items_per_min
    item_s = 60.0 * proj.workers / ipm if ipm else 0.0
    item_p95 = item_s * proj.seconds_p95 / proj.seconds if proj.seconds else 0.0
    failure = 1.0 - proj.expected_done / proj.volume
    limits = alert_thresholds(proj)

    def level(key: str, text: str) -> str:
        return "not watched" if limits[key] is None else text
    per_step = ", ".join(f"{f.profile.name} {num(proj.volume * f.requests)}"
                         for f in proj._figs)
    metrics = [["throughput", f"{num(ipm)} items/min"],
               ["item duration (one worker, limits included)",
                f"{seconds_text(item_s)}, at p95 latencies {seconds_text(item_p95)}"],
               ["calls", f"{num(proj.calls)} ({per_step})"],
               ["tokens", num(proj.tokens)],
               ["cost", f"{usd(proj.cost)} in all, {usd(proj.cost_per_item)}/item"],
               ["failures", f"{pct(failure)} of items"]]
    eta = (["ETA", f"past 80% of the deadline ({seconds_text(0.8 * proj.deadline)})",
            f"past the deadline ({seconds_text(proj.deadline)})"] if proj.deadline is not None
           else ["ETA", "no deadline given: shown, not alerted", "no deadline given"])
    alerts = [["failure rate", f"above {pct(limits['failure_rate_warn'] or 0)}",
               f"above {pct(limits['failure_rate_critical'] or 0)}"],
              ["throughput", level("throughput_warn", f"below {num(ipm / 2)} items/min "
                                   "(half the plan)"),
               level("throughput_critical", f"below {num(ipm / 4)} items/min (a quarter)")],
              ["cost per item", level("cost_per_item_warn",
                                      f"above {usd(1.25 * proj.cost_per_item)} (plan +25%)"),
               level("cost_per_item_critical",
                     f"above {usd(2 * proj.cost_per_item)} (twice the plan)")],
              eta, ["workers", "1 down", "3 or more down"]]
    return ["## 5. Observability", "", "Metrics to watch, with the plan's figures:", "",
            _md_table(["metric", "projected"], metrics), "", "Alert thresholds:", "",
            _md_table(["alert", "warning", "critical"], alerts), ""]


def _projections(proj: Projection, rec: Any, volumes: Sequence[int]) -> list[str]:
    header = ["volume", f"time, {plural(proj.workers, 'worker')}", "workers needed",
              "time with them", "cost", "bottleneck"]
    fixed = proj.scaling(volumes)
    auto = proj.scaling(volumes, workers="auto")
    rows = []
    for a, b in zip(fixed.iter_rows(named=True), auto.iter_rows(named=True)):
        mark = "" if a["meets_deadline"] is None else (" (meets)" if a["meets_deadline"]
                                                       else " (misses)")
        over = "" if b["meets_budget"] is None else ("" if b["meets_budget"] else " (over)")
        rows.append([f"{a['volume']:,}", seconds_text(a["seconds"]) + mark, str(b["workers"]),
                     seconds_text(b["seconds"]), usd(b["cost"]) + over, b["bottleneck"]])
    out = ["## 6. Projections and scaling", "",
           f"- {proj.volume:,} items with {plural(proj.workers, 'worker')}: "
           f"{seconds_text(proj.seconds)} at p50 latencies ({seconds_text(proj.seconds_p95)} "
           f"if every call takes its p95), {usd(proj.cost)} ({usd(proj.cost_per_item)}/item), "
           f"{num(proj.calls)} calls, {num(proj.tokens)} tokens; about "
           f"{num(proj.expected_done)} items done",
           f"- bottleneck: {proj.bottleneck.why}"]
    if proj.deadline is not None:
        out.append(f"- where the limits bind: {proj.binding_volume()}")
    out += ["", "Scaling (deadline and budget as above; workers needed: the smallest count "
            "meeting the deadline, or past which more would barely help):", "",
            _md_table(header, rows), ""]
    if rec.actions:
        out += ["What would meet the requirements:", ""] + [f"- {a}" for a in rec.actions]
        out.append("")
    out += ["Model: each step takes the longest of its calls' time over the concurrency "
            "available (workers x calls in flight each), its calls ÷ its rate limit, and "
            "its calls' time ÷ its concurrency cap; the steps' times add up, since workers "
            "run each chunk step by step and move through the steps together; with a chunk "
            "size, chunk rounds and async waves count too. Cost = volume x each step's cost "
            "x (1 - cache hits) x (1 + retries); checkpoint commits are left out (under "
            "1%).", ""]
    return out


def _basis(proj: Projection) -> list[str]:
    """What a ``batch.plan`` was measured from, and what is left to run after its sample."""
    sample = proj.sample
    if sample is None:
        return []
    text = f"**Measured**: {sample.describe()}."
    rest = sample.remaining
    if sample.items and rest > 0 and math.isfinite(proj.items_per_min):
        left = proj.at(volume=rest)
        text += (f" The {rest:,} pending items take {seconds_text(left.seconds)} for "
                 f"{usd(left.cost)} with {plural(proj.workers, 'worker')}.")
    return [text, ""]


def render_report(proj: Projection, *, name: str, retry: RetryPolicy, on_error: str,
                  volumes: Sequence[int]) -> str:
    """The architecture write-up in Markdown (see ``Projection.report``)."""
    rec = proj.recommend()
    time, cost = _verdicts(proj)
    deadline = seconds_text(proj.deadline) if proj.deadline is not None else "none"
    budget = usd(proj.budget) if proj.budget is not None else "none"
    tolerance = "skip and log failures" if on_error == "skip" else "halt on a failure"
    lines = [f"# Batch plan: {name}", "",
             f"{proj.volume:,} items through {len(proj.steps)} steps "
             f"({', '.join(p.name for p in proj.steps)}). Requirements: deadline {deadline}, "
             f"budget {budget}, {tolerance}.", "",
             f"**With {plural(proj.workers, 'worker')}**: {seconds_text(proj.seconds)}{time}; "
             f"{usd(proj.cost)} ({usd(proj.cost_per_item)}/item){cost}. "
             f"Bottleneck: {proj.bottleneck.why}.", "",
             f"**Recommended**: {plural(rec.workers, 'worker')}, chunks of {rec.chunk_size}: "
             f"{seconds_text(rec.seconds)}, {usd(rec.cost)}.", ""]
    lines += _basis(proj)
    lines += [f"- {a}" for a in rec.actions]
    if rec.actions:
        lines.append("")
    lines += _workflow(proj) + _parallelism(proj, rec) + _state(proj, rec, name)
    lines += _reliability(proj, retry, on_error) + _observability(proj)
    lines += _projections(proj, rec, volumes)
    return "\n".join(lines).rstrip() + "\n"
