"""The lead-enrichment scenario, end to end: ``batchkit demo`` (or ``python -m batchkit.demo``).

The first worked system of ../shared/SCENARIOS.md, run against local simulated
services (``SimService`` on 127.0.0.1): 500 fictional companies from
``data/companies.csv`` go through five steps, in chunks of 50 on 5 workers, with
a DuckDB store and an enriched Parquet file at the end.

==================  ===================================================================
step                what it does (limits and prices from the scenario)
==================  ===================================================================
``search``          sync; one web search per company (``GET /search``), plus one
                    industry-context search per *industry* through ``ctx.memo`` (the
                    scenario's industry cache); 100 calls/min, $0.01 a call
``extract``         async; AI extraction of size, industry, revenue, tech stack
                    (``POST /extract``, ~1.6K tokens); $0.01 per 1K tokens
``contacts``        async (``ctx.ahttp``); one decision-maker search (``GET /contacts``,
                    50 calls/min, $0.01) and an AI pass over the contacts (~1.5K tokens)
``verify_emails``   batched (``batch_size=100``): the chunk's addresses in calls of up
                    to 100 (``POST /verify``); $0.02 a call
``compile_record``  local: primary contact, verified e-mail, a lead score
==================  ===================================================================

Every step retries transient errors 3 times with exponential backoff (1, 2, 4 s of
scenario time) and honours ``Retry-After`` by pausing the whole step; the run
retries an item 3 more times from the step it failed in, then skips it into the
dead-letter list (``on_error="skip"``). Every request a step makes is counted as a
call (``ctx.cost(calls=...)``) and billed (refused ones too, as a pessimistic budget
would), so each service step's calls in the store equal the requests the services
answered for it (batchkit counts one call per invocation of a step that counts none:
``compile_record``, and a search refused for want of a domain).

**Time scaling.** Everything that takes time is divided by ``speed``
(``DEMO_SPEED`` = 15): **1 demo second = 15 scenario seconds; 4 demo seconds = 1
scenario minute; 1 demo minute = 15 scenario minutes.** The services' limits are
the scenario's per-minute limits over a window of ``60 / speed`` seconds (100 web
searches and 50 contact searches per 4 s); latencies are the scenario's / 15 (web
search 2-4 s → 0.13-0.27 s, AI 8-14 s → 0.53-0.93 s, contact search 2-4 s,
verification 3-5 s a call); so are backoffs, ``Retry-After`` and the 8-hour
deadline (32 min here). Done one by one, an item takes about 43 scenario seconds
(the scenario says ~45 s: an uncached industry search, the company search, two AI
calls, a contact search and ~3 addresses verified one call each).

Measured on a 2-core machine: the 500 companies take ~82 s here, i.e. ~20 scenario
minutes (the scenario projects ~15 min with 5 workers), using ~15 s of CPU: the rate
limits bind, not the CPU. Windows of 4 s peak at 83 of 100 web searches and 49 of
50 contact searches. The workers move through the steps of their chunks nearly in
step (all search, then all look up contacts), so each limit binds while its step
runs and the two are used one after the other: the average is about half of each
limit, where overlapping them would approach the 10.4 scenario minutes that 500
contact searches at 48/min take on their own. Raise ``speed`` and the same run
takes proportionally less (``speed=30``: ~43 s) until the CPU becomes the limit.

The steps pace themselves a little under the services' limits so that no window
the service counts ever holds more than its limit: ``search`` at 85/min (the
industry look-ups the memo makes, at most one per industry, go to the same
endpoint outside the step's pacing) and ``contacts`` at 48/min (room for request
jitter; the limiter spaces calls evenly, burst 1).

The services misbehave like real ones: 3% of requests answer 503, 1% of web and
contact searches answer 429 with ``Retry-After: 5 s`` (scenario time), about 2% of
companies are unknown to the search (404, permanent), and 8 rows of the file have no
usable domain (``bk.Permanent`` before any call). Run the demo again: known rows are
not added twice and nothing is left to run, so no service is called.

Example:
    >>> DEMO_SPEED
    15.0
    >>> with start_services(speed=1000) as svc:          # a fast copy of the services
    ...     pipe = lead_pipeline(svc.url, speed=1000)
    ...     out = pipe({"company": "Acme Tools", "domain": "acmetools.de", "country": "DE",
    ...                 "industry": "Manufacturing", "employees": 120, "founded": 1990})
    ...     pipe.close()
    >>> out["site"], out["primary_email"] is not None, out["cost_usd"] > 0
    ('acme-tools.example', True, True)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import polars as pl

from ._batch import Batch
from ._errors import ConfigError, Permanent, Transient
from ._http import ClientFactory
from ._pipeline import Pipeline, pipeline
from ._plan import Projection
from ._policy import RetryPolicy
from ._ratelimit import RateLimit
from ._report import RunReport
from ._simservice import SimService, _unit
from ._steps import StepContext, step
from ._worker import current_item

__all__ = ["BATCH", "DEMO_SPEED", "add_arguments", "enrich", "is_unknown", "lead_pipeline",
           "main", "plan", "run", "run_args", "start_services", "usable_domain"]

#: time compression of the scenario: 1 demo second = 15 scenario seconds (4 s = 1 minute)
DEMO_SPEED: float = 15.0
#: the batch name in the demo's store
BATCH = "lead_enrichment"

# -- the scenario's figures, in scenario time --------------------------------------------
_SEARCH_PER_MIN = 100      # web search limit
_CONTACTS_PER_MIN = 50     # contact search limit
_SEARCH_PACE = 85          # what `search` sends: 100 minus room for the memo's look-ups
_CONTACTS_PACE = 48        # what `contacts` sends: a little under 50 for request jitter
_VERIFY_MAX = 100          # addresses per verification call
_LATENCY = {"/search": (2.0, 4.0), "/extract": (8.0, 14.0), "/contacts": (2.0, 4.0),
            "/verify": (3.0, 5.0)}  # seconds per call
_TRANSIENT_SHARE = 0.03    # 503s, every endpoint
_THROTTLE_SHARE = {"/search": 0.01, "/contacts": 0.01}  # 429 + Retry-After under the limit
_THROTTLE_AFTER = 5.0      # seconds of Retry-After on those
_UNKNOWN_SHARE = 0.02      # companies the search does not know (404)
_SEARCH_USD = 0.01         # per web or contact search call
_AI_USD_PER_1K = 0.01      # per 1K tokens
_VERIFY_USD = 0.02         # per verification call
_BACKOFF = 1.0             # first retry after 1 s, then 2, 4
_HTTP_TIMEOUT = 60.0       # seconds a call may take
_DEADLINE = 8 * 3600.0     # the daily batch must finish within 8 hours
_BUDGET_USD = 100.0        # per day
_CHUNK = 50
_WORKERS = 5
_PER_WORKER = 10           # AI calls / contact searches in flight per worker (async steps)
_CONTACTS_KEPT = 3         # addresses verified per company (the scenario's ~3)
_BAD_DOMAINS = frozenset({"", "-", "n/a", "na", "none", "null", "tbd", "unknown"})
_SIZES = ("1-10", "11-50", "51-200", "201-500", "501-1000", "1001-5000", "5000+")
_COMPANIES = "data/companies.csv"


def _check_speed(speed: Any) -> float:
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not \
            0 < speed < math.inf:
        raise ConfigError(f"speed must be a number > 0 (scenario seconds per demo second; "
                          f"{DEMO_SPEED:g} by default), got {speed!r}")
    return float(speed)


def is_unknown(company: str) -> bool:
    """Whether the simulated web search answers 404 for this company (~2%, by its name).

    Example:
        >>> is_unknown("Acme Tools")
        False
    """
    return _unit("unknown-company", company) < _UNKNOWN_SHARE


def _industry_query(industry: str) -> str:
    return f"{industry} industry outlook"


def _known(query: str) -> bool:
    return query.endswith(" industry outlook") or not is_unknown(query)


def usable_domain(domain: str | None) -> bool:
    """Whether a row's ``domain`` can identify the company (the rows that cannot fail).

    Example:
        >>> usable_domain("acmetools.de"), usable_domain("tbd"), usable_domain(None)
        (True, False, False)
    """
    d = (domain or "").strip().lower()
    return d not in _BAD_DOMAINS and "." in d


def start_services(*, speed: float = DEMO_SPEED, seed: int = 0, **overrides: Any) -> SimService:
    """Start the scenario's simulated services on 127.0.0.1, with time divided by ``speed``.

    Web search 100 calls and contact search 50 calls per ``60 / speed`` seconds (the
    scenario's per-minute limits; over them: 429 with ``Retry-After``), e-mail
    verification up to 100 addresses per call, AI extraction answering its token
    count, the scenario's latencies / ``speed``, 3% transient 503s, 1% of searches
    throttled (429, ``Retry-After`` 5 s / ``speed``), 404 for unknown companies
    (``is_unknown``). ``overrides`` replace any ``SimService`` argument. Use it as a
    context manager (or call ``close()``).

    Example:
        >>> import httpx
        >>> with start_services(speed=1000) as svc:
        ...     httpx.get(svc.url + "/search", params={"q": "Acme Tools"}).json()["domain"]
        'acme-tools.example'
    """
    speed = _check_speed(speed)
    minute = 60.0 / speed
    options: dict[str, Any] = {
        "latency": {e: (lo / speed, hi / speed) for e, (lo, hi) in _LATENCY.items()},
        "rate_limit": {"/search": (_SEARCH_PER_MIN, minute),
                       "/contacts": (_CONTACTS_PER_MIN, minute)},
        "transient_share": _TRANSIENT_SHARE,
        "throttle_share": _THROTTLE_SHARE,
        "throttle_retry_after": _THROTTLE_AFTER / speed,
        "known": _known,
        "batch_max": _VERIFY_MAX,
        "seed": seed,
    }
    options.update(overrides)
    return SimService(**options)


def lead_pipeline(base_url: str, *, speed: float = DEMO_SPEED) -> Pipeline:
    """The scenario's five steps against the services at ``base_url``, limits scaled by ``speed``.

    ``search`` (85 calls per ``60 / speed`` s, $0.01 a call, the industry context in
    ``ctx.memo``), ``extract`` (async AI, $0.01 per 1K tokens), ``contacts`` (async,
    48 calls per ``60 / speed`` s), ``verify_emails`` (``batch_size=100``, $0.02 a call)
    and ``compile_record``. Each step retries transient errors 3 times (backoff 1, 2,
    4 s / ``speed``). Call ``close()`` on the pipeline when done (pooled clients).

    Example:
        >>> lead_pipeline("http://127.0.0.1:9")
        pipeline(search, extract, contacts, verify_emails, compile_record)
    """
    speed = _check_speed(speed)
    minute = 60.0 / speed
    retry = RetryPolicy(retries=3, backoff=_BACKOFF / speed, max_backoff=300.0 / speed)
    http = ClientFactory(concurrency=_PER_WORKER + 6, base_url=base_url,
                         timeout=max(1.0, _HTTP_TIMEOUT / speed))

    @step("search", rate_limit=RateLimit(_SEARCH_PACE, per=minute), retries=retry, http=http)
    def search(row: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        if not usable_domain(row["domain"]):
            raise Permanent(f"no usable domain for {row['company']!r}: "
                            f"{row['domain'] or ''!r}; fix it in the input file")

        def industry_context() -> str:  # one search per industry, then from the memo
            r = ctx.http.get("/search", params={"q": _industry_query(row["industry"])})
            ctx.cost(calls=1, usd=_SEARCH_USD)
            r.raise_for_status()
            return str(r.json()["snippet"])

        notes = ctx.memo(("industry", row["industry"]), industry_context)
        r = ctx.http.get("/search", params={"q": row["company"]})
        ctx.cost(calls=1, usd=_SEARCH_USD)
        r.raise_for_status()  # 404: unknown company, permanent; 429/503: retried
        hit = r.json()
        return {"site": hit["domain"], "snippet": hit["snippet"], "industry_notes": notes}

    @step("extract", concurrency=_PER_WORKER, retries=retry, http=http)
    async def extract(row: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        prompt = (f"Company: {row['company']} ({row['site']})\n{row['snippet']}\n"
                  "Return size, industry, revenue and tech stack as JSON.")
        r = await ctx.ahttp.post("/extract", json={"text": prompt})
        ctx.cost(calls=1)
        r.raise_for_status()
        out = r.json()
        ctx.cost(tokens=out["tokens"], usd=out["tokens"] / 1000 * _AI_USD_PER_1K)
        return {"size": out["size"], "industry_found": out["industry"],
                "revenue_usd": out["revenue"], "tech_stack": out["tech_stack"]}

    @step("contacts", rate_limit=RateLimit(_CONTACTS_PACE, per=minute),
          concurrency=_PER_WORKER, retries=retry, http=http)
    async def contacts(row: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        r = await ctx.ahttp.get("/contacts", params={"domain": row["site"]})
        ctx.cost(calls=1, usd=_SEARCH_USD)
        r.raise_for_status()
        people = [{"name": p["name"], "title": p["title"], "email": p["email"]}
                  for p in r.json()["contacts"][:_CONTACTS_KEPT]]
        text = "Extract name, title and e-mail of each decision-maker:\n" + "\n".join(
            f"{p['name']}, {p['title']} <{p['email']}>" for p in people)
        r = await ctx.ahttp.post("/extract", json={"text": text})
        ctx.cost(calls=1)
        r.raise_for_status()
        tokens = r.json()["tokens"]
        ctx.cost(tokens=tokens, usd=tokens / 1000 * _AI_USD_PER_1K)
        return {"contacts": people}

    @step("verify_emails", batch_size=100, retries=retry, cost_per_call=_VERIFY_USD, http=http)
    def verify_emails(rows: list[dict[str, Any]], ctx: StepContext) -> list[dict[str, Any]]:
        emails = sorted({p["email"] for row in rows for p in row["contacts"]})
        valid: dict[str, bool] = {}
        for i in range(0, len(emails), _VERIFY_MAX):
            r = ctx.http.post("/verify", json={"emails": emails[i:i + _VERIFY_MAX]})
            ctx.cost(calls=1)
            r.raise_for_status()
            valid.update((v["email"], bool(v["valid"])) for v in r.json()["results"])
        return [{"verified_emails": [p["email"] for p in row["contacts"]
                                     if valid.get(p["email"])]} for row in rows]

    @step("compile_record")
    def compile_record(row: dict[str, Any]) -> dict[str, Any]:
        verified = set(row["verified_emails"])
        primary = next((p for p in row["contacts"] if p["email"] in verified), None)
        size = _SIZES.index(row["size"]) if row["size"] in _SIZES else 0
        score = min(100, 8 * size + 10 * len(verified) + 3 * len(row["tech_stack"])
                    + (10 if row["industry_found"] == str(row["industry"]).lower() else 0))
        return {"primary_contact": primary["name"] if primary else None,
                "primary_title": primary["title"] if primary else None,
                "primary_email": primary["email"] if primary else None,
                "lead_score": score}

    return pipeline(search, extract, contacts, verify_emails, compile_record)


# -- the run ---------------------------------------------------------------------------


def _companies_file() -> Path:
    """``./data/companies.csv``, else the copy in the batchkit source tree."""
    here = Path(_COMPANIES)
    if here.is_file():
        return here
    shipped = Path(__file__).resolve().parent.parent / _COMPANIES
    if shipped.is_file():
        return shipped
    raise ConfigError(f"demo input {_COMPANIES!r} not found in {str(Path.cwd())!r} nor in the "
                      "batchkit source tree; run `batchkit demo` from the batchkit "
                      "repository root")


def _ensure_parent(path: str) -> None:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The services' counters of this run (services passed in may have served others)."""
    return {e: {k: v - before[e][k] for k, v in after[e].items()}
            for e in ("/search", "/extract", "/contacts", "/verify")}


def _stats_line(stats: dict[str, Any]) -> str:
    parts = []
    for endpoint in ("/search", "/extract", "/contacts", "/verify"):
        s = stats[endpoint]
        over = s["429"] - s["throttled"]
        extra = [f"{n} x {label}" for n, label in (
            (s["404"], "404"), (s["throttled"], "429 shedding load"),
            (over, "429 over the limit"), (s["503"], "503")) if n]
        if endpoint == "/verify" and s["requests"]:
            extra.insert(0, f"{s['items']:,} addresses")
        parts.append(f"{endpoint} {s['requests']:,}" + (f" ({', '.join(extra)})" if extra
                                                          else ""))
    return ", ".join(parts)


def _print_summary(batch: Batch, report: RunReport, calls: dict[str, Any], *, speed: float,
                   store: str, out: str, written: int, wall: float) -> None:
    print(report)
    counts = batch.counts()
    print("counts: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print(f"calls the services answered in this run: {_stats_line(calls)}")
    m = batch.metrics()
    per_step = ", ".join(f"{r['step']} ${r['usd']:,.2f}" for r in m.steps.iter_rows(named=True)
                         if r["usd"])
    per_done = f"${m.cost_per_done_usd:,.4f} per enriched company" \
        if m.cost_per_done_usd is not None else "no company enriched"
    print(f"cost so far: ${m.cost_usd:,.2f} in all ({per_step}); {per_done}; "
          f"{m.tokens:,} AI tokens; {m.calls:,} calls")
    clusters = batch.failures()
    if clusters.failed:
        print("top failure clusters (batch.failures()):")
        for c in clusters[:3]:
            print("  " + str(c).replace("\n", "\n  "))
    if report.processed:
        print(f"this run: {wall:.1f} s here = {wall * speed / 60:.1f} scenario minutes "
              f"at speed {speed:g} (the scenario projects ~15 min for 500 companies)")
    else:
        print("nothing left to run: every company is done or in the dead-letter list, and "
              "no service was called. `batchkit failed " + f"{store} {BATCH}` lists the "
              "failures.")
    print(f"files: store {store} (batch {BATCH!r}); {written:,} enriched rows in {out}")


def run(*, store: str = "data/demo.duckdb", out: str = "data/leads_enriched.parquet",
        workers: int = _WORKERS, limit: int | None = None, speed: float = DEMO_SPEED,
        progress: bool | str = "auto", services: SimService | None = None) -> RunReport:
    """Run the scenario: add the companies, enrich them, print what happened, export.

    Adds the first ``limit`` companies (all 500 by default) of ``data/companies.csv``
    to batch ``lead_enrichment`` in ``store`` (known ones are skipped), runs
    ``lead_pipeline`` over every pending row in chunks of 50 (fewer rows: one chunk per
    worker) on ``workers`` threads with a $100 budget and the 8-hour deadline scaled,
    prints the report, counts, service calls, cost, top failure clusters and where the
    files are, and exports the enriched rows to ``out``. ``services``: run against
    these (started with the same ``speed``) instead of starting new ones.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> r = run(store=os.path.join(d, "s.duckdb"), out=os.path.join(d, "o.parquet"),
        ...         limit=5, speed=1000, progress=False)  # doctest: +ELLIPSIS
        lead enrichment: 5 companies from ...
        files: store ...s.duckdb (batch 'lead_enrichment'); 5 enriched rows in ...o.parquet
        >>> r.processed
        5
    """
    speed = _check_speed(speed)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ConfigError(f"limit must be a whole number >= 1 or None (all), got {limit!r}")
    source = _companies_file()
    companies = pl.read_csv(source)
    if limit is not None:
        companies = companies.head(limit)
    _ensure_parent(store)
    _ensure_parent(out)
    with ExitStack() as stack:
        svc = services if services is not None else stack.enter_context(
            start_services(speed=speed))
        pipe = lead_pipeline(svc.url, speed=speed)
        stack.callback(pipe.close)
        batch = stack.enter_context(Batch(BATCH, store=store))
        new = batch.add(companies, key="company")
        print(f"lead enrichment: {companies.height:,} companies from {source} -> batch "
              f"{BATCH!r} in {store}: {new:,} new ({companies.height - new:,} already known)")
        print(f"services at {svc.url}, scenario time / {speed:g}: web search "
              f"{_SEARCH_PER_MIN} and contact search {_CONTACTS_PER_MIN} calls per "
              f"{60 / speed:g} s (= per scenario minute), verification <= {_VERIFY_MAX} "
              f"addresses per call")
        pending = batch.counts()["pending"]
        chunk = max(1, min(_CHUNK, math.ceil(pending / workers))) if pending else _CHUNK
        before = svc.stats()
        started = time.monotonic()
        report = batch.run(pipe, workers=workers, chunk_size=chunk, backend="threads",
                           retries=RetryPolicy(retries=3, backoff=_BACKOFF / speed,
                                               max_backoff=300.0 / speed),
                           on_error="skip", progress=progress, budget=_BUDGET_USD,
                           deadline=_DEADLINE / speed)
        wall = time.monotonic() - started
        written = batch.export(out)
        _print_summary(batch, report, _delta(before, svc.stats()), speed=speed, store=store,
                       out=out, written=written, wall=wall)
    return report


def plan(*, sample: int = 20, volume: int | None = None, workers: int | None = None,
         speed: float = DEMO_SPEED, limit: int | None = None, store: str = ":memory:",
         deadline: float | str | None = None, budget: float | None = None,
         chunk_size: int | None = None) -> Projection:
    """Plan the scenario from a measured sample: ``batch.plan`` on the demo's pipeline.

    Starts the services (time divided by ``speed``), adds the first ``limit`` companies
    (all 500 by default) to batch ``lead_enrichment`` in ``store`` (in memory unless
    given: nothing is kept), runs ``sample`` of them through ``lead_pipeline`` with the
    demo's retries, and projects ``volume`` items (default: the batch) against the
    scenario's 8-hour deadline and $100 budget, both scaled like the demo's time, unless
    ``deadline`` / ``budget`` are given. Times in the projection are demo seconds
    (multiply by ``speed`` for scenario seconds). ``batchkit plan --demo`` prints its
    ``report()``.

    Example:
        >>> p = plan(sample=5, limit=20, speed=1000, workers=2)
        >>> p.sample.items, p.volume, p.workers
        (5, 20, 2)
    """
    speed = _check_speed(speed)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ConfigError(f"limit must be a whole number >= 1 or None (all), got {limit!r}")
    companies = pl.read_csv(_companies_file())
    if limit is not None:
        companies = companies.head(limit)
    if store != ":memory:":
        _ensure_parent(store)
    retry = RetryPolicy(retries=3, backoff=_BACKOFF / speed, max_backoff=300.0 / speed)
    with start_services(speed=speed) as svc, Batch(BATCH, store=store) as batch:
        pipe = lead_pipeline(svc.url, speed=speed)
        try:
            batch.add(companies, key="company")
            return batch.plan(pipe, sample=sample, volume=volume,
                              deadline=_DEADLINE / speed if deadline is None else deadline,
                              budget=_BUDGET_USD if budget is None else budget,
                              workers=workers, retries=retry, chunk_size=chunk_size,
                              progress=False)
        finally:
            pipe.close()


# -- command line ------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser`` (shared by ``batchkit demo`` and ``main``)."""
    parser.add_argument("--store", default="data/demo.duckdb", metavar="STORE",
                        help="the DuckDB store (default: %(default)s)")
    parser.add_argument("--out", default="data/leads_enriched.parquet", metavar="OUT",
                        help="where the enriched rows go (default: %(default)s)")
    parser.add_argument("--workers", type=_positive_int, default=_WORKERS, metavar="N",
                        help="worker threads (default: %(default)s, as in the scenario)")
    parser.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                        help="only the first N companies (default: all 500)")
    parser.add_argument("--speed", type=_positive_float, default=DEMO_SPEED, metavar="X",
                        help="scenario seconds per demo second (default: %(default)g: "
                             "4 s here = 1 scenario minute)")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                        default="auto", help="no progress bar")


