"""Live figures wired into runs: budget, alerts, background runs, snapshots, reports."""

from __future__ import annotations

import json
import threading

import polars as pl
import pytest

import batchkit as bk
from batchkit._snapshot import read_snapshot


def _costly(cost):
    """A pipeline of one step costing ``cost`` USD per row."""
    return bk.pipeline(bk.step("paid", cost=cost, cache=False)(lambda row: {"y": row["n"]}))


def test_budget_stops_dispatching_before_it_is_passed(tmp_path):
    """budget= leaves rows pending once the next chunk would pass it; spent <= budget."""
    batch = bk.Batch("b", store=tmp_path / "s.duckdb")
    batch.add(pl.DataFrame({"n": list(range(200))}), key="n")
    report = batch.run(_costly(0.01), workers=1, chunk_size=10, budget=0.55,
                       backend="sequential", progress=False)
    assert report.outcome == "budget"
    assert report.cost_usd <= 0.55 + 1e-9
    assert report.counts["pending"] == 200 - report.counts["done"]
    assert report.counts["done"] >= 30  # it did spend most of the budget
    total = batch.items()["_cost_usd"].sum()
    assert total == pytest.approx(report.cost_usd)


def test_halt_on_critical_stops_the_run_and_calls_on_alert(tmp_path):
    """A failure rate past the critical threshold halts with halt_on='critical'."""
    seen = []
    batch = bk.Batch("a", store=tmp_path / "s.duckdb")
    batch.add(pl.DataFrame({"n": list(range(400))}), key="n")
    report = batch.run(lambda row: {"y": 1 / (row["n"] % 3)}, chunk_size=20, workers=1,
                       backend="sequential", retries=0, halt_on="critical",
                       on_alert=seen.append, progress=False)
    assert report.outcome == "halted"
    assert "halt_on='critical'" in (report.halt_reason or "")
    assert report.counts["pending"] > 0
    assert any(a.level == "critical" and a.metric == "failure_rate" for a in seen)


def test_bad_live_settings_fail_before_work(tmp_path):
    """budget, halt_on and deadline are validated before any row runs."""
    batch = bk.Batch("v", store=tmp_path / "s.duckdb")
    batch.add(pl.DataFrame({"n": [1]}), key="n")
    for kwargs in ({"budget": -1}, {"halt_on": "warning"}, {"deadline": "soon"},
                   {"alerts": {"failure_rate_warn": 0.1}}):
        with pytest.raises(bk.ConfigError):
            batch.run(lambda row: {}, progress=False, **kwargs)
    assert batch.counts()["pending"] == 1


def test_background_run_can_be_stopped_and_resumed(tmp_path):
    """start() runs in a thread; stop() keeps finished rows and leaves the rest pending."""
    gate, started = threading.Event(), threading.Event()

    def slow(row):
        started.set()
        gate.wait(5)
        return {"y": row["n"]}

    batch = bk.Batch("bg", store=tmp_path / "s.duckdb")
    batch.add(pl.DataFrame({"n": list(range(100))}), key="n")
    handle = batch.start(slow, workers=2, chunk_size=5, progress=False)
    assert started.wait(10) and not handle.done
    handle._runner.stop_requested.set()
    gate.set()
    report = handle.wait(30)
    assert report is not None and report.outcome == "stopped"
    assert 0 < report.counts["done"] < 100
    assert report.counts["running"] == 0
    assert batch.run(slow, progress=False).counts["done"] == 100


def test_snapshot_is_published_for_other_processes(tmp_path):
    """A run leaves a final snapshot of its figures and the batch's counts beside the store."""
    store = tmp_path / "s.duckdb"
    batch = bk.Batch("snap", store=store)
    batch.add(pl.DataFrame({"n": list(range(30))}), key="n")
    batch.run(lambda row: {"y": row["n"]}, progress=False)
    snap = read_snapshot(store, "snap")
    assert snap is not None
    assert snap["stats"]["state"] == "completed"
    assert snap["stats"]["done"] == 30
    assert snap["counts"]["done"] == 30
    json.dumps(snap)


def test_metrics_failures_and_report_after_a_run(tmp_path):
    """metrics(), failures() and report() describe the stored attempts."""
    batch = bk.Batch("m", store=tmp_path / "s.duckdb")
    batch.add(pl.DataFrame({"n": list(range(50)),
                            "country": ["BR" if i % 5 == 0 else "US" for i in range(50)]}),
              key="n")
    batch.run(lambda row: {"y": 1 / (row["n"] % 5)}, retries=0, progress=False)
    m = batch.metrics()
    assert m.counts["failed"] == 10 and m.dead_letters == 10
    clusters = batch.failures()
    assert len(clusters) == 1
    assert clusters[0].over_represented[0].value == "BR"
    text = batch.report().markdown
    assert "ZeroDivisionError" in text and "country = 'BR'" in text
    again = batch.run(lambda row: {"y": 0}, only=clusters[0], progress=False)
    assert again.processed == 10 and batch.counts()["done"] == 50


def test_plot_returns_a_figure(tmp_path):
    """batch.plot() draws a savable one-page summary."""
    batch = bk.Batch("p", store=tmp_path / "s.duckdb")
    batch.add(pl.DataFrame({"n": list(range(20))}), key="n")
    batch.run(lambda row: {"y": row["n"]}, progress=False)
    fig = batch.plot()
    fig.savefig(tmp_path / "summary.png")
    assert (tmp_path / "summary.png").stat().st_size > 1000
