"""batch.plan: calibration from an attempt log, the sample run, planning from earlier runs,
argument checks before anything runs, limits in the recommendations, the report, and
projections that come true on the lead-enrichment demo."""

from __future__ import annotations

import math
import re
import threading
import time
from datetime import datetime, timedelta

import polars as pl
import pytest

import batchkit as bk
from batchkit import demo
from batchkit._batchplan import (
    _pick,
    _sample_chunk,
    plan_from_log,
    profiles_from_log,
    remaining_projection,
    step_limits,
)
from batchkit._calibrate import pooled_retry_rates
from batchkit._http import ClientFactory
from batchkit._plan import project

T0 = datetime(2026, 3, 1, 9, 0, 0)
HTTP = ClientFactory(base_url="http://127.0.0.1:9")  # declared, never called: marks I/O steps


def _search(row: dict) -> dict:
    return {"hit": row["n"]}


async def _ask(row: dict) -> dict:
    return {"answer": row["n"] * 2}


def _verify(rows: list[dict]) -> list[dict]:
    return [{"ok": True} for _ in rows]


def three_steps() -> bk.Pipeline:
    """search (sync, 1/s, I/O), ask (async, 4 per worker, I/O), verify (batched by 10)."""
    return bk.pipeline(
        bk.step("search", rate_limit="1/s", http=HTTP)(_search),
        bk.step("ask", concurrency=4, http=HTTP)(_ask),
        bk.step("verify", batch_size=10, cost_per_call=0.02)(_verify))


def synthetic_log() -> pl.DataFrame:
    """Four items of one run through the three steps, with limiter waits and a retry."""
    rows = [  # _id, step, seconds after T0, duration, usd, tokens, logged calls, tries
        # all four arrive at once: the 1/s limiter lets them go at 0, 1, 2, 3 s
        (1, "search", 0, 0.5, 0.01, 0, 1, 1),
        (2, "search", 0, 1.5, 0.01, 0, 1, 1),
        (3, "search", 0, 2.5, 0.01, 0, 1, 1),
        (4, "search", 0, 3.6, 0.02, 0, 2, 2),  # an in-step retry: 2 tries, 0.3 s each
        (1, "ask", 4, 2.0, 0.03, 300, 1, 1),
        (2, "ask", 4, 2.0, 0.03, 300, 1, 1),
        (3, "ask", 4, 3.0, 0.03, 300, 1, 1),
        (4, "ask", 4, 3.0, 0.03, 300, 1, 1),
        # one request for the four rows: its 1 s split evenly, calls on the first row
        (1, "verify", 8, 0.25, 0.005, 0, 1, 1),
        (2, "verify", 8, 0.25, 0.005, 0, 0, 1),
        (3, "verify", 8, 0.25, 0.005, 0, 0, 1),
        (4, "verify", 8, 0.25, 0.005, 0, 0, 1),
    ]
    cols = ["_id", "step", "t", "duration_s", "usd", "tokens", "calls", "tries"]
    frame = pl.DataFrame(rows, schema=cols, orient="row")
    return frame.with_columns(
        (pl.lit(T0) + pl.duration(seconds=pl.col("t"))).alias("started_at"),
        attempt=pl.lit(1, pl.Int32), tries=pl.col("tries").cast(pl.Int32),
        run_id=pl.lit("r1"), outcome=pl.lit("done"), error_type=pl.lit(None, pl.String),
        error_message=pl.lit(None, pl.String)).drop("t")


# -- calibration from a synthetic attempt log ----------------------------------------------