def run_args(args: argparse.Namespace) -> int:
    """Run the demo with parsed options (``batchkit demo``); return the exit code."""
    run(store=args.store, out=args.out, workers=args.workers, limit=args.limit,
        speed=args.speed, progress=args.progress)
    return 0


def main(argv: list[str] | None = None) -> None:
    """``python -m batchkit.demo [options]``: the same as ``batchkit demo [options]``."""
    from ._cli import main as cli_main

    code = cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])
    if code:
        raise SystemExit(code)


# -- a plain row function (no services) ---------------------------------------------------
# Kept for notebooks/01_batch_engine.ipynb and the README's `batchkit run` example.

_REGIONS = {
    "AMER": {"US", "CA", "MX", "BR", "AR", "CL", "CO"},
    "APAC": {"IN", "JP", "SG", "AU", "KR", "NZ", "CN", "ID"},
}
_INDUSTRY_WEIGHT = {"Software": 30, "Finance": 25, "Healthcare": 20, "Energy": 15,
                    "Logistics": 12, "Manufacturing": 10, "Consulting": 10, "Media": 8,
                    "Retail": 6, "Education": 5}
_TRANSIENT_PER_MILLE = 30  # rows whose first attempt fails with a transient error


def _size_band(employees: int) -> str:
    for limit, band in ((10, "micro"), (50, "small"), (250, "medium"), (1000, "large")):
        if employees <= limit:
            return band
    return "enterprise"


