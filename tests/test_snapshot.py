"""Live snapshots: published atomically beside the store, throttled, readable by another process."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import duckdb
import pytest

import batchkit as bk
from batchkit._live import LiveStats
from batchkit._snapshot import (
    SnapshotWriter,
    clear_snapshots,
    read_snapshot,
    snapshot_path,
)
from batchkit.testing import FakeClock

T0 = 1_700_000_000.0
DOC_KEYS = {"format", "batch", "store", "pid", "host", "published_at", "stats", "counts"}


def live(batch: str = "items", **figures) -> LiveStats:
    """Hand-built live figures of a run of 100 rows."""
    figures.setdefault("total", 100)
    return LiveStats(batch, "r1", started_at=T0, now=T0 + 30, **figures)


def on_disk(path: Path | None) -> dict:
    """The published document as a strict JSON parser reads it (NaN or Infinity refused)."""
    assert path is not None

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python process (the venv's interpreter)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, check=True)


# -- where snapshots live --------------------------------------------------------------------


def test_snapshot_path_is_a_folder_beside_the_store(tmp_path, monkeypatch):
    """<store>.live/<batch>.json, with a relative store path resolved to an absolute one."""
    monkeypatch.chdir(tmp_path)
    assert snapshot_path("runs.duckdb", "leads") == tmp_path / "runs.duckdb.live" / "leads.json"
    assert snapshot_path(tmp_path / "a" / "s.duckdb", "b") == tmp_path / "a" / "s.duckdb.live" / \
        "b.json"


def test_in_memory_stores_publish_nothing(tmp_path, monkeypatch):
    """A ":memory:" store has no snapshot path and its writer writes no file."""
    monkeypatch.chdir(tmp_path)
    assert snapshot_path(":memory:", "items") is None
    writer = SnapshotWriter(":memory:", "items")
    assert writer.publish(live(done=1), force=True) is False
    assert writer.close() is False
    assert list(tmp_path.iterdir()) == []
    assert read_snapshot(":memory:", "items") is None and read_snapshot(":memory:") == []


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", 3])
def test_batch_names_that_are_not_file_names_are_refused(store_path, name):
    """A batch name that could escape the snapshot folder raises ConfigError naming it."""
    with pytest.raises(bk.ConfigError, match="batch name"):
        SnapshotWriter(store_path, name)  # type: ignore[arg-type]


@pytest.mark.parametrize("every", [-1, float("nan"), "1s", True])
def test_bad_every_is_refused(store_path, every):
    """every must be seconds >= 0; anything else raises ConfigError naming the value."""
    with pytest.raises(bk.ConfigError, match="every"):
        SnapshotWriter(store_path, "items", every=every)


# -- what is published -----------------------------------------------------------------------


def test_publish_writes_figures_counts_pid_and_store_only(store_path):
    """The document holds the stats, the counts, pid, host, time and store path, nothing else."""
    clock = FakeClock(start=T0 + 31)
    writer = SnapshotWriter(store_path, "items", clock=clock)
    stats = live(done=40, failed=2, cost_usd=1.5, halt_reason=None)
    counts = {"pending": 58, "running": 0, "done": 40, "failed": 2}
    assert writer.publish(stats, counts=counts) is True
    doc = on_disk(snapshot_path(store_path, "items"))
    assert set(doc) == DOC_KEYS
    assert doc["stats"] == json.loads(json.dumps(stats.to_dict()))
    assert doc["counts"] == counts
    assert (doc["batch"], doc["pid"], doc["published_at"]) == ("items", os.getpid(), T0 + 31)
    assert doc["store"] == str(Path(store_path).resolve())


def test_non_finite_figures_are_published_as_null(store_path):
    """NaN or infinite figures become JSON null, so any strict JSON reader can parse the file."""
    writer = SnapshotWriter(store_path, "items")
    writer.publish(live(done=1, cost_usd=float("inf"), budget_usd=float("nan")))
    doc = on_disk(snapshot_path(store_path, "items"))
    assert doc["stats"]["cost_usd"] is None and doc["stats"]["budget_usd"] is None
    assert doc["stats"]["done"] == 1


def test_counts_given_last_are_kept(store_path):
    """A publish without counts keeps the counts given last."""
    clock = FakeClock(start=T0)
    writer = SnapshotWriter(store_path, "items", clock=clock, every=0)
    writer.publish(live(done=1), counts={"done": 1, "pending": 99})
    writer.publish(live(done=2))
    doc = on_disk(snapshot_path(store_path, "items"))
    assert (doc["stats"]["done"], doc["counts"]) == (2, {"done": 1, "pending": 99})


# -- throttling and closing ------------------------------------------------------------------


def test_publishes_at_most_once_per_every_seconds(store_path):
    """With every=1 (fake clock): a publish within 1 s of the last is skipped unless forced."""
    clock = FakeClock(start=T0)
    writer = SnapshotWriter(store_path, "items", clock=clock, every=1.0)
    path = snapshot_path(store_path, "items")
    done_on_disk = []
    for step, done, force, written in [(0.0, 1, False, True), (0.5, 2, False, False),
                                       (0.0, 3, True, True), (0.75, 4, False, False),
                                       (0.25, 5, False, True), (0.5, 6, False, False)]:
        clock.advance(step)
        assert writer.publish(live(done=done), force=force) is written, done
        done_on_disk.append(on_disk(path)["stats"]["done"])
    assert done_on_disk == [1, 1, 3, 3, 5, 5]
    assert writer.published == 3
    assert on_disk(path)["published_at"] == T0 + 1.5


def test_observer_update_publishes_throttled(store_path):
    """update(stats) is the observer hook: it publishes like publish(stats)."""
    clock = FakeClock(start=T0)
    writer = SnapshotWriter(store_path, "items", clock=clock, every=5.0)
    writer.update(live(done=1))
    writer.update(live(done=2))
    assert on_disk(snapshot_path(store_path, "items"))["stats"]["done"] == 1
    assert writer.published == 1


def test_close_publishes_the_final_figures_and_stops(store_path):
    """close(stats) publishes at once despite the throttle; later publishes write nothing."""
    clock = FakeClock(start=T0)
    writer = SnapshotWriter(store_path, "items", clock=clock, every=60.0)
    writer.publish(live(done=10), counts={"done": 10})
    assert writer.close(live(done=100, state="completed"), counts={"done": 100}) is True
    doc = on_disk(snapshot_path(store_path, "items"))
    assert (doc["stats"]["state"], doc["stats"]["done"], doc["counts"]) == (
        "completed", 100, {"done": 100})
    clock.advance(120)
    assert writer.publish(live(done=5)) is False
    assert writer.close() is False
    assert on_disk(snapshot_path(store_path, "items"))["stats"]["done"] == 100


def test_close_without_stats_publishes_the_last_figures_given(store_path):
    """close() with no argument publishes the last stats handed to publish, even a throttled one."""
    clock = FakeClock(start=T0)
    writer = SnapshotWriter(store_path, "items", clock=clock, every=60.0)
    writer.publish(live(done=1))
    writer.publish(live(done=7))  # throttled
    assert writer.close() is True
    assert on_disk(snapshot_path(store_path, "items"))["stats"]["done"] == 7


# -- atomic writes ---------------------------------------------------------------------------


def test_a_failed_write_leaves_the_previous_snapshot_whole(store_path, monkeypatch, caplog):
    """If moving the new file into place fails, the old snapshot stays intact, no temp file is
    left behind, the error is logged and publish returns False (the run is not disturbed)."""
    writer = SnapshotWriter(store_path, "items", every=0)
    writer.publish(live(done=1))
    path = snapshot_path(store_path, "items")
    assert path is not None
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with caplog.at_level(logging.WARNING, logger="batchkit"):
        assert writer.publish(live(done=2)) is False
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["items.json"]
    assert "disk on fire" in caplog.text
    monkeypatch.undo()
    assert writer.publish(live(done=3)) is True
    assert on_disk(path)["stats"]["done"] == 3


def test_a_reader_never_sees_a_torn_snapshot(store_path):
    """Hundreds of publishes with a reader polling meanwhile: every read parses whole."""
    writer = SnapshotWriter(store_path, "items", every=0)
    path = snapshot_path(store_path, "items")
    assert path is not None
    big = {f"status_{i}": i for i in range(400)}  # a few KB, so writes are not one tiny block
    writer.publish(live(done=0), counts=big)
    stop = threading.Event()
    reads: list[int] = []
    torn: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            text = path.read_text(encoding="utf-8")
            try:
                reads.append(json.loads(text)["stats"]["done"])
            except ValueError:
                torn.append(text[-40:])

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for done in range(1, 301):
            writer.publish(live(done=done), counts=big)
    finally:
        stop.set()
        reader.join()
    assert torn == []
    assert len(reads) > 0 and reads == sorted(reads)
    assert on_disk(path)["stats"]["done"] == 300


# -- reading ---------------------------------------------------------------------------------


def test_read_adds_age_and_live_flag(store_path):
    """age_s is measured from published_at; a fresh snapshot of this living process is live,
    one older than stale_after (10 s by default) is not."""
    clock = FakeClock(start=T0)
    SnapshotWriter(store_path, "items", clock=clock).publish(live(done=3))
    fresh = read_snapshot(store_path, "items", now=T0 + 2.5)
    assert fresh is not None
    assert (fresh["age_s"], fresh["live"], fresh["stats"]["done"]) == (2.5, True, 3)
    assert read_snapshot(store_path, "items", now=T0 + 9.9)["live"] is True
    assert read_snapshot(store_path, "items", now=T0 + 10.0)["live"] is False
    assert read_snapshot(store_path, "items", now=T0 + 10.0, stale_after=30)["live"] is True
    assert read_snapshot(store_path, "items", now=T0 - 5)["age_s"] == 0.0


def test_read_all_batches_sorted_and_missing_ones(store_path):
    """batch=None lists every batch's snapshot by name; a missing batch reads as None."""
    assert read_snapshot(store_path) == []
    assert read_snapshot(store_path, "zeta") is None
    for name, done in (("zeta", 1), ("alpha", 2)):
        SnapshotWriter(store_path, name).publish(live(name, done=done))
    docs = read_snapshot(store_path)
    assert [(d["batch"], d["stats"]["done"]) for d in docs] == [("alpha", 2), ("zeta", 1)]
    assert all(d["live"] for d in docs)
    assert read_snapshot(store_path, "nope") is None


