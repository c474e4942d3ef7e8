"""Plans: the projection model's arithmetic, bottlenecks, recommendations, calibration, report."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchkit._calibrate import calibrate
from batchkit._errors import ConfigError
from batchkit._plan import Projection, StepProfile, parse_duration, project
from batchkit._plan_advice import Recommendation

# -- the scenario's hand numbers (../shared/SCENARIOS.md, lead enrichment) --------------
# 45 s and $0.14 per item one by one: web search 3 calls (2 s each, $0.03), AI extraction
# 2 calls (8 s, 3K tokens, $0.03), contact search 2 calls (3 s, $0.02; the scenario's
# "5 search calls, $0.05" are these two steps), e-mail verification 3 addresses (5 s a
# request, $0.06) batched 100 per request, compile (2 s, local).
SEED = [
    StepProfile("web search", calls=3, latency=2.0, cost=0.03, rate_limit="100/min"),
    StepProfile("AI extraction", calls=2, latency=8.0, cost=0.03, tokens=3000),
    StepProfile("contact search", calls=2, latency=3.0, cost=0.02, rate_limit="50/min"),
    StepProfile("e-mail verification", calls=3, latency=5.0, cost=0.06, batch_size=100),
    StepProfile("compile", calls=1, latency=2.0),
]


def seed_projection(**kw) -> Projection:
    """The scenario's plan: 500 items, 5 workers, chunks of 50, 8 h, $100."""
    args = {"volume": 500, "workers": 5, "deadline": "8h", "budget": 100, "chunk_size": 50}
    return project(SEED, **{**args, **kw})


# -- validation ---------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("calls", -1), ("latency", -0.5), ("cost", -0.01), ("tokens", -3), ("retry_rate", -0.1),
    ("cache_hit_rate", 1.5), ("failure_rate", 2), ("calls", float("nan")), ("calls", "5"),
    ("concurrency", 0), ("batch_size", 0), ("concurrency", 2.5), ("latency_p95", 0.1),
    ("rate_limit", "100/day"), ("rate_limit", "lots"), ("rate_limit", -5),
])
def test_step_profile_rejects_bad_values_naming_them(field, value):
    """A bad profile field raises ConfigError naming the step, the field and the value."""
    with pytest.raises(ConfigError) as err:
        StepProfile("search", **{"latency": 0.5, field: value})
    text = str(err.value)
    assert "'search'" in text and (field in text or "rate limit" in text)
    assert str(value) in text or repr(value) in text


def test_step_profile_needs_a_name_and_parses_its_rate():
    """An empty name is refused; a rate string is stored as a RateLimit."""
    with pytest.raises(ConfigError, match="non-empty name"):
        StepProfile("")
    p = StepProfile("s", rate_limit="100/min", latency=0.6)
    assert p.rate is not None and p.rate.per_second == pytest.approx(100 / 60)
    assert p.p95 == 0.6 and StepProfile("t", latency=1, latency_p95=2).p95 == 2


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"volume": 0}, "volume"), ({"volume": -5}, "-5"), ({"volume": 2.5}, "2.5"),
    ({"volume": True}, "True"), ({"workers": 0}, "workers"), ({"chunk_size": 0}, "chunk_size"),
    ({"deadline": "8 parsecs"}, "parsecs"), ({"deadline": -1}, "-1"), ({"budget": -1}, "-1"),
    ({"budget": "lots"}, "lots"),
])
def test_project_rejects_bad_arguments_before_computing(kwargs, named):
    """project raises ConfigError naming the bad argument's value."""
    args = {"volume": 10, "workers": 1, **kwargs}
    with pytest.raises(ConfigError, match=re.escape(named)):
        project([StepProfile("a", latency=1.0)], **args)


def test_project_rejects_bad_step_lists():
    """Steps must be a non-empty list of StepProfile with unique names."""
    with pytest.raises(ConfigError, match="empty"):
        project([], volume=1, workers=1)
    with pytest.raises(ConfigError, match="'a'"):
        project([StepProfile("a"), StepProfile("a")], volume=1, workers=1)
    with pytest.raises(ConfigError, match="StepProfile"):
        project([{"name": "a"}], volume=1, workers=1)  # type: ignore[list-item]