def _region(country: str) -> str:
    for region, countries in _REGIONS.items():
        if country in countries:
            return region
    return "EMEA"


def enrich(row: dict[str, Any]) -> dict[str, Any]:
    """A plain one-row enricher without services (notebook 01, ``batchkit run`` examples).

    Returns ``size_band``, ``region``, ``score`` (0-100), ``email_guess`` and
    ``age_years``. Raises ``bk.Permanent`` when the row has no usable domain and
    ``bk.Transient`` on the first attempt of about 3% of rows.

    Example:
        >>> row = {"company": "Acme Tools", "domain": "acmetools.de", "country": "DE",
        ...        "industry": "Manufacturing", "employees": 120, "founded": 1990}
        >>> out = enrich(row)
        >>> out["size_band"], out["region"], out["email_guess"]
        ('medium', 'EMEA', 'info@acmetools.de')
    """
    h = zlib.crc32(row["company"].encode())
    time.sleep((2 + (h % 3000) / 1000) / 1000)  # 2-5 ms of "network"
    domain = (row.get("domain") or "").strip().lower()
    if "." not in domain:
        raise Permanent(f"no usable domain for company {row['company']!r}: "
                        f"{row.get('domain') or ''!r}")
    item = current_item()
    attempt = item.attempt if item is not None else 1
    if attempt <= 1 and (h >> 12) % 1000 < _TRANSIENT_PER_MILLE:
        raise Transient(f"enrichment API busy for {domain} (HTTP 503)", retry_after=0.1)
    employees = int(row.get("employees") or 0)
    score = min(100, _INDUSTRY_WEIGHT.get(row.get("industry") or "", 0)
                + min(40, employees // 25) + (h >> 20) % 31)
    return {
        "size_band": _size_band(employees),
        "region": _region(row.get("country") or ""),
        "score": score,
        "email_guess": f"{'info' if h % 2 else 'hello'}@{domain}"
        if employees >= 10 else f"contact@{domain}",
        "age_years": 2026 - int(row["founded"]) if row.get("founded") else None,
    }


if __name__ == "__main__":  # pragma: no cover - `python -m batchkit.demo`
    main()
