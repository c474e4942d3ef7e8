"""The snapshot's details: a run publishes its batch's metrics and top failure clusters,
refreshed when due and only when cheap enough, so another process sees batch.metrics()."""

from __future__ import annotations

import logging
import time

import polars as pl
import pytest

import batchkit as bk
from batchkit._live import LiveStats
from batchkit._readonly import clusters_from_dict, metrics_from_dict
from batchkit._snapshot import SnapshotWriter, batch_details, read_snapshot
from batchkit.testing import FakeClock

T0 = 1_700_000_000.0


def live(**figures) -> LiveStats:
    """Hand-built live figures of a run of 100 rows."""
    return LiveStats("items", "r1", started_at=T0, now=T0, total=100, **figures)


class Counting:
    """A details function that counts its calls (and can be slow or broken)."""

    def __init__(self, sleep: float = 0.0) -> None:
        self.calls = 0
        self.sleep = sleep
        self.broken = False

    def __call__(self) -> dict:
        if self.broken:
            raise RuntimeError("store closed")
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)  # a real cost: the writer measures it
        return {"calls": self.calls}


def details_on_disk(store_path: str) -> dict | None:
    """The published details (None when none were computed yet)."""
    doc = read_snapshot(store_path, "items")
    assert doc is not None
    return doc["details"]


def test_a_run_publishes_the_batch_metrics_and_clusters(make_batch, store_path):
    """After a run the snapshot carries exactly batch.metrics() and the top clusters of
    batch.failures(), with the time they were computed."""
    batch = make_batch("items")
    batch.add(pl.DataFrame({"n": list(range(40)),
                            "region": ["eu" if i % 4 == 0 else "us" for i in range(40)]}),
              key="n")

    def fn(row):
        if row["n"] % 4 == 0:
            raise bk.Permanent(f"account {row['n'] * 1000} is closed")
        return {"ok": True}

    batch.run(fn, workers=2, retries=0, progress=False)
    details = details_on_disk(store_path)
    assert details is not None
    assert metrics_from_dict(details["metrics"]) == batch.metrics()
    clusters = clusters_from_dict(details["clusters"])
    real = batch.failures()
    assert [(c.id, c.count, c.template) for c in clusters] == [
        (c.id, c.count, c.template) for c in real] == [(real[0].id, 10, "account <n> is closed")]
    assert clusters[0].over_represented[0].sentence == real[0].over_represented[0].sentence
    assert details["computed_at"] == batch.clock.time()


def test_details_come_after_the_first_rows_then_every_few_seconds(store_path):
    """None before any row ended; at the first publish after one did; then not again until
    details_every seconds passed; always at close."""
    clock = FakeClock(start=T0)
    fn = Counting()
    writer = SnapshotWriter(store_path, "items", clock=clock, every=0, details=fn,
                            details_every=2.0)
    writer.publish(live(done=0))
    assert details_on_disk(store_path) is None
    writer.publish(live(done=1))
    assert details_on_disk(store_path)["calls"] == 1
    clock.advance(1.0)
    writer.publish(live(done=2))
    assert fn.calls == 1
    clock.advance(1.5)
    writer.publish(live(done=3))
    assert details_on_disk(store_path) == {"calls": 2, "computed_at": T0 + 2.5,
                                           "compute_s": pytest.approx(0, abs=0.5)}
    writer.close(live(done=4, state="completed"))
    assert details_on_disk(store_path)["calls"] == 3


def test_expensive_details_are_refreshed_less_often(store_path):
    """Details taking 0.3 s are refreshed only when that is at most 5% of the time since the
    last refresh, even at close (the previous ones stay, with their time)."""
    clock = FakeClock(start=T0)
    fn = Counting(sleep=0.3)
    writer = SnapshotWriter(store_path, "items", clock=clock, every=0, details=fn,
                            details_every=2.0)
    writer.publish(live(done=1))
    assert fn.calls == 1
    clock.advance(3.0)  # 5% of 3 s is 0.15 s < 0.3 s
    writer.publish(live(done=2))
    assert fn.calls == 1
    clock.advance(7.0)  # 5% of 10 s is 0.5 s
    writer.publish(live(done=3))
    assert fn.calls == 2
    writer.close(live(done=4, state="completed"))
    doc = read_snapshot(store_path, "items")
    assert (fn.calls, doc["stats"]["done"], doc["details"]["computed_at"]) == (2, 4, T0 + 10)


def test_a_big_batch_waits_before_its_first_details(store_path):
    """Before any measurement the cost is estimated from the rows: a million rows wait until
    that estimate is 5% of the time passed."""
    clock = FakeClock(start=T0)
    fn = Counting()
    writer = SnapshotWriter(store_path, "items", clock=clock, every=0, details=fn)
    writer.publish(live(done=1), counts={"pending": 999_999, "done": 1})
    clock.advance(20.0)
    writer.publish(live(done=2))
    assert fn.calls == 0 and details_on_disk(store_path) is None
    clock.advance(20.0)
    writer.publish(live(done=3))
    assert fn.calls == 1


def test_failing_details_keep_the_last_ones_and_never_break_publishing(store_path, caplog):
    """A details function that raises is logged (debug); the figures are still published and
    the last good details stay."""
    clock = FakeClock(start=T0)
    fn = Counting()
    writer = SnapshotWriter(store_path, "items", clock=clock, every=0, details=fn)
    writer.publish(live(done=1))
    fn.broken = True
    clock.advance(5.0)
    with caplog.at_level(logging.DEBUG, logger="batchkit"):
        assert writer.publish(live(done=2)) is True
    doc = read_snapshot(store_path, "items")
    assert (doc["stats"]["done"], doc["details"]["calls"]) == (2, 1)
    assert "store closed" in caplog.text


@pytest.mark.parametrize("value", [-1, float("inf"), "2s", True])
def test_bad_details_every_is_refused(store_path, value):
    """details_every must be seconds >= 0."""
    with pytest.raises(bk.ConfigError, match="details_every"):
        SnapshotWriter(store_path, "items", details_every=value)


def test_batch_details_hold_the_batch_weakly(store_path):
    """The details function does not keep a dropped batch (and its store file) alive."""
    batch = bk.Batch("items", store=store_path)
    batch.add(pl.DataFrame({"n": [1, 2]}), key="n")
    details = batch_details(batch)
    assert details()["metrics"]["counts"]["pending"] == 2
    batch.close()
    del batch
    with pytest.raises(RuntimeError, match="gone"):
        details()