@pytest.mark.parametrize(("text", "seconds"), [
    ("8h", 28800.0), ("30min", 1800.0), ("90s", 90.0), ("1h30min", 5400.0),
    ("1.5 h", 5400.0), ("2d", 172800.0), ("250ms", 0.25), ("45", 45.0), (90, 90.0),
    (2.5, 2.5), (timedelta(minutes=2), 120.0),
])
def test_parse_duration_reads_the_forms(text, seconds):
    """Durations read as seconds from strings with units, numbers and timedeltas."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "8 parsecs", "h", "", "8h fast", 0, -3, True,
                                 timedelta(0), float("inf")])
def test_parse_duration_rejects_the_rest(bad):
    """Anything else raises ConfigError naming the value."""
    with pytest.raises(ConfigError, match="deadline"):
        parse_duration(bad)


# -- the model's arithmetic ---------------------------------------------------------------

def test_worker_bound_time_and_cost():
    """Workers bind each step: its calls' time over the workers; the steps' times add up."""
    proj = project([StepProfile("a", calls=2, latency=0.5, cost=0.01),
                    StepProfile("b", calls=1, latency=2.0, cost=0.02)], volume=120, workers=3)
    # a: 2 x 0.5 s ÷ 3 workers = 1/3 s per item; b: 2 s ÷ 3 = 2/3 s; 1 s per item in all
    assert proj.work_per_item == 3.0
    assert proj.items_per_min == pytest.approx(60.0)
    assert proj.seconds == pytest.approx(120.0)
    assert proj.cost == pytest.approx(3.6) and proj.cost_per_item == pytest.approx(0.03)
    assert proj.calls == pytest.approx(360.0)
    assert proj.bottleneck.kind == "workers" and proj.bottleneck.step == "b"
    assert proj.bottleneck.why == "b: 3 workers ÷ 2 s of calls per item = 90 items/min"
    assert proj.bottleneck.share == pytest.approx(2 / 3)
    assert proj.table["limited_by"].to_list() == ["workers", "workers"]
    assert proj.table["bottleneck"].to_list() == [False, True]


def test_rate_bound_names_the_step_and_its_number():
    """A rate limit binds at rate ÷ calls per item; the table shows its rate-limited time."""
    proj = project([StepProfile("search", calls=3, latency=0.1, rate_limit="30/min")],
                   volume=50, workers=10)
    assert proj.bottleneck.kind == "rate_limit" and proj.bottleneck.step == "search"
    assert proj.bottleneck.why == "search: 30 calls/min ÷ 3 calls/item = 10 items/min"
    assert proj.seconds == pytest.approx(300.0)  # 50 items at 10/min
    row = proj.table.row(0, named=True)
    assert row["rate_items_per_min"] == pytest.approx(10.0)
    assert row["rate_limited_seconds"] == pytest.approx(300.0)  # 150 calls at 0.5/s
    assert row["rate_limit"] == "30/min" and row["bottleneck"] is True


def test_rate_limited_steps_take_their_turns():
    """Workers run a chunk step by step, so two rate-limited steps add up, not overlap."""
    steps = [StepProfile("search", latency=0.5, rate_limit="100/min"),
             StepProfile("contacts", latency=0.5, rate_limit="50/min")]
    proj = project(steps, volume=500, workers=20)
    # 0.6 s per item at 100/min, then 1.2 s at 50/min: 1.8 s an item, 900 s for 500
    assert proj.seconds == pytest.approx(900.0)
    assert proj.bottleneck.step == "contacts" and proj.bottleneck.share == pytest.approx(2 / 3)
    assert proj.table["seconds_per_item"].to_list() == [pytest.approx(0.6), pytest.approx(1.2)]


def test_concurrency_bound_uses_littles_law():
    """A concurrency cap binds at cap ÷ (calls x latency) per item."""
    proj = project([StepProfile("c", calls=2, latency=1.5, concurrency=2)], volume=80,
                   workers=10)
    assert proj.bottleneck.kind == "concurrency"
    assert proj.bottleneck.why == ("c: concurrency 2 ÷ (2 calls/item × 1.5 s/call) "
                                   "= 40 items/min")
    assert proj.seconds == pytest.approx(120.0)
    assert proj.table["concurrency_items_per_min"].to_list() == [pytest.approx(40.0)]


def test_concurrency_at_least_the_workers_never_slows_the_plan():
    """Workers run items one at a time, so a cap of W or more leaves the time as it is."""
    free = [StepProfile("c", calls=2, latency=1.5), StepProfile("d", latency=1.0)]
    capped = [replace(free[0], concurrency=4), free[1]]
    assert project(capped, volume=10, workers=4).seconds == \
        project(free, volume=10, workers=4).seconds == pytest.approx(10 * (3 + 1) / 4)
    assert project(capped, volume=10, workers=5).seconds > project(free, volume=10,
                                                                   workers=5).seconds


def test_async_steps_keep_calls_in_flight_per_worker():
    """per_worker calls in flight multiply the concurrency the workers bring."""
    ask = StepProfile("ask", latency=2.0, per_worker=10)
    proj = project([ask], volume=100, workers=5)
    assert proj.seconds == pytest.approx(4.0)  # 100 x 2 s ÷ (5 workers x 10)
    assert proj.bottleneck.why == ("ask: 5 workers × 10 in flight ÷ 2 s of calls per item "
                                   "= 1,500 items/min")
    assert proj.work_per_item == pytest.approx(0.2)


def test_chunk_rounds_leave_workers_idle_at_the_end():
    """With a chunk size, chunks go out in rounds: the last round's idle workers count."""
    proj = project([StepProfile("a", latency=1.0)], volume=10, workers=2, chunk_size=3)
    # 4 chunks (3, 3, 3, 1) in 2 rounds of 3 s each; the steady state would say 5 s
    assert proj.seconds == pytest.approx(6.0)
    assert proj.at(chunk_size=None).seconds == pytest.approx(5.0)
    assert project([StepProfile("a", latency=1.0)], volume=10, workers=4,
                   chunk_size=5).seconds == pytest.approx(5.0)  # only 2 chunks: 2 workers


def test_async_chunk_runs_in_waves_its_last_as_slow_as_the_slowest_call():
    """An async step runs a chunk's calls per_worker at a time; the last wave waits for the
    slowest, the k/(k+1) quantile between p50 and p95."""
    ask = StepProfile("ask", latency=2.0, latency_p95=4.0, per_worker=10)
    # 25 calls: 1.5 waves at p50 (2 s) and one at 2 + 2 x (10/11 - 0.5) / 0.45 s
    slowest = 2.0 + 2.0 * (10 / 11 - 0.5) / 0.45
    assert project([ask], volume=25, workers=1, chunk_size=25).seconds == \
        pytest.approx(1.5 * 2.0 + slowest)
    # 4 calls fit one wave: as slow as the slowest of 4
    assert project([ask], volume=4, workers=1, chunk_size=4).seconds == \
        pytest.approx(2.0 + 2.0 * (4 / 5 - 0.5) / 0.45)


