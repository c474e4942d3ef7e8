"""Watching a batch from another process: ``bk.Batch(..., read_only=True)`` and
``batchkit status STORE [BATCH]``, with the store free and while a real second process
holds it (DuckDB then refuses everyone else: the figures come from the live snapshot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

import batchkit as bk
from batchkit._cli import main as cli_main
from batchkit._readonly import (
    BatchStatus,
    ReadOnlyBatch,
    clusters_from_dict,
    metrics_from_dict,
)
from batchkit._snapshot import clusters_to_dicts, read_snapshot

LIVEFNS = Path(__file__).with_name("livefns.py")
BATCHKIT_SCRIPT = Path(sys.executable).with_name("batchkit")


def odd_row(row: dict) -> dict:
    """Fails on rows whose n is a multiple of 3 (with a numbered message)."""
    if row["n"] % 3 == 0:
        raise bk.Permanent(f"row {row['n']} is a multiple of three")
    return {"half": row["n"] / 2}


@pytest.fixture
def finished(store_path) -> str:
    """A store whose batch ``items`` (30 rows, 10 failed) ran and was closed."""
    with bk.Batch("items", store=store_path) as b:
        b.add(pl.DataFrame({"n": list(range(30)),
                            "tag": ["x" if i % 3 == 0 else "y" for i in range(30)]}), key="n")
        b.run(odd_row, workers=2, retries=0, progress=False)
    return store_path


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the command line in this process (another process than the run's)."""
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class Child:
    """A second process from tests/livefns.py, reading its JSON lines."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(LIVEFNS), *argv],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.pid = int(self.read()["pid"])

    def read(self) -> dict:
        """The next JSON line (fails with the child's stderr if it ended)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            raise AssertionError(f"the child ended: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        return json.loads(line)

    def release(self) -> None:
        """Send the line it waits for, and wait for its end."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        """Kill it if it still runs (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def child() -> Iterator[list[Child]]:
    """Second processes started by a test, killed at teardown if still running."""
    started: list[Child] = []
    yield started
    for c in started:
        c.stop()


def wait_for_snapshot(store: str, deadline_s: float = 60.0) -> dict:
    """The batch's first live snapshot (polls; fails after ``deadline_s``)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        doc = read_snapshot(store, "live")
        if doc is not None and doc.get("counts"):
            return doc
        time.sleep(0.1)
    raise AssertionError("no live snapshot was published")


# -- the store is free: the read-only batch reads the database ------------------------------


def test_read_only_batch_reads_what_the_writer_wrote(finished):
    """A read-only Batch is a Batch (a ReadOnlyBatch) and reads the same rows and figures."""
    ro = bk.Batch("items", store=finished, read_only=True)
    assert type(ro) is ReadOnlyBatch and isinstance(ro, bk.Batch)
    with bk.Batch("items", store=finished) as rw:
        expected = (rw.counts(), rw.results(), rw.failed(), rw.items(), rw.attempts(),
                    rw.metrics(), [c.template for c in rw.failures()])
    got = (ro.counts(), ro.results(), ro.failed(), ro.items(), ro.attempts(), ro.metrics(),
           [c.template for c in ro.failures()])
    assert got[0] == expected[0] == {"pending": 0, "running": 0, "done": 20, "failed": 10}
    for mine, theirs in zip(got[1:5], expected[1:5]):
        assert mine.equals(theirs)
    assert got[5] == expected[5] and got[6] == expected[6] == ["row <n> is a multiple of three"]
    assert "Batch `items`" in ro.report().markdown
    status = ro.status()
    assert (status.source, status.held_by, status.counts) == ("database", None, expected[0])


def test_read_only_batch_holds_no_file_between_calls(finished):
    """After a call the file is free: another process opens it for writing at once."""
    ro = bk.Batch("items", store=finished, read_only=True)
    assert ro.counts()["done"] == 20
    opened = subprocess.run(
        [sys.executable, "-c", "import sys, duckdb; duckdb.connect(sys.argv[1]).close()",
         finished], capture_output=True, text=True, timeout=60)
    assert opened.returncode == 0, opened.stderr
    with bk.Batch("items", store=finished) as rw:  # and this process can write again
        assert rw.store.read_only is False
    assert ro.metrics().dead_letters == 10


def test_read_only_batch_refuses_to_write(finished):
    """add/run/start raise ConfigError naming read_only; close() and `with` are harmless."""
    with bk.Batch("items", store=finished, read_only=True) as ro:
        for call in (lambda: ro.add(pl.DataFrame({"n": [99]}), key="n"),
                     lambda: ro.run(odd_row), lambda: ro.start(odd_row)):
            with pytest.raises(bk.ConfigError, match="read_only=True"):
                call()
        with pytest.raises(bk.ConfigError, match="opens its store for each call"):
            _ = ro.store
    assert ro.counts()["pending"] == 0


def test_read_only_needs_an_existing_store_and_batch(tmp_path, finished):
    """In-memory or missing stores, unknown batches and subclasses raise ConfigError."""
    with pytest.raises(bk.ConfigError, match="store file"):
        bk.Batch("items", store=":memory:", read_only=True)
    with pytest.raises(bk.ConfigError, match="no store at"):
        bk.Batch("items", store=tmp_path / "nope.duckdb", read_only=True)
    assert not (tmp_path / "nope.duckdb").exists()
    with pytest.raises(bk.ConfigError, match=r"no batch 'other'.*\['items'\]"):
        bk.Batch("other", store=finished, read_only=True)

    class Mine(bk.Batch):
        """A user's subclass."""

    with pytest.raises(bk.ConfigError, match="bk.Batch itself"):
        Mine("items", store=finished, read_only=True)


def test_metrics_and_clusters_survive_the_snapshot_format(finished):
    """Metrics and the top clusters rebuilt from their plain-data form equal the originals;
    a snapshot cluster has no row ids, so re-running it asks for the real one."""
    with bk.Batch("items", store=finished) as b:
        metrics, clusters = b.metrics(), b.failures()
        plain = json.loads(json.dumps({"m": metrics.to_dict(),
                                       "c": clusters_to_dicts(clusters)}))
        again = metrics_from_dict(plain["m"])
        assert again == metrics and again.steps.equals(metrics.steps)
        rebuilt = clusters_from_dict(plain["c"])
        assert [(c.id, c.template, c.count, c.example_keys,
                 [o.sentence for o in c.over_represented]) for c in rebuilt] == [
            (c.id, c.template, c.count, c.example_keys,
             [o.sentence for o in c.over_represented]) for c in clusters]
        assert (rebuilt.failed, rebuilt.total) == (10, 30)
        with pytest.raises(bk.ConfigError, match="no row ids"):
            b.run(odd_row, only=rebuilt[0], progress=False)
        assert b.counts()["failed"] == 10


def test_status_of_a_batch_from_the_database(capsys, finished):
    """`status STORE BATCH` prints counts, every metric and the clusters; --json has the
    same metrics as batch.metrics()."""
    code, out, err = cli(capsys, "status", finished, "items")
    assert code == 0, err
    for text in ("source: the database", "20 done", "p50", "p95", "p99", "items/min",
                 "10 dead letters: 10 permanent", "cost", "ETA",
                 "row <n> is a multiple of three", "tag = 'x'"):
        assert text in out, text
    code, out, _ = cli(capsys, "status", finished, "items", "--json")
    doc = json.loads(out)
    with bk.Batch("items", store=finished) as b:
        assert doc["metrics"] == json.loads(json.dumps(b.metrics().to_dict()))
    assert (doc["source"], doc["counts"]["failed"], doc["clusters"]["count"]) == (
        "database", 10, 1)
    code, _, err = cli(capsys, "status", finished, "nope")
    assert code == 2 and "no batch 'nope'" in err


# -- another process holds the store ---------------------------------------------------------


@pytest.mark.slow
def test_status_during_a_run_in_another_process(capsys, store_path, child):
    """While a second process runs the batch, `batchkit status` (in this process and as a
    command) shows live snapshot figures that move, with their age and the PID holding the
    store; after the run it shows the full metrics from the database."""
    run = Child("run", store_path, "120", "0.15")
    child.append(run)
    wait_for_snapshot(store_path)
    samples: list[dict] = []
    command_out = ""
    while True:
        code, out, err = cli(capsys, "status", store_path, "live", "--json")
        assert code == 0, err
        doc = json.loads(out)
        if doc["source"] == "database":
            break  # the run ended and released the store
        if not doc["running"]:
            time.sleep(0.1)
            continue
        samples.append(doc)
        assert doc["held_by_pid"] == run.pid and doc["snapshot"]["pid"] == run.pid
        assert doc["snapshot"]["age_s"] < 5
        if not command_out and doc["counts"]["done"] and doc["metrics"] is not None:
            shown = subprocess.run([str(BATCHKIT_SCRIPT), "status", store_path, "live"],
                                   capture_output=True, text=True, timeout=60)
            assert shown.returncode == 0, shown.stderr
            command_out = shown.stdout
        time.sleep(0.3)
    ended = [s["counts"]["done"] + s["counts"]["failed"] for s in samples]
    assert len(set(ended)) >= 3 and ended == sorted(ended), ended
    with_metrics = [s for s in samples if s["metrics"] is not None]
    assert with_metrics and all(s["metrics_age_s"] < 10 for s in with_metrics)
    assert any(s["clusters"] and s["clusters"]["count"] for s in with_metrics)
    assert f"in use by PID {run.pid} (a run is going on)" in command_out, command_out
    assert "published" in command_out and "s ago" in command_out and "p95" in command_out
    final = run.read()
    assert final["done"] is True
    run.proc.wait(timeout=60)
    code, out, _ = cli(capsys, "status", store_path, "live", "--json")
    after = json.loads(out)
    assert (after["source"], after["held_by_pid"]) == ("database", None)
    assert after["counts"] == final["counts"] and after["metrics"] == final["metrics"]
    assert after["metrics"]["cost_usd"] == pytest.approx(0.24)
    code, out, _ = cli(capsys, "status", store_path, "live")
    assert "source: the database" in out and "p99" in out and "country = 'BR'" in out


@pytest.mark.slow
def test_read_only_batch_during_a_run_in_another_process(store_path, child):
    """A read-only Batch in this process reads counts, metrics, failures and a report from
    the live snapshot while another process runs the batch, and refuses results() with a
    message naming the PID and what works instead; after the run it reads the database."""
    run = Child("run", store_path, "120", "0.15")
    child.append(run)
    wait_for_snapshot(store_path)
    ro = bk.Batch("live", store=store_path, read_only=True)
    seen: list[int] = []
    checked = False
    while True:
        status = ro.status()
        if status.source == "database":
            break
        if not status.running:
            time.sleep(0.1)
            continue
        assert status.held_by == run.pid
        counts = ro.counts()
        seen.append(counts["done"] + counts["failed"])
        if not checked and status.metrics is not None and status.metrics.dead_letters:
            with pytest.raises(bk.StoreInUseError) as info:
                ro.results()
            message = str(info.value)
            assert info.value.pid == run.pid
            assert f"PID {run.pid}" in message and "results()" in message
            assert "batch.counts()" in message and f"batchkit status {store_path} live" in message
            metrics = ro.metrics()
            assert metrics.total == 120 and metrics.dead_letters >= 1
            clusters = ro.failures()
            assert clusters[0].template == "no company with id <n> in the registry"
            assert [o.sentence for o in clusters[0].over_represented if o.column == "country"]
            assert "## Failures" in ro.report().markdown
            with pytest.raises(bk.ConfigError, match="no row ids"):
                _ = clusters[0].expr
            checked = True
        time.sleep(0.3)
    assert checked, "no sample had metrics with a failure during the run"
    assert len(set(seen)) >= 3 and seen == sorted(seen), seen
    final = run.read()
    run.proc.wait(timeout=60)
    assert ro.counts() == final["counts"]
    assert ro.results().height == final["counts"]["done"]


@pytest.mark.slow
def test_a_store_held_after_its_run_shows_the_final_figures(capsys, store_path, child):
    """A process that keeps the batch open after its run (a notebook) still holds the store;
    status and a read-only Batch show the run's final counts and metrics from its snapshot."""
    run = Child("run", store_path, "30", "0.01", "--hold")
    child.append(run)
    final = run.read()
    ro = bk.Batch("live", store=store_path, read_only=True)
    status = ro.status()
    assert isinstance(status, BatchStatus)
    assert (status.source, status.held_by, status.running) == ("snapshot", run.pid, False)
    assert status.counts == final["counts"]
    assert status.metrics is not None and status.metrics.to_dict() == final["metrics"]
    assert ro.metrics().to_dict() == final["metrics"]
    assert "when its run ended (completed)" in str(status)
    code, out, _ = cli(capsys, "status", store_path)
    assert code == 0 and f"in use by PID {run.pid}" in out
    assert "completed" in out and f"{final['counts']['done']:,}" in out
    run.release()
    assert ro.status().source == "database"


@pytest.mark.slow
def test_a_held_store_without_snapshot_says_who_holds_it(capsys, store_path, child):
    """When the holder never ran the batch there is nothing to show: status exits 2 and the
    read-only Batch raises StoreInUseError, both naming the PID."""
    holder = Child("hold", store_path)
    child.append(holder)
    assert holder.read()["holding"] is True
    ro = bk.Batch("live", store=store_path, read_only=True)  # opening works; reading cannot
    with pytest.raises(bk.StoreInUseError, match=f"PID {holder.pid}.*no live snapshot"):
        ro.counts()
    with pytest.raises(bk.StoreInUseError, match=r"items\(\) reads the database"):
        ro.items()
    assert f"PID {holder.pid}" in repr(ro)
    code, _, err = cli(capsys, "status", store_path)
    assert code == 2 and f"in use by PID {holder.pid}" in err and "no batch in it" in err
    code, _, err = cli(capsys, "status", store_path, "live")
    assert code == 2 and f"PID {holder.pid}" in err
    holder.release()
    assert ro.counts()["pending"] == 20
    assert os.path.exists(store_path)