def test_unreadable_snapshot_files_are_skipped(store_path):
    """A file that is not a snapshot (bad JSON, wrong shape) reads as None and is left out."""
    SnapshotWriter(store_path, "good").publish(live("good", done=1))
    folder = snapshot_path(store_path, "good").parent
    (folder / "garbage.json").write_text("{not json", encoding="utf-8")
    (folder / "shape.json").write_text("[1, 2]", encoding="utf-8")
    assert read_snapshot(store_path, "garbage") is None
    assert read_snapshot(store_path, "shape") is None
    assert [d["batch"] for d in read_snapshot(store_path)] == ["good"]


def test_snapshot_of_a_dead_process_is_not_live(store_path):
    """A snapshot whose publisher exited is not live, however fresh it is."""
    proc = run_python("""
        import os, sys
        from batchkit._live import LiveStats
        from batchkit._snapshot import SnapshotWriter
        w = SnapshotWriter(sys.argv[1], "items")
        w.publish(LiveStats("items", "r9", total=10, done=4), counts={"done": 4})
        print(os.getpid())
    """, store_path)
    dead_pid = int(proc.stdout.strip())
    doc = read_snapshot(store_path, "items")
    assert doc is not None and doc["pid"] == dead_pid != os.getpid()
    fresh = read_snapshot(store_path, "items", now=doc["published_at"])
    assert (fresh["age_s"], fresh["live"]) == (0.0, False)
    assert fresh["stats"]["run_id"] == "r9" and fresh["counts"] == {"done": 4}