def test_chunk_rounds_share_the_rate_limit_between_the_workers():
    """A round's rate-limited phase takes all its workers' calls at the limit's pace."""
    s = StepProfile("s", latency=0.5, rate_limit="60/min")
    # 5 chunks of 2 in one round: 10 calls at 1/s, while each worker needs only 1 s
    assert project([s], volume=10, workers=5, chunk_size=2).seconds == pytest.approx(10.0)
    # 3 rounds of 2 chunks of 2, the last with 2 items: 4 + 4 + 2 s
    assert project([s], volume=10, workers=2, chunk_size=2).seconds == pytest.approx(10.0)
    slow = replace(s, latency=3.0)  # now a worker's 2 calls (6 s) outlast the round's 4 s
    assert project([slow], volume=10, workers=2, chunk_size=2).seconds == pytest.approx(
        6.0 + 6.0 + 6.0)


def test_batched_step_divides_calls_by_batch_size_within_chunks():
    """Batching: calls ÷ batch size when batches are full; ceil per chunk with a chunk size."""
    verify = StepProfile("verify", calls=3, latency=2.0, batch_size=100, rate_limit="1/min")
    full = project([verify], volume=300, workers=1)
    assert full.table["effective_calls"][0] == pytest.approx(0.03)
    assert full.items_per_min == pytest.approx(1 / 0.03)
    assert full.calls == pytest.approx(9.0)  # 900 addresses in 9 requests
    chunked = project([verify], volume=300, workers=1, chunk_size=50)
    # a chunk of 50 items has 150 addresses: 2 requests, 0.04 per item, 2 min a chunk
    assert chunked.table["effective_calls"][0] == pytest.approx(0.04)
    assert chunked.seconds == pytest.approx(6 * 120)
    assert chunked.bottleneck.why == "verify: 1 calls/min ÷ 0.04 calls/item = 25 items/min"
    assert project([verify], volume=300, workers=1, chunk_size=100).calls \
        == pytest.approx(9.0)


def test_cache_hits_and_retries_scale_calls_cost_and_tokens():
    """Effective calls = calls x (1 - cache hits) x (1 + retries); cost and tokens alike."""
    p = StepProfile("s", calls=4, latency=1.0, cost=0.1, tokens=1000, cache_hit_rate=0.25,
                    retry_rate=0.5)
    proj = project([p], volume=10, workers=1)
    assert proj.table["effective_calls"][0] == pytest.approx(4.5)
    assert proj.work_per_item == pytest.approx(4.5)
    assert proj.cost_per_item == pytest.approx(0.1125)
    assert proj.tokens == pytest.approx(11250.0)
    assert proj.seconds == pytest.approx(45.0)


def test_failures_thin_the_later_steps():
    """Items failing in a step pay for it but skip later steps (reach = product of 1 - f)."""
    proj = project([StepProfile("a", latency=1.0, cost=0.1, failure_rate=0.2),
                    StepProfile("b", latency=1.0, cost=0.1)], volume=100, workers=1)
    assert proj.table["reach"].to_list() == [1.0, pytest.approx(0.8)]
    assert proj.cost == pytest.approx(18.0)
    assert proj.work_per_item == pytest.approx(1.8)
    assert proj.expected_done == pytest.approx(80.0)
    assert proj.expected_failed == pytest.approx(20.0)


def test_p95_time_takes_every_call_at_its_p95():
    """seconds_p95 uses p95 latencies for workers and caps; rate limits are unchanged."""
    steps = [StepProfile("a", latency=1.0, latency_p95=3.0), StepProfile("b", latency=2.0)]
    proj = project(steps, volume=10, workers=1)
    assert (proj.seconds, proj.seconds_p95) == (pytest.approx(30.0), pytest.approx(50.0))
    limited = project([replace(steps[0], rate_limit="6/min")], volume=10, workers=5)
    assert limited.seconds == limited.seconds_p95 == pytest.approx(100.0)


def test_deadline_and_budget_verdicts():
    """meets_deadline / meets_budget compare time and cost; None when not given."""
    steps = [StepProfile("a", latency=1.0, cost=0.5)]
    assert project(steps, volume=60, workers=1).meets_deadline is None
    proj = project(steps, volume=60, workers=1, deadline="1min", budget=30)
    assert proj.meets_deadline is True and proj.meets_budget is True
    tight = project(steps, volume=61, workers=1, deadline=60, budget=30)
    assert tight.meets_deadline is False and tight.meets_budget is False


def test_at_is_a_what_if_on_volume_workers_and_chunk_size():
    """at() projects the same steps at another volume, worker count or chunk size."""
    proj = project([StepProfile("a", latency=2.0, cost=0.1)], volume=30, workers=1)
    assert proj.at(workers=3).seconds == pytest.approx(20.0)
    assert proj.at(volume=60).cost == pytest.approx(6.0)
    assert proj.at(workers=4, chunk_size=10).seconds == pytest.approx(20.0)  # 3 chunks
    assert proj.at(workers=4, chunk_size=10).at(volume=40).chunk_size == 10
    with pytest.raises(ConfigError, match="workers"):
        proj.at(workers=0)
    with pytest.raises(ConfigError, match="chunk_size"):
        proj.at(chunk_size=0)
    timed = proj.at(deadline="1min", budget=2)
    assert (timed.deadline, timed.meets_deadline, timed.meets_budget) == (60.0, True, False)
    assert timed.at(volume=10).budget == 2 and timed.at(deadline=None).deadline is None
    with pytest.raises(ConfigError, match="deadline"):
        proj.at(deadline="soon")
    with pytest.raises(ConfigError, match="budget"):
        proj.at(budget=-1)


