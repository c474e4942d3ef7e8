"""Metrics from a known attempt log and items frame: exact throughput, percentiles, costs."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from batchkit._metrics import Metrics, compute_metrics, percentile

T0 = datetime(2024, 1, 1)
LOG_SCHEMA = {
    "_id": pl.Int64, "attempt": pl.Int32, "step": pl.String, "run_id": pl.String,
    "started_at": pl.Datetime("us"), "duration_s": pl.Float64, "outcome": pl.String,
    "error_type": pl.String, "error_message": pl.String, "usd": pl.Float64,
    "tokens": pl.Int64, "calls": pl.Int64, "tries": pl.Int32}


def _row(_id, attempt, step, start, duration, outcome, *, usd=0.0, tokens=0, calls=0,
         tries=1, error=None):
    return {"_id": _id, "attempt": attempt, "step": step, "run_id": "r1",
            "started_at": T0 + timedelta(seconds=start), "duration_s": duration,
            "outcome": outcome, "error_type": error, "error_message": error and "boom",
            "usd": usd, "tokens": tokens, "calls": calls, "tries": tries}


def _log() -> pl.DataFrame:
    """A two-step pipeline (search, extract) over 7 rows; item rows carry their steps' sums."""
    rows = [
        # row 1: done at once
        _row(1, 1, None, 0, 3.0, "done", usd=0.03, tokens=100, calls=2),
        _row(1, 1, "search", 0, 1.0, "done", usd=0.01, calls=1),
        _row(1, 1, "extract", 1, 2.0, "done", usd=0.02, tokens=100, calls=1),
        # row 2: search times out (3 tries), retried; then done (2 tries), extract cached
        _row(2, 1, None, 0, 5.0, "retry", usd=0.03, calls=3, error="Timeout"),
        _row(2, 1, "search", 0, 5.0, "failed", usd=0.03, calls=3, tries=3, error="Timeout"),
        _row(2, 2, None, 10, 4.0, "done", usd=0.02, calls=2),
        _row(2, 2, "search", 10, 4.0, "done", usd=0.02, calls=2, tries=2),
        _row(2, 2, "extract", 14, 0.0, "cached"),
        # row 3: extract fails permanently
        _row(3, 1, None, 3, 6.0, "failed", usd=0.03, tokens=50, calls=2, error="ValueError"),
        _row(3, 1, "search", 3, 1.0, "done", usd=0.01, calls=1),
        _row(3, 1, "extract", 4, 5.0, "failed", usd=0.02, tokens=50, calls=1,
             error="ValueError"),
        # row 4: search fails transiently three times: retries exhausted
        _row(4, 1, None, 5, 2.0, "retry", usd=0.01, calls=1, error="Timeout"),
        _row(4, 1, "search", 5, 2.0, "failed", usd=0.01, calls=1, error="Timeout"),
        _row(4, 2, None, 20, 2.0, "retry", usd=0.01, calls=1, error="Timeout"),
        _row(4, 2, "search", 20, 2.0, "failed", usd=0.01, calls=1, error="Timeout"),
        _row(4, 3, None, 112, 8.0, "failed", usd=0.04, calls=4, error="Timeout"),
        _row(4, 3, "search", 112, 8.0, "failed", usd=0.04, calls=4, tries=4, error="Timeout"),
        # row 7: done after an in-step retry only
        _row(7, 1, None, 30, 10.0, "done", usd=0.02, calls=2),
        _row(7, 1, "search", 30, 10.0, "done", usd=0.02, calls=2, tries=2),
    ]
    return pl.DataFrame(rows, schema=LOG_SCHEMA)


def _items() -> pl.DataFrame:
    return pl.DataFrame({
        "_id": [1, 2, 3, 4, 5, 6, 7],
        "_key": [f"k{i}" for i in range(1, 8)],
        "_status": ["done", "done", "failed", "failed", "pending", "running", "done"],
        "_retryable": [None, None, False, True, None, None, None],
    }, schema={"_id": pl.Int64, "_key": pl.String, "_status": pl.String,
               "_retryable": pl.Boolean})


@pytest.fixture
def metrics() -> Metrics:
    """Metrics of the known log at its default 'now' (the last attempt's end, T0 + 120 s)."""
    return compute_metrics(_log(), _items())


# -- percentiles ---------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "p", "expected"), [
    (list(range(1, 21)), 95, 19.0),   # rank ceil(19.0) = 19
    (list(range(1, 21)), 99, 20.0),   # rank ceil(19.8) = 20
    (list(range(1, 21)), 50, 10.0),   # rank 10
    (list(range(1, 11)), 95, 10.0),   # rank ceil(9.5) = 10
    (list(range(1, 101)), 7, 7.0),    # integer arithmetic: no 7.000000000000001 -> 8
    ([4.0, 1.0, 3.0, 2.0], 50, 2.0),  # unsorted input, rank 2
    ([4.0, 1.0, 3.0, 2.0], 0, 1.0),   # rank at least 1
    ([7.5], 99, 7.5),
    ([2.0, None, 1.0], 50, 1.0),      # nulls dropped: n = 2
])
def test_percentile_is_nearest_rank(values, p, expected):
    """percentile() returns the value at rank ceil(p * n / 100) of the sorted values."""
    assert percentile(values, p) == expected