def test_profiles_from_a_synthetic_log_have_exact_figures():
    """Limiter waits are taken out, a batched request counts once, async slots and limits
    come from the steps, and retry rates are pooled over the steps that call services."""
    fn = three_steps()
    names = tuple(s.name for s in fn.steps)
    search, ask, verify = profiles_from_log(synthetic_log(), step_limits(fn), name="x",
                                            steps=names, external={"search", "ask"})
    # search: 0.5, 1.5, 2.5, 3.6 s less the waits 0, 1, 2, 3 s: 0.5 s a call, and the
    # retried row's 0.6 s over its 2 tries
    assert search.latency == pytest.approx(0.5) and search.latency_p95 == pytest.approx(0.5)
    assert str(search.rate) == "1/s" and search.calls == 1.0
    assert search.cost == pytest.approx(0.05 / 5)  # $0.05 over 5 tries
    # pooled: 1 retry in 9 calls of search and ask; a 1-call try then retries 1/8 times;
    # each step's own rate counts as much as 4 of the 20 items the prior weighs
    assert search.retry_rate == pytest.approx((1 + 20 / 8) / 24)
    assert ask.retry_rate == pytest.approx((0 + 20 / 8) / 24)
    assert ask.per_worker == 4 and ask.concurrency is None
    assert (ask.latency, ask.latency_p95) == (2.5, pytest.approx(3.0))
    assert ask.tokens == 300 and ask.cost == pytest.approx(0.03)
    # verify: a call is a row, a request carries up to 10: $0.02 a request
    assert verify.batch_size == 10 and verify.calls == 1.0
    assert verify.latency == pytest.approx(1.0) and verify.retry_rate == 0.0
    assert verify.cost == 0.0 and verify.cost_per_request == pytest.approx(0.02)


def test_a_plan_from_the_log_is_the_projection_of_those_profiles():
    """plan_from_log projects the calibrated profiles; the sample's own volume gives back
    its spend, and the 1/s search limit sets the time once workers wait on it."""
    fn = three_steps()
    proj = plan_from_log(synthetic_log(), fn=fn, volume=4, workers=4, chunk_size=4)
    profiles = profiles_from_log(synthetic_log(), step_limits(fn, workers=4), name="x",
                                 steps=("search", "ask", "verify"),
                                 external={"search", "ask"})
    same = project(profiles, volume=4, workers=4, chunk_size=4)
    assert proj.seconds == pytest.approx(same.seconds)
    search = proj.table.row(0, named=True)
    assert search["limited_by"] == "rate_limit"
    # 4 x (1 + 3.5/24) searches at 1/s (a worker alone would need a quarter of that)
    assert search["seconds_per_item"] * 4 == pytest.approx(4 * (1 + 3.5 / 24))
    # spend: searches and asks at the pooled retry rates, one verification request
    expected = 4 * (0.01 * (1 + 3.5 / 24) + 0.03 * (1 + 2.5 / 24)) + 0.02
    assert proj.cost == pytest.approx(expected)


def test_pooled_retry_rates_leave_local_steps_alone():
    """Only the steps that call services are pooled; without two of them nothing is."""
    log = synthetic_log().rename({"calls": "logged"})
    pooled = pooled_retry_rates(log, calls="logged", steps={"search", "ask"})
    assert set(pooled) == {"search", "ask"}
    assert pooled_retry_rates(log, calls="logged", steps={"search"}) == {}


def test_memo_work_is_counted_once_not_per_item():
    """Rows that computed a ctx.memo value are scaled to the step's usual calls."""
    log = synthetic_log().filter(pl.col("step") == "ask").with_columns(
        calls=pl.Series([2, 1, 1, 1]), duration_s=pl.Series([4.0, 2.0, 2.0, 2.0]),
        usd=pl.Series([0.06, 0.03, 0.03, 0.03]))
    fn = bk.pipeline(bk.step("ask", concurrency=4)(_ask))
    (ask,) = profiles_from_log(log, step_limits(fn), name="x", steps=("ask",),
                               memo_misses={"ask": 1})
    assert ask.latency_p95 == pytest.approx(2.0) and ask.cost == pytest.approx(0.03)
    (raw,) = profiles_from_log(log, step_limits(fn), name="x", steps=("ask",))
    assert raw.latency_p95 == pytest.approx(3.7) and raw.cost == pytest.approx(0.0375)


def test_sample_chunks_give_every_worker_a_share_within_async_slots():
    """The sample runs in chunks of sample ÷ workers, never more than an async step's slots."""
    assert _sample_chunk(three_steps(), 20, 2) == 4  # ask keeps 4 in flight per worker
    assert _sample_chunk(three_steps(), 6, 3) == 2
    assert _sample_chunk(None, 20, 3) == 7


# -- the sample run --------------------------------------------------------------------------