def test_steps_without_time_have_no_bottleneck():
    """Fully cached steps take no time: throughput is unbounded and the time zero."""
    proj = project([StepProfile("a", latency=1.0, cache_hit_rate=1.0)], volume=10, workers=1)
    assert proj.bottleneck.kind == "none" and proj.seconds == 0.0
    assert proj.recommend().workers == 1


# -- bottlenecks and where the limits bind ------------------------------------------------

def test_bottleneck_moves_from_workers_to_the_rate_limit_as_workers_grow():
    """With few workers the unlimited step binds; with more, the rate-limited one."""
    steps = [StepProfile("extract", latency=24.0),
             StepProfile("contacts", calls=2, latency=3.0, rate_limit="50/min")]
    proj = project(steps, volume=500, workers=5)
    # extract: 24 s ÷ W; contacts: 2.4 s per item at 50/min once W >= 6 s ÷ 2.4 s = 2.5
    assert proj.saturation_workers == 3
    assert proj.bottleneck.step == "extract" and proj.bottleneck.kind == "workers"
    assert proj.at(workers=9).bottleneck.step == "extract"
    assert proj.at(workers=11).bottleneck.step == "contacts"
    assert proj.at(workers=11).bottleneck.kind == "rate_limit"
    assert proj.at(workers=40).seconds == pytest.approx(500 * (0.6 + 2.4))


def test_binding_volume_says_where_limits_not_workers_decide():
    """binding_volume: the most any workers finish by the deadline, and the plan's own."""
    steps = [StepProfile("extract", latency=24.0),
             StepProfile("contacts", calls=2, latency=3.0, rate_limit="50/min")]
    b = project(steps, volume=500, workers=5, deadline="8h").binding_volume()
    # 2.4 s per item at the limit whatever the workers; 5 workers: 4.8 + 2.4 = 7.2 s
    assert (b.volume, b.step, b.workers, b.volume_at_workers) == (12000, "contacts", 3, 4000)
    assert "12,000" in str(b) and "contacts" in str(b)
    free = project([StepProfile("a", latency=6.0)], volume=10, workers=2)
    unlimited = free.binding_volume("1h")
    assert unlimited.volume is None and unlimited.volume_at_workers == 1200
    with pytest.raises(ConfigError, match="deadline"):
        free.binding_volume()


def test_seed_scenario_which_limit_binds_and_from_what_volume():
    """The scenario's hand numbers: AI extraction binds 5 workers; from ~5,000 a day the
    contact search's 50/min does, and no worker count fits 8 h past 6,857 items."""
    proj = seed_projection()
    # a round of 5 chunks of 50 (250 items): web search 750 calls at 100/min = 450 s;
    # AI 50 x 2 x 8 s = 800 s per worker; contacts 500 calls at 50/min = 600 s;
    # verification 2 requests x 5 s = 10 s; compile 50 x 2 s = 100 s: 1,960 s a round;
    # two rounds: 3,920 s
    assert proj.seconds == pytest.approx(3920.0)
    assert proj.bottleneck.step == "AI extraction" and proj.bottleneck.kind == "workers"
    assert proj.bottleneck.share == pytest.approx(1600 / 3920)
    assert proj.cost == pytest.approx(70.0)  # $0.14 an item
    rates = proj.table.filter(pl.col("rate_limit").is_not_null())
    assert rates["step"].to_list() == ["web search", "contact search"]
    assert rates["rate_items_per_min"].to_list() == [pytest.approx(100 / 3), pytest.approx(25)]
    assert rates["limited_by"].to_list() == ["rate_limit", "rate_limit"]
    binding = proj.binding_volume()
    # with enough workers: 1.8 s + 2.4 s of every item at the limits, 28,800 s ÷ 4.2 s
    assert binding.step == "contact search" and binding.workers == 4
    assert binding.volume == 6857
    assert binding.volume_at_workers == 3673  # 28,800 s ÷ 7.84 s per item
    table = proj.scaling([500, 1_000, 2_500, 5_000])
    print(table)
    assert table["seconds"].to_list() == [3920.0, 7840.0, 19600.0, 39200.0]
    assert table["meets_deadline"].to_list() == [True, True, True, False]
    assert table["meets_budget"].to_list() == [True, False, False, False]
    auto = proj.scaling([500, 1_000, 2_500, 5_000, 15_000], workers="auto")
    print(auto)
    # the scenario's "at about 5,000 a day the rate limits become the bottleneck"
    assert auto["bottleneck"].to_list() == ["AI extraction"] * 3 + ["contact search"] * 2
    assert auto["limited_by"].to_list()[3:] == ["rate_limit", "rate_limit"]
    assert auto["meets_deadline"].to_list() == [True, True, True, True, False]
    rec = proj.at(volume=15_000).recommend()
    assert any(a.startswith("needs a higher tier on contact search: 50/min → ")
               for a in rec.actions)