def test_percentile_of_nothing_is_none():
    """No values (or only nulls): None."""
    assert percentile([], 50) is None
    assert percentile(pl.Series([None], dtype=pl.Float64), 50) is None


# -- figures of the known log --------------------------------------------------------------

def test_counts_and_failures(metrics):
    """Status counts, dead letters split into permanent and retries exhausted."""
    assert metrics.total == 7
    assert metrics.counts == {"pending": 1, "running": 1, "done": 3, "failed": 2}
    assert (metrics.dead_letters, metrics.permanent_failures, metrics.retries_exhausted) == (
        2, 1, 1)
    assert metrics.failure_rate == pytest.approx(2 / 5)


def test_throughput_overall_and_last_minute(metrics):
    """5 endings over 120 s = 2.5/min; 1 ending in the last minute before T0 + 120 s."""
    assert (metrics.attempts, metrics.ended) == (8, 5)
    assert metrics.first_started_at == T0
    assert metrics.last_finished_at == T0 + timedelta(seconds=120)
    assert metrics.now == T0 + timedelta(seconds=120)
    assert metrics.span_s == 120.0
    assert metrics.items_per_min == pytest.approx(2.5)
    assert metrics.items_per_min_recent == pytest.approx(1.0)
    assert metrics.eta_s == pytest.approx(120.0)  # 2 rows left at 1/min


def test_last_minute_follows_now():
    """With now = T0 + 73 s the last minute (13 s, 73 s] holds the endings at 14 s and 40 s."""
    m = compute_metrics(_log(), _items(), now=T0 + timedelta(seconds=73))
    assert m.items_per_min_recent == pytest.approx(2.0)
    assert m.eta_s == pytest.approx(60.0)
    assert m.items_per_min == pytest.approx(2.5)  # overall ignores now
    aware = datetime(2024, 1, 1, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))
    assert compute_metrics(_log(), _items(), now=aware).now == T0 + timedelta(seconds=73)


def test_nothing_ended_in_the_last_minute_gives_no_eta():
    """With no ending in the last minute the recent rate is 0 and the ETA unknown."""
    m = compute_metrics(_log(), _items(), now=T0 + timedelta(seconds=300))
    assert m.items_per_min_recent == 0.0
    assert m.eta_s is None


def test_last_minute_window_is_cut_to_a_short_log():
    """A 30-s log: the window is those 30 s, so 3 endings make 6/min, as overall."""
    log = pl.DataFrame([_row(i, 1, None, 0, 10.0 * i, "done") for i in (1, 2, 3)],
                       schema=LOG_SCHEMA)
    items = pl.DataFrame({"_id": [1, 2, 3, 4], "_status": ["done", "done", "done", "pending"]})
    m = compute_metrics(log, items)
    assert (m.items_per_min, m.items_per_min_recent) == (pytest.approx(6.0),
                                                         pytest.approx(6.0))
    assert m.eta_s == pytest.approx(10.0)


def test_item_duration_percentiles(metrics):
    """Item rows done/failed/retry: durations [2, 2, 3, 4, 5, 6, 8, 10] give 4, 10, 10."""
    assert (metrics.duration_p50_s, metrics.duration_p95_s, metrics.duration_p99_s) == (
        4.0, 10.0, 10.0)


def test_calls_tokens_retries_cache(metrics):
    """Sums over item rows; retries split into retried attempts and in-step retries."""
    assert (metrics.calls, metrics.tokens) == (17, 150)
    assert metrics.retries == 3          # item rows with outcome retry
    assert metrics.step_retries == 7     # (3-1) + (2-1) + (4-1) + (2-1)
    assert metrics.transient_recovered == 2  # rows 2 (retried) and 7 (in-step retry)
    assert metrics.cache_hits == 1


def test_costs(metrics):
    """$0.19 in all: per done row 0.19/3, per ended row 0.19/5."""
    assert metrics.cost_usd == pytest.approx(0.19)
    assert metrics.cost_per_done_usd == pytest.approx(0.19 / 3)
    assert metrics.cost_per_ended_usd == pytest.approx(0.038)