def test_snapshot_from_another_host_is_judged_by_age(store_path):
    """A pid on another host cannot be checked here: such a snapshot is live while fresh."""
    clock = FakeClock(start=T0)
    SnapshotWriter(store_path, "items", clock=clock).publish(live(done=1))
    path = snapshot_path(store_path, "items")
    doc = on_disk(path)
    doc.update(host="some-other-machine", pid=2**22 + 12345)  # no such process here
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert read_snapshot(store_path, "items", now=T0 + 1)["live"] is True
    assert read_snapshot(store_path, "items", now=T0 + 11)["live"] is False


def test_clear_snapshots_removes_them_all(store_path):
    """clear_snapshots deletes every snapshot and temp file beside the store and the folder."""
    assert clear_snapshots(store_path) == 0
    for name in ("a", "b"):
        SnapshotWriter(store_path, name).publish(live(name, done=1))
    folder = snapshot_path(store_path, "a").parent
    (folder / ".a.x1.tmp").write_text("half", encoding="utf-8")
    assert clear_snapshots(store_path) == 2
    assert not folder.exists()
    assert read_snapshot(store_path) == []


def test_clear_snapshots_leaves_other_files(store_path):
    """A file that is not a snapshot keeps the folder (and itself) in place."""
    SnapshotWriter(store_path, "a").publish(live("a", done=1))
    folder = snapshot_path(store_path, "a").parent
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    assert clear_snapshots(store_path) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