def test_seed_with_five_search_calls_makes_web_search_bind():
    """Read as 5 web-search calls at 100/min, web search (20 items/min) binds before contacts."""
    steps = [replace(SEED[0], calls=5), *SEED[1:]]
    proj = project(steps, volume=500, workers=40, chunk_size=50)
    assert proj.bottleneck.step == "web search"
    assert proj.bottleneck.why == "web search: 100 calls/min ÷ 5 calls/item = 20 items/min"


# -- scaling ------------------------------------------------------------------------------

def test_scaling_table_columns_and_values():
    """scaling gives volume, workers, time, cost, bottleneck and verdicts per volume."""
    proj = project([StepProfile("a", latency=1.0, cost=0.1)], volume=60, workers=2,
                   deadline="1min", budget=10)
    table = proj.scaling([60, 120, 240])
    assert table.columns == ["volume", "workers", "seconds", "seconds_p95", "cost",
                             "cost_per_item", "items_per_min", "bottleneck", "limited_by",
                             "meets_deadline", "meets_budget"]
    assert table["seconds"].to_list() == [30.0, 60.0, 120.0]
    assert table["cost"].to_list() == [pytest.approx(6.0), pytest.approx(12.0),
                                       pytest.approx(24.0)]
    assert table["meets_deadline"].to_list() == [True, True, False]
    assert table["meets_budget"].to_list() == [True, False, False]
    auto = proj.scaling([60, 120, 240], workers="auto")
    assert auto["workers"].to_list() == [1, 2, 4]
    assert all(auto["meets_deadline"].to_list())
    assert project([StepProfile("a")], volume=1, workers=1).scaling([5])["meets_deadline"] \
        .to_list() == [None]
    with pytest.raises(ConfigError):
        proj.scaling([])
    with pytest.raises(ConfigError):
        proj.scaling([10], workers="many")


# -- recommendations ----------------------------------------------------------------------

def test_recommend_takes_the_smallest_worker_count_meeting_the_deadline():
    """360 items of 10 s in 10 min need 6 workers; 5 would miss."""
    proj = project([StepProfile("a", latency=10.0)], volume=360, workers=1, deadline="10min")
    rec = proj.recommend()
    assert isinstance(rec, Recommendation)
    assert rec.workers == 6 and rec.meets_deadline is True and rec.actions == ()
    assert rec.projection.at(workers=5).meets_deadline is False
    assert project([StepProfile("a", latency=10.0)], volume=360, deadline="10min").workers == 6
    assert proj.recommend(headroom=0.5).workers == 12


def test_recommend_unmeetable_deadline_names_the_tier_that_would_meet_it():
    """Rate-bound past the deadline: say by how much, and the tier (and workers) that would."""
    proj = project([StepProfile("contacts", calls=2, latency=1.0, rate_limit="50/min")],
                   volume=600, workers=1, deadline="10min")
    rec = proj.recommend()
    # 2.4 s per item at 50/min whatever the workers; one worker (2 s of calls) already
    # waits on the limit
    assert rec.workers == 1 and rec.chunk_size == 1
    assert rec.meets_deadline is False and rec.seconds == pytest.approx(1440.0)
    assert rec.actions[0] == "misses the 10 min deadline by 14 min (140%): projected 24 min"
    # 600 items in 600 s: 1 s per item, so 2 calls a second (120/min) and 2 workers
    assert rec.actions[1] == "needs a higher tier on contacts: 50/min → 120/min, with 2 workers"
    assert rec.actions[-1] == "or allow 24 min, or run at most 250 items by the deadline"
    assert "no count up to 64 meets 10 min" in rec.reasons[0]


def test_recommend_unmeetable_concurrency_cap_says_what_cap_would_do():
    """A binding concurrency cap past the deadline: the cap and workers needed are named."""
    proj = project([StepProfile("c", calls=1, latency=6.0, concurrency=2)], volume=100,
                   workers=1, deadline="1min")
    rec = proj.recommend()
    assert rec.workers == 2 and rec.meets_deadline is False  # 2 fill the cap
    # 100 items a minute x 6 s = 10 calls in flight: a cap of 10 and 10 workers
    assert "needs concurrency on c: 2 → 10, with 10 workers" in rec.actions


def test_recommend_over_budget_says_by_how_much_and_what_fits():
    """Over budget: the overshoot, the volume that fits and the cache hits that would."""
    proj = project([StepProfile("a", latency=0.1, cost=0.5)], volume=100, workers=1,
                   budget=40)
    rec = proj.recommend()
    assert rec.meets_budget is False
    assert rec.actions == (
        "over the $40.00 budget by $10.00 (25%): $0.50/item against $0.40/item allowed",
        "or run at most 80 items within the budget",
        "or 20% cache hits on a (now 0%): its cost falls from $0.50 to $0.40/item",
    )


def test_recommend_chunk_size_fills_request_batches():
    """Chunks hold enough items to fill a batched step's request when work allows."""
    proj = project([StepProfile("a", latency=1.0),
                    StepProfile("verify", calls=1, latency=0.5, batch_size=100)],
                   volume=20_000, workers=4)
    rec = proj.recommend(max_workers=4)
    assert rec.workers == 4 and rec.chunk_size == 100
    assert "fills verify's requests (100 per request)" in rec.reasons[2]