def test_per_step_table(metrics):
    """One row per step in order of first start, with nearest-rank percentiles and sums."""
    steps = metrics.steps
    assert steps.columns == ["step", "attempts", "p50", "p95", "p99", "calls", "tokens",
                             "usd", "cache_hits", "failures", "retries"]
    search, extract = steps.to_dicts()
    # search durations [1, 1, 2, 2, 4, 5, 8, 10]: ranks 4, 8, 8
    assert {k: v for k, v in search.items() if k != "usd"} == {
        "step": "search", "attempts": 8, "p50": 2.0, "p95": 10.0, "p99": 10.0,
        "calls": 15, "tokens": 0, "cache_hits": 0, "failures": 4, "retries": 7}
    assert search["usd"] == pytest.approx(0.15)
    # extract: the cached row counts as an attempt, not in the durations [2, 5]
    assert {k: v for k, v in extract.items() if k != "usd"} == {
        "step": "extract", "attempts": 3, "p50": 2.0, "p95": 5.0, "p99": 5.0,
        "calls": 2, "tokens": 150, "cache_hits": 1, "failures": 1, "retries": 0}
    assert extract["usd"] == pytest.approx(0.04)


def test_plain_function_log_has_no_steps():
    """A log of item rows only: an empty step table with its columns."""
    log = _log().filter(pl.col("step").is_null())
    m = compute_metrics(log, _items())
    assert m.steps.height == 0 and m.steps.columns[0] == "step"
    assert (m.cache_hits, m.step_retries, m.transient_recovered) == (0, 0, 1)


# -- empty and odd inputs ------------------------------------------------------------------

def test_empty_frames_give_zeros_and_nones():
    """No columns at all: zeros, Nones and an ETA of 0 (nothing left)."""
    m = compute_metrics(pl.DataFrame(), pl.DataFrame())
    assert m.total == 0 and m.counts == {"pending": 0, "running": 0, "done": 0, "failed": 0}
    assert (m.items_per_min, m.items_per_min_recent, m.duration_p95_s) == (None, None, None)
    assert (m.first_started_at, m.span_s, m.now) == (None, None, None)
    assert (m.cost_usd, m.cost_per_done_usd, m.cost_per_ended_usd) == (0.0, None, None)
    assert (m.calls, m.tokens, m.retries, m.dead_letters, m.eta_s) == (0, 0, 0, 0, 0.0)
    assert m.steps.height == 0
    assert "0: 0 done" in str(m) and "<table>" in m._repr_html_()


def test_empty_log_with_pending_rows():
    """Typed but empty log and pending rows: no rate, so no ETA."""
    m = compute_metrics(pl.DataFrame(schema=LOG_SCHEMA),
                        pl.DataFrame({"_id": [1, 2], "_status": ["pending", "pending"]}))
    assert (m.total, m.attempts, m.items_per_min, m.eta_s) == (2, 0, None, None)


def test_zero_span_log_has_no_rate():
    """One attempt of 0 s: the span is 0, so no throughput (not a division by zero)."""
    log = pl.DataFrame([_row(1, 1, None, 0, 0.0, "done")], schema=LOG_SCHEMA)
    m = compute_metrics(log, pl.DataFrame({"_id": [1, 2], "_status": ["done", "pending"]}))
    assert (m.ended, m.items_per_min, m.items_per_min_recent, m.eta_s) == (1, None, None, None)
    assert m.duration_p50_s == 0.0


# -- rendering -----------------------------------------------------------------------------

def test_to_dict_is_json_ready(metrics):
    """to_dict() holds every field plus span and failure rate, and dumps to JSON."""
    d = json.loads(json.dumps(metrics.to_dict()))
    assert d["first_started_at"] == "2024-01-01T00:00:00"
    assert d["steps"][0]["step"] == "search" and d["steps"][1]["cache_hits"] == 1
    assert d["span_s"] == 120.0 and d["failure_rate"] == pytest.approx(0.4)
    assert set(d) >= {f.name for f in dataclasses.fields(Metrics)}


def test_metrics_are_frozen(metrics):
    """Metrics cannot be changed after they are computed."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        metrics.total = 1  # type: ignore[misc]


def test_str_is_an_aligned_table(metrics):
    """__str__: labelled lines whose values start in one column, then the step table."""
    lines = str(metrics).splitlines()
    assert lines[0] == "Metrics"
    assert lines[1] == "  items          7: 3 done · 2 failed · 1 pending · 1 running"
    assert "  throughput     2.5 items/min overall · 1.0 in the last minute" in lines
    assert "  ETA            2 min 0 s" in lines
    assert "  item duration  p50 4.00 s · p95 10.00 s · p99 10.00 s" in lines
    assert ("  cost           $0.1900 total · $0.0633 per done row · $0.0380 per ended row"
            in lines)
    table = lines[lines.index("  steps") + 1:]
    assert table[0].split() == ["step", "attempts", "p50", "s", "p95", "s", "p99", "s",
                                "calls", "tokens", "usd", "cache", "hits", "failures",
                                "retries"]
    assert table[1].split() == ["search", "8", "2.00", "10.00", "10.00", "15", "0", "0.1500",
                                "0", "4", "7"]
    assert len({len(row) for row in table}) == 1  # right-aligned columns, equal widths


def test_html_repr(metrics):
    """_repr_html_ is a table of the same figures and the step table."""
    page = metrics._repr_html_()
    assert page.startswith("<div><b>Metrics</b>")
    assert "2.5 items/min overall" in page and "<td style='text-align:left'>search</td>" in page