# -- the point of it all: another process, while DuckDB holds the store ----------------------

WATCHER = """
    import json, sys
    import duckdb
    from batchkit._snapshot import read_snapshot

    store = sys.argv[1]
    try:
        duckdb.connect(store, read_only=True).close()
        opened = "opened"
    except duckdb.Error as exc:
        opened = "refused: " + str(exc)
    print(json.dumps({"db": opened}), flush=True)
    for line in sys.stdin:          # one read per line the test sends
        print(json.dumps({"snapshot": read_snapshot(store, line.strip())}), flush=True)
"""


def test_another_process_watches_a_run_while_duckdb_holds_the_store(store_path):
    """While this process holds the store open for writing, a second process cannot open the
    DuckDB file (not even read-only) but reads each published snapshot, fresh and live."""
    con = duckdb.connect(store_path)  # the writer: holds the file for the whole test
    con.execute("CREATE TABLE items AS SELECT range AS n FROM range(100)")
    seen = []
    with subprocess.Popen([sys.executable, "-c", textwrap.dedent(WATCHER), store_path],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as watcher:
        assert watcher.stdin is not None and watcher.stdout is not None
        try:
            db = json.loads(watcher.stdout.readline())["db"]
            assert db.startswith("refused") and "lock" in db.lower(), db
            writer = SnapshotWriter(store_path, "items", every=0)
            for done in (10, 55, 100):
                state = "completed" if done == 100 else "running"
                writer.publish(live(done=done, state=state),
                               counts={"pending": 100 - done, "done": done})
                watcher.stdin.write("items\n")
                watcher.stdin.flush()
                doc = json.loads(watcher.stdout.readline())["snapshot"]
                seen.append((doc["stats"]["done"], doc["counts"]["done"],
                             doc["stats"]["state"]))
                assert doc["pid"] == os.getpid() and doc["live"] is True
                assert doc["age_s"] < 10
            con.execute("SELECT count(*) FROM items").fetchone()  # the writer still holds it
        finally:
            watcher.stdin.close()
            watcher.wait(timeout=60)
            con.close()
        errors = watcher.stderr.read() if watcher.stderr else ""
    assert watcher.returncode == 0, errors
    assert seen == [(10, 10, "running"), (55, 55, "running"), (100, 100, "completed")]