def test_recommend_chunk_size_limits_work_lost_to_a_crash():
    """Slow items: at most 5 min of work per chunk even if batches go partly filled."""
    proj = project([StepProfile("a", latency=30.0),
                    StepProfile("verify", calls=1, latency=0.5, batch_size=100)],
                   volume=20_000, workers=4)
    rec = proj.recommend(max_workers=4)
    # 300 s ÷ 30.005 s per item (30 s plus a hundredth of a 0.5 s request)
    assert rec.chunk_size == 9
    assert "at most 5 min of a worker's time per chunk" in rec.reasons[2]
    assert "go 9 of 100 full" in rec.reasons[2]


def test_recommend_chunk_size_amortises_checkpoints_and_evens_the_finish():
    """Fast items: at least 1 s of work per chunk, unless a worker would get no chunk."""
    fast = project([StepProfile("a", latency=0.01)], volume=100_000, workers=2)
    assert fast.recommend(max_workers=2).chunk_size == 100
    small = project([StepProfile("a", latency=0.01)], volume=400, workers=5)
    rec = small.recommend(max_workers=5)
    assert rec.chunk_size == 80  # 100 (1 s) would leave a worker idle: 1 s against 0.8 s
    assert rec.seconds == pytest.approx(0.8)
    uneven = project([StepProfile("a", latency=0.1)], volume=100, workers=4)
    # at least 1 s (10 items) a chunk: 10 chunks of 10 take 3 rounds (3 s), 4 of 25 one (2.5 s)
    assert uneven.recommend(max_workers=4).chunk_size == 25


def test_recommended_concurrency_follows_littles_law_and_keeps_caps():
    """Uncapped steps get the calls in flight at p95 (at most one per worker); caps stay."""
    proj = project([StepProfile("a", calls=2, latency=1.0, latency_p95=2.0),
                    StepProfile("b", latency=1.0, concurrency=7)], volume=600, workers=1,
                   deadline="10min")
    rec = proj.recommend()
    # 600 items in 600 s need 1 item/s; work 3 s per item -> 3 workers
    assert rec.workers == 3
    # a: 1 item/s x 2 calls x 2 s at p95 = 4 in flight, capped at one per worker
    assert rec.concurrency == {"a": 3, "b": 7}


rates = st.sampled_from([None, "10/min", "100/min", "2/s", "600/h"])


@st.composite
def plans(draw):
    """Random pipelines with limits, a volume and maybe a deadline."""
    n = draw(st.integers(1, 4))
    steps = [StepProfile(
        f"s{i}", calls=draw(st.sampled_from([0, 0.5, 1, 2, 5])),
        latency=draw(st.floats(0.01, 5.0)), rate_limit=draw(rates),
        concurrency=draw(st.one_of(st.none(), st.integers(1, 8))),
        per_worker=draw(st.sampled_from([1, 1, 4])),
        batch_size=draw(st.one_of(st.none(), st.integers(2, 100))),
        cache_hit_rate=draw(st.sampled_from([0.0, 0.2])),
        retry_rate=draw(st.sampled_from([0.0, 0.1])),
        failure_rate=draw(st.sampled_from([0.0, 0.05]))) for i in range(n)]
    deadline = draw(st.one_of(st.none(), st.floats(60.0, 86_400.0)))
    return project(steps, volume=draw(st.integers(1, 5000)), workers=1, deadline=deadline)


@settings(max_examples=60, deadline=None)
@given(plans())
def test_recommendations_respect_every_limit(proj):
    """No step is projected faster than its rate limit or cap allows, the recommended caps
    never slow the plan, and the worker count is the smallest meeting the deadline."""
    rec = proj.recommend(max_workers=32)
    plan = rec.projection
    for t in plan._terms:
        f, rate, cap = t.fig, t.fig.profile.rate, t.fig.profile.concurrency
        if rate is not None:  # the step's calls at most at the limit's pace
            assert t.seconds >= plan.volume * f.requests / rate.per_second * (1 - 1e-9)
        if cap is not None:
            assert t.seconds >= plan.volume * f.busy / cap * (1 - 1e-9)
    capped = [replace(p, concurrency=rec.concurrency[p.name]) for p in plan.steps]
    again = Projection(capped, volume=plan.volume, workers=plan.workers,
                       deadline=plan.deadline, chunk_size=plan.chunk_size)
    assert again.seconds == pytest.approx(plan.seconds)
    if plan.meets_deadline and rec.workers > 1:  # fewer miss even in the steady state,
        fewer = plan.at(workers=rec.workers - 1, chunk_size=None)  # or their chunks do
        assert not fewer.meets_deadline or "rather than" in rec.reasons[0]
    if plan.meets_deadline is False:
        assert rec.actions and rec.actions[0].startswith("misses the")
        assert not plan.at(workers=min(32, plan.volume), chunk_size=None).meets_deadline or \
            proj.at(workers=rec.workers, chunk_size=None).meets_deadline


# -- calibration --------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, 9, 0, 0)