class Recorder:
    """A one-row function that records the ids it ran (thread-safe); ``step``: the same as
    a step that costs $0.01 an item."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.lock = threading.Lock()
        self.step = bk.step("record", cost=0.01)(self.__call__)

    def __call__(self, row: dict) -> dict:
        with self.lock:
            self.seen.append(row["n"])
        return {"sq": row["n"] ** 2}


def test_the_sample_is_spread_over_the_batch_and_its_results_are_kept(make_batch, numbers):
    """sample=10 of 100 runs items 0, 10, ..., 90; they end done and the rest run once."""
    batch = make_batch()
    batch.add(numbers(100), key="n")
    fn = Recorder()
    plan = batch.plan(fn.step, sample=10, workers=2, progress=False)
    assert sorted(fn.seen) == list(range(0, 100, 10))
    assert batch.counts() == {"pending": 90, "running": 0, "done": 10, "failed": 0}
    assert sorted(batch.results()["sq"].to_list()) == [n * n for n in range(0, 100, 10)]
    s = plan.sample
    assert (s.items, s.done, s.failed, s.remaining, s.workers) == (10, 10, 0, 90, 2)
    assert s.run_ids == (s.report.run_id,) and s.cost == pytest.approx(0.1)
    assert plan.volume == 100 and plan.workers == 2 and plan.name == "items"
    assert plan.cost == pytest.approx(1.0)  # $0.01 an item, measured
    rest = remaining_projection(plan)
    assert rest is not None and rest.volume == 90
    batch.run(fn.step, workers=plan.workers, chunk_size=plan.chunk_size, progress=False)
    assert sorted(fn.seen) == list(range(100))  # the sample was not run again


def test_pick_spreads_ids_evenly():
    """_pick takes every (len / k)-th id, all of them when k covers the list."""
    assert _pick(list(range(1, 11)), 3) == [1, 4, 7]
    assert _pick([5, 6], 4) == [5, 6]


def test_sample_failures_are_measured(make_batch, numbers):
    """A permanent failure in the sample shows as the step's failure rate."""
    def fn(row):
        if row["n"] % 20 == 0:
            raise bk.Permanent("unknown")
        return {"ok": 1}

    batch = make_batch()
    batch.add(numbers(100), key="n")
    plan = batch.plan(fn, sample=10, workers=1, progress=False)  # ids 0..90 by 10
    assert plan.sample.failed == 5 and plan.steps[0].failure_rate == pytest.approx(0.5)
    assert plan.expected_failed == pytest.approx(50.0)


# -- planning from earlier runs ---------------------------------------------------------------

def test_sample_zero_plans_from_earlier_runs_and_runs_nothing(make_batch, numbers):
    """sample=0 calibrates from every earlier run's attempt log; the function is not called."""
    batch = make_batch()
    batch.add(numbers(100), key="n")
    fn = Recorder()
    pipe = bk.pipeline(fn.step)
    first = batch.run(pipe, only=pl.col("n") < 20, workers=2, progress=False)
    second = batch.run(pipe, only=(pl.col("n") >= 20) & (pl.col("n") < 30), workers=2,
                       progress=False)
    calls = len(fn.seen)
    plan = batch.plan(pipe, sample=0, volume=1000, workers=4, progress=False)
    assert len(fn.seen) == calls
    s = plan.sample
    assert (s.items, s.seconds, s.workers, s.report) == (0, None, None, None)
    assert set(s.run_ids) == {first.run_id, second.run_id}
    assert s.logged_items == 30 and s.remaining == 70
    assert plan.volume == 1000 and plan.cost == pytest.approx(10.0)
    assert "attempt log of 2 earlier runs (30 items)" in s.describe()
    assert "nothing ran for this plan" in plan.report()


def test_sample_zero_plans_a_bare_step_from_its_item_rows(make_batch, numbers):
    """Earlier runs of a bare step (batch.run(step)) logged item rows: they are its rows."""
    batch = make_batch()
    batch.add(numbers(20), key="n")
    fn = Recorder()
    batch.run(fn.step, only=pl.col("n") < 10, progress=False)
    plan = batch.plan(fn.step, sample=0, progress=False)
    assert [p.name for p in plan.steps] == ["record"] and plan.sample.logged_items == 10


def test_plan_from_log_without_the_function_takes_every_logged_step():
    """Without the pipeline the log's steps are planned, with the limits passed in."""
    proj = plan_from_log(synthetic_log(), volume=100, workers=2,
                         limits={"search": {"rate_limit": "1/s"}})
    assert [p.name for p in proj.steps] == ["search", "ask", "verify"]
    assert str(proj.steps[0].rate) == "1/s" and proj.steps[1].per_worker == 1