def attempt_log() -> pl.DataFrame:
    """A sample of 4 items through search then extract, with a retry, a cache hit, a failure."""
    rows = [  # _id, attempt, step, seconds after T0, duration, outcome, usd, tokens, calls, tries
        (1, 1, "search", 0, 2.0, "done", 0.02, 0, 2, 1),
        (2, 1, "search", 1, 6.0, "done", 0.04, 0, 4, 2),  # an in-step retry: 2 tries
        (3, 1, "search", 2, 0.01, "cached", 0.0, 0, 0, 1),
        (4, 1, "search", 3, 5.0, "done", 0.02, 0, 2, 1),
        (1, 1, "extract", 4, 1.0, "failed", 0.01, 100, 1, 1),  # transient: item retried
        (1, 2, "extract", 20, 4.0, "done", 0.01, 100, 1, 1),
        (2, 1, "extract", 8, 2.0, "done", 0.01, 100, 1, 1),
        (3, 1, "extract", 5, 3.0, "done", 0.01, 100, 1, 1),
        (4, 1, "extract", 9, 1.0, "failed", 0.01, 100, 1, 1),  # final failure
        (1, 1, None, 0, 5.0, "retry", 0.03, 100, 3, 1),
        (1, 2, None, 20, 4.0, "done", 0.01, 100, 1, 1),
    ]
    cols = ["_id", "attempt", "step", "t", "duration_s", "outcome", "usd", "tokens", "calls",
            "tries"]
    frame = pl.DataFrame(rows, schema=cols, orient="row")
    return frame.with_columns(
        (pl.lit(T0) + pl.duration(seconds=pl.col("t"))).alias("started_at"),
        pl.col("attempt").cast(pl.Int32), pl.col("tries").cast(pl.Int32),
        run_id=pl.lit("r1"), error_type=pl.lit(None, pl.String),
        error_message=pl.lit(None, pl.String)).drop("t")


def test_calibrate_measures_each_step_from_the_attempt_log():
    """Per step: latency p50/p95 per call, calls, cost, tokens per try, cache, retry, failure."""
    search, extract = calibrate(attempt_log(), steps={"extract": {"concurrency": 4},
                                                      "search": {"rate_limit": "100/min"}})
    assert (search.name, extract.name) == ("search", "extract")  # order of first start
    assert search.cache_hit_rate == pytest.approx(0.25)  # item 3 served from cache
    assert search.retry_rate == pytest.approx(1 / 3)  # 4 tries for 3 items that called
    assert search.calls == pytest.approx(2.0) and search.cost == pytest.approx(0.02)
    assert search.latency == pytest.approx(1.5)  # per call: 1.0, 1.5, 2.5
    assert search.latency_p95 == pytest.approx(2.4)
    assert search.failure_rate == 0.0 and str(search.rate) == "100/min"
    assert extract.retry_rate == pytest.approx(0.25) and extract.failure_rate == pytest.approx(0.25)
    assert extract.latency == pytest.approx(3.0) and extract.latency_p95 == pytest.approx(3.9)
    assert extract.tokens == pytest.approx(100.0) and extract.concurrency == 4


def test_a_calibrated_projection_gives_back_the_sample_totals():
    """Projecting the sample's volume from its profiles returns its calls, cost and tokens."""
    log = attempt_log()
    steps = log.filter(pl.col("step").is_not_null())
    proj = project(calibrate(log), volume=4, workers=1)
    assert proj.cost == pytest.approx(steps["usd"].sum())
    assert proj.calls == pytest.approx(steps["calls"].sum())
    assert proj.tokens == pytest.approx(steps["tokens"].sum())
    assert proj.expected_failed == pytest.approx(1.0)


def test_calibrate_a_plain_function_from_item_rows():
    """Without step rows, one profile named after the function, from the item rows."""
    rows = pl.DataFrame({
        "_id": [1, 1, 2, 3], "attempt": [1, 2, 1, 1], "step": [None] * 4,
        "started_at": [T0] * 4, "duration_s": [1.0, 2.0, 4.0, 0.5],
        "outcome": ["retry", "done", "done", "failed"], "usd": [0.0] * 4, "tokens": [0] * 4,
        "calls": [0] * 4, "tries": [1] * 4}, schema_overrides={"step": pl.String})
    (p,) = calibrate(rows, name="enrich")
    assert p.name == "enrich" and p.calls == 1.0  # a local function: one invocation a try
    assert p.latency == pytest.approx(3.0) and p.latency_p95 == pytest.approx(3.9)
    assert p.retry_rate == pytest.approx(1 / 3) and p.failure_rate == pytest.approx(1 / 3)


def test_calibrate_batched_step_takes_requests_times_batch_size():
    """A batched step's logged requests become unbatched calls (x batch size) unless given."""
    rows = pl.DataFrame({
        "_id": [1, 2, 3, 4], "attempt": [1] * 4, "step": ["verify"] * 4,
        "started_at": [T0] * 4, "duration_s": [2.0, 2.0, 2.0, 2.0], "outcome": ["done"] * 4,
        "usd": [0.02] * 4, "tokens": [0] * 4, "calls": [1, 0, 0, 0], "tries": [1] * 4})
    (p,) = calibrate(rows, steps={"verify": {"batch_size": 10}})
    assert p.calls == pytest.approx(2.5) and p.latency == 2.0  # 0.25 requests/item x 10
    (q,) = calibrate(rows, steps={"verify": {"batch_size": 10, "calls": 3}})
    assert q.calls == 3


@pytest.mark.parametrize(("log", "steps", "match"), [
    (attempt_log().drop("tries"), None, "tries"),
    (attempt_log().head(0), None, "no rows"),
    (attempt_log(), {"search": {"speed": 3}}, "speed"),
    (attempt_log(), {"verify": {"batch_size": 100}}, "verify"),
    (attempt_log(), {"search": 5}, "search"),
    (attempt_log(), {"search": {"cache_hit_rate": 3}}, "cache_hit_rate"),
    ({"_id": [1]}, None, "DataFrame"),
])
def test_calibrate_rejects_bad_input_naming_it(log, steps, match):
    """Missing columns, no rows, unknown fields or steps raise ConfigError naming them."""
    with pytest.raises(ConfigError, match=match):
        calibrate(log, steps=steps)