# -- bad arguments fail before anything runs ------------------------------------------------

@pytest.mark.parametrize(("kwargs", "named"), [
    ({"sample": -1}, "-1"), ({"sample": 2.5}, "2.5"), ({"sample": "20"}, "'20'"),
    ({"volume": 0}, "volume"), ({"workers": 0}, "workers"), ({"workers": True}, "True"),
    ({"deadline": "soon"}, "'soon'"), ({"budget": 0}, "budget"), ({"budget": "lots"}, "lots"),
    ({"failure_tolerance": "ignore"}, "'ignore'"), ({"failure_tolerance": 1.5}, "1.5"),
    ({"chunk_size": 0}, "chunk_size"), ({"backend": "gpu"}, "gpu"),
    ({"retries": -1}, "-1"), ({"progress": "yes"}, "'yes'"),
    ({"bogus": 1}, "bogus"), ({"only": "failed"}, "only"), ({"on_error": "skip"}, "on_error"),
    ({"failure_tolerance": 0.1, "max_failure_rate": 0.2}, "not both"),
])
def test_bad_arguments_fail_before_anything_runs(make_batch, numbers, kwargs, named):
    """Each bad argument raises ConfigError naming it, and no item runs."""
    batch = make_batch()
    batch.add(numbers(30), key="n")
    fn = Recorder()
    with pytest.raises(bk.ConfigError) as err:
        batch.plan(fn, **{"sample": 5, "progress": False, **kwargs})
    assert named in str(err.value)
    assert fn.seen == [] and batch.attempts().height == 0
    assert batch.counts()["pending"] == 30


def test_plan_refuses_what_cannot_be_planned(make_batch, numbers):
    """No items, no pending items to sample, no log for sample=0, a function of no row."""
    empty = make_batch("empty")
    with pytest.raises(bk.ConfigError, match="has no items"):
        empty.plan(Recorder(), progress=False)
    batch = make_batch()
    batch.add(numbers(5), key="n")
    with pytest.raises(bk.ConfigError, match="no attempt log yet"):
        batch.plan(Recorder(), sample=0, progress=False)
    with pytest.raises(bk.ConfigError, match="takes no row"):
        batch.plan(lambda: {}, progress=False)
    batch.run(Recorder(), progress=False)
    with pytest.raises(bk.ConfigError, match="no pending items to sample"):
        batch.plan(Recorder(), sample=5, progress=False)


# -- recommendations respect every limit ---------------------------------------------------

def _limited() -> bk.Pipeline:
    """search at 200/s and ask at 100/s (async, 4 per worker): a fast sample, real limits."""
    search = bk.step("search", rate_limit="200/s")(_search)
    ask = bk.step("ask", rate_limit="100/s", concurrency=4)(_ask)
    return bk.pipeline(search, ask)


def test_recommendations_respect_every_rate_limit(make_batch, numbers):
    """However many workers, no step is projected faster than its rate limit, one after the
    other; a deadline the limits cannot meet names the tiers that would."""
    batch = make_batch()
    batch.add(numbers(40), key="n")
    plan = batch.plan(_limited(), sample=20, volume=10_000, deadline="5min", progress=False)
    floor = sum(10_000 * t.fig.requests / t.fig.profile.rate.per_second for t in plan._terms)
    assert floor >= 10_000 * (1 / 200 + 1 / 100)  # retries only add to it
    for workers in (1, 4, 64):
        at = plan.at(workers=workers)
        assert at.seconds >= floor * (1 - 1e-9)
        for t in at._terms:
            limit = 10_000 * t.fig.requests / t.fig.profile.rate.per_second
            assert t.seconds >= limit * (1 - 1e-9)
    rec = plan.recommend()
    assert rec.meets_deadline and rec.projection.seconds <= 300
    tight = project(list(plan.steps), volume=10_000, workers=8, deadline="60s").recommend()
    assert tight.meets_deadline is False
    tiers = [a for a in tight.actions if a.startswith("needs a higher tier on")]
    assert tiers and all(re.search(r"on (search|ask): (200|100)/s → \d+/s", a) for a in tiers)


# -- the architecture report ----------------------------------------------------------------