# -- the report and the notebook views ----------------------------------------------------

SECTIONS = ["## 1. Workflow analysis", "## 2. Chunking and parallelism",
            "## 3. State and resume", "## 4. Reliability", "## 5. Observability",
            "## 6. Projections and scaling"]


def sections(text: str) -> dict[str, str]:
    """The report's sections by heading."""
    parts = re.split(r"^(## .*)$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


@pytest.mark.parametrize("proj", [
    seed_projection(),
    project(SEED, volume=50, workers=2),
    project([replace(SEED[0], cache_hit_rate=0.2, retry_rate=0.1, failure_rate=0.03,
                     latency_p95=4.0), *SEED[1:]], volume=20_000, workers=5, deadline="8h",
            budget=100),
], ids=["seed", "no-deadline-no-budget", "missed-everything"])
def test_report_has_every_section_filled_with_numbers(proj):
    """Each section is present and holds figures; no placeholders are left."""
    text = proj.report(name="leads")
    found = sections(text)
    assert list(found) == SECTIONS
    for heading, body in found.items():
        assert re.search(r"\d", body), heading
    for placeholder in ("TODO", "{", "}", "None", "nan", "inf", "XXX"):
        assert placeholder not in text
    assert text.startswith("# Batch plan: leads\n")
    assert "`leads__attempts`" in text
    assert proj.bottleneck.why in text


def test_report_of_a_missed_plan_says_what_would_meet_it():
    """A plan past its deadline and budget lists the tier, workers and volume that would."""
    proj = seed_projection(volume=20_000)
    text = proj.report(retry=2, on_error="halt")
    # no worker count meets 8 h; 36 are within 5% of 64 (chunks of 1: at most 5 min of a
    # worker's time per chunk). A round of 36 items must take 36 x 1.44 s = 51.8 s: web
    # search max(6 s, 64.8 s ÷ g) + AI 16 s + contacts max(6 s, 86.4 s ÷ g) + 5 s + 2 s,
    # so both limits g = 5.24 x higher
    assert "36 workers: no count up to 64 meets 8 h" in text
    assert "needs a higher tier on web search: 100/min → 525/min" in text
    assert "needs a higher tier on contact search: 50/min → 263/min" in text
    assert "over the $100.00 budget" in text
    assert "retried 2 times with exponential backoff (1, 2 s" in text
    assert "halt: the first final failure stops the batch" in text
    assert "past 80% of the deadline (6.4 h)" in text


def test_alert_thresholds_fit_the_plan():
    """Thresholds: the scenario's failure shares or the plan's plus 5/15 points, half and a
    quarter of the throughput, 125% and 200% of the cost per item, 80%/100% of the deadline."""
    proj = project([StepProfile("a", latency=1.0, cost=0.1, failure_rate=0.02),
                    StepProfile("b", latency=1.0, cost=0.1, failure_rate=0.5)], volume=60,
                   workers=1)
    # failures: 1 - 0.98 x 0.5 = 51%; work per item 1 + 0.98 = 1.98 s; cost 0.1 + 0.098
    limits = proj.alert_thresholds()
    assert limits == {"failure_rate_warn": pytest.approx(0.56),
                      "failure_rate_critical": pytest.approx(0.66),
                      "throughput_warn": pytest.approx(60 / 1.98 / 2),
                      "throughput_critical": pytest.approx(60 / 1.98 / 4),
                      "cost_per_item_warn": pytest.approx(1.25 * 0.198),
                      "cost_per_item_critical": pytest.approx(2 * 0.198),
                      "eta_warn": 0.8, "eta_critical": 1.0}
    free = project([StepProfile("a", latency=1.0)], volume=1, workers=1).alert_thresholds()
    assert free["failure_rate_warn"] == 0.05 and free["cost_per_item_warn"] is None
    assert "not watched" in project([StepProfile("a", latency=1.0)], volume=1,
                                    workers=1).report()


def test_report_rejects_bad_settings():
    """report checks its retry policy, failure mode and volumes."""
    proj = seed_projection()
    with pytest.raises(ConfigError, match="on_error"):
        proj.report(on_error="ignore")
    with pytest.raises(ConfigError, match="retry"):
        proj.report(retry="often")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="volume"):
        proj.report(volumes=[0])


def test_terminal_and_notebook_views_show_the_figures():
    """__str__, _repr_markdown_ and _repr_html_ show time, cost, bottleneck and the steps."""
    proj = seed_projection()
    text = str(proj)
    assert "65.3 min" in text and "$70.00" in text and "contact search" in text
    assert "deadline 8 h: met" in text
    md = proj._repr_markdown_()
    assert "| step |" in md and "**bottleneck**" in md
    page = proj._repr_html_()
    assert page.startswith("<div>") and "<table>" in page and "e-mail verification" in page
    assert "Projection(volume=500, workers=5" in repr(proj)
    rec = proj.recommend()
    assert str(rec).startswith(f"workers {rec.workers}, chunk size {rec.chunk_size}")
    assert "**workers" in rec._repr_markdown_()


def test_html_view_escapes_step_names():
    """A step name with markup is escaped in the HTML view."""
    page = project([StepProfile("<b>x</b>", latency=1.0)], volume=1, workers=1)._repr_html_()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