SECTIONS = ["## 1. Workflow analysis", "## 2. Chunking and parallelism",
            "## 3. State and resume", "## 4. Reliability", "## 5. Observability",
            "## 6. Projections and scaling"]


def test_report_of_a_measured_plan_has_every_section_with_numbers(make_batch, numbers):
    """The report of batch.plan: every section, figures in each, no placeholders, and what
    the plan was measured from."""
    batch = make_batch("leads")
    batch.add(numbers(60), key="n")
    plan = batch.plan(_limited(), sample=20, workers=2, deadline="1h", budget=5,
                      progress=False)
    text = plan.report()
    parts = re.split(r"^(## .*)$", text, flags=re.M)
    found = {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}
    assert list(found) == SECTIONS
    for heading, body in found.items():
        assert re.search(r"\d", body), heading
    for placeholder in ("TODO", "{", "}", "None", "nan", "inf", "XXX", "?"):
        assert placeholder not in text, placeholder
    assert text.startswith("# Batch plan: leads\n")
    assert "**Measured**: measured from a sample of 20 items run with 2 workers" in text
    assert "The 40 pending items take" in text
    assert "`leads__attempts`" in text and "search" in text and "ask" in text
    assert plan.bottleneck.why in text


# -- projections that come true -------------------------------------------------------------

SPEED = 40.0   # scenario seconds per second: fast, yet the GIL (CPU) is not the limit here
COMPANIES = 200


@pytest.mark.slow
def test_a_plan_from_20_items_predicts_the_demo_run_within_20_percent(tmp_path):
    """On the lead-enrichment demo, a plan from a 20-item sample predicts the measured time
    and cost of running the rest of the batch within ±20% (and the whole batch's cost)."""
    retry = bk.RetryPolicy(retries=3, backoff=1.0 / SPEED, max_backoff=300.0 / SPEED)
    companies = pl.read_csv(demo._companies_file()).head(COMPANIES)
    with demo.start_services(speed=SPEED) as svc:
        pipe = demo.lead_pipeline(svc.url, speed=SPEED)
        batch = bk.Batch(demo.BATCH, store=str(tmp_path / "demo.duckdb"))
        try:
            batch.add(companies, key="company")
            plan = batch.plan(pipe, sample=20, workers=5, retries=retry, progress=False)
            pending = batch.counts()["pending"]
            chunk = min(50, math.ceil(pending / 5))  # what demo.run uses
            predicted = plan.at(volume=pending, chunk_size=chunk)
            started = time.monotonic()
            report = batch.run(pipe, workers=5, chunk_size=chunk, retries=retry,
                               on_error="skip", progress=False)
            measured = time.monotonic() - started
        finally:
            batch.close()
            pipe.close()
    print(f"time: predicted {predicted.seconds:.2f} s, measured {measured:.2f} s; cost: "
          f"predicted ${predicted.cost:.3f}, measured ${report.cost_usd:.3f}")
    assert report.processed == pending == COMPANIES - 20
    assert abs(predicted.seconds - measured) / measured <= 0.20
    assert abs(predicted.cost - report.cost_usd) / report.cost_usd <= 0.20
    whole = plan.sample.cost + report.cost_usd
    assert abs(plan.cost - whole) / whole <= 0.20  # the plan's volume is the whole batch


def test_step_limits_of_processes_split_rates_and_keep_caps_per_process():
    """With N processes each paces itself to rate / N: the run's total stays the rate."""
    fn = bk.pipeline(bk.step("s", rate_limit="100/min", concurrency=3)(_search))
    threads = step_limits(fn, backend="threads", workers=4)["s"]
    procs = step_limits(fn, backend="processes", workers=4)["s"]
    assert str(threads["rate_limit"]) == str(procs["rate_limit"]) == "100/min"
    assert (threads["concurrency"], procs["concurrency"]) == (3, 12)
    assert step_limits(lambda row: {}) == {}


def test_timedelta_and_seconds_deadlines_are_the_same_plan(make_batch, numbers):
    """A deadline as a timedelta, seconds or a string gives the same verdicts."""
    batch = make_batch()
    batch.add(numbers(40), key="n")
    plan = batch.plan(Recorder(), sample=10, workers=2, deadline=timedelta(minutes=5),
                      progress=False)
    assert plan.deadline == 300.0 and plan.meets_deadline is True
    assert plan.at(volume=40).deadline == 300.0
