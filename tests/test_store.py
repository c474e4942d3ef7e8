"""The DuckDB store: locking, versions, layout, reclaiming dead runs and fenced commits."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import duckdb
import polars as pl
import pytest
import rowfns

import batchkit as bk
from batchkit._store import SCHEMA_VERSION, Store

# -- opening -----------------------------------------------------------------------------

_HOLD = (
    "import duckdb, sys\n"
    "con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == 'ro')\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.mark.parametrize("mode", ["rw", "ro"])
def test_store_held_by_another_process_raises_with_its_pid(store_path, mode):
    """A store another process holds (even read-only) raises StoreInUseError naming its PID."""
    with bk.Batch("b", store=store_path) as first:
        first.add(pl.DataFrame({"n": [1]}), key="n")
    with subprocess.Popen([sys.executable, "-c", _HOLD, store_path, mode],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout.readline().strip() == "ready"
            with pytest.raises(bk.StoreInUseError) as err:
                bk.Batch("b", store=store_path)
            assert err.value.pid == holder.pid
            assert f"store is in use by PID {holder.pid}" in str(err.value)
            assert isinstance(err.value, bk.StoreError)
        finally:
            holder.stdin.close()
            holder.wait(timeout=30)
    with bk.Batch("b", store=store_path) as again:  # free once the holder is gone
        assert again.counts()["pending"] == 1


def test_store_of_newer_schema_version_raises(store_path):
    """A store whose schema version is newer than this batchkit raises StoreVersionError."""
    with bk.Batch("b", store=store_path) as batch:
        batch.store.set_schema_version(SCHEMA_VERSION + 1)
    with pytest.raises(bk.StoreVersionError) as err:
        bk.Batch("b", store=store_path)
    assert err.value.found == SCHEMA_VERSION + 1
    assert err.value.supported == SCHEMA_VERSION
    assert "Upgrade batchkit" in str(err.value)


def test_store_of_current_or_older_version_opens(store_path):
    """A store of this schema version (or an older one) opens."""
    with bk.Batch("b", store=store_path) as batch:
        batch.add(pl.DataFrame({"n": [1, 2]}), key="n")
        batch.store.set_schema_version(SCHEMA_VERSION)
    with bk.Batch("b", store=store_path) as batch:
        assert batch.counts()["pending"] == 2


def test_file_that_is_not_a_store_raises_store_error(tmp_path):
    """A file that is not a DuckDB database raises StoreError naming the path."""
    path = tmp_path / "notes.duckdb"
    path.write_text("these are not the rows you are looking for\n" * 100)
    with pytest.raises(bk.StoreError) as err:
        bk.Batch("b", store=str(path))
    assert not isinstance(err.value, bk.StoreInUseError)
    assert "notes.duckdb" in str(err.value)


def test_two_batches_on_one_file_share_the_store(store_path):
    """Two Batch objects on one file in one process share it; closing one keeps the other open."""
    first = bk.Batch("first", store=store_path)
    second = bk.Batch("second", store=store_path)
    try:
        first.add(pl.DataFrame({"n": [1, 2]}), key="n")
        second.add(pl.DataFrame({"m": ["a"]}), key="m")
        first.close()
        second.run(lambda row: {"up": row["m"].upper()}, backend="sequential", progress=False)
        assert second.results()["up"].to_list() == ["A"]
    finally:
        first.close()
        second.close()
    with bk.Batch("first", store=store_path) as again:
        assert again.counts()["pending"] == 2
        assert sorted(again.store.batch_names()) == ["first", "second"]


def test_default_store_path_comes_from_environment(tmp_path, monkeypatch):
    """Without store=, the batch uses $BATCHKIT_STORE."""
    path = tmp_path / "env.duckdb"
    monkeypatch.setenv("BATCHKIT_STORE", str(path))
    with bk.Batch("b") as batch:
        batch.add(pl.DataFrame({"n": [1]}), key="n")
        assert batch.store_path == str(path)
    assert path.exists()


# -- layout ------------------------------------------------------------------------------


def test_store_layout_is_plain_duckdb(store_path):
    """The store holds the documented tables, queryable with DuckDB SQL once closed."""
    with bk.Batch("leads", store=store_path) as batch:
        batch.add(pl.DataFrame({"company": ["acme", "initech"], "size": [3, 4]}),
                  key="company")
        report = batch.run(lambda row: {"big": row["size"] > 3},
                           backend="sequential", progress=False)
    con = duckdb.connect(store_path, read_only=True)
    try:
        tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables")
                  .fetchall()}
        assert {"_batchkit_meta", "_batchkit_batches", "_batchkit_runs", "leads",
                "leads__results"} <= tables
        meta = dict(con.sql("SELECT key, value FROM _batchkit_meta").fetchall())
        assert meta["schema_version"] == str(SCHEMA_VERSION)
        assert meta["created_by"].startswith("batchkit ")
        columns = [r[0] for r in con.sql("DESCRIBE leads").fetchall()]
        assert columns == ["_id", "_key", "company", "size", *bk.STATUS_COLUMNS]
        assert con.sql("SELECT _key, _status FROM leads ORDER BY _id").fetchall() == [
            ("acme", "done"), ("initech", "done")]
        assert con.sql("SELECT _id, big FROM leads__results ORDER BY _id").fetchall() == [
            (1, False), (2, True)]
        [(name, keys)] = con.sql("SELECT name, key_columns FROM _batchkit_batches").fetchall()
        assert (name, json.loads(keys)) == ("leads", ["company"])
        run = con.sql("SELECT run_id, batch, outcome, function, finished_at IS NOT NULL "
                      "FROM _batchkit_runs").fetchall()
        assert run == [(report.run_id, "leads", "completed", "<lambda>", True)]
    finally:
        con.close()


def test_added_rows_have_pending_status_and_timestamps(batch):
    """New rows are pending with zero attempts and an _added_at time."""
    batch.add(pl.DataFrame({"n": [1, 2]}), key="n")
    items = batch.items()
    assert items["_status"].to_list() == ["pending", "pending"]
    assert items["_attempts"].to_list() == [0, 0]
    added = items["_added_at"][0]
    assert isinstance(added, dt.datetime)
    assert abs((dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - added).total_seconds()) \
        < 3600


# -- reclaiming rows of dead runs -------------------------------------------------------


def _claim(store: Store, name: str, run_id: str, ids: tuple[int, int], *, now: float = 0.0,
           max_attempts: int = 4) -> pl.DataFrame:
    """Start run ``run_id`` and claim the rows with ids in ``ids`` (inclusive)."""
    store.begin_run(name, run_id, "fn", {}, max_attempts=max_attempts)
    claimed = store.checkpoint(name, run_id, None, None, claim=ids, now=now)
    assert claimed is not None
    return claimed


def test_rows_left_running_by_a_dead_run_are_reclaimed(batch, clock):
    """A new run takes back rows a dead run left running and finishes them."""
    batch.add(pl.DataFrame({"n": [1, 2, 3, 4]}), key="n")
    claimed = _claim(batch.store, "items", "deadrun", (1, 2), now=clock.time())
    assert claimed["_id"].to_list() == [1, 2]
    assert batch.counts()["running"] == 2
    report = batch.run(rowfns.square, backend="sequential", progress=False)
    assert report.reclaimed == 2
    assert batch.counts() == {"pending": 0, "running": 0, "done": 4, "failed": 0}
    items = batch.items()
    assert items["_attempts"].to_list() == [2, 2, 1, 1]  # the dead run's dispatch counted
    assert items["_run_id"].unique().to_list() == [report.run_id]
    runs = batch.store.query("SELECT run_id, outcome FROM _batchkit_runs ORDER BY started_at")
    assert dict(runs.iter_rows()) == {"deadrun": "died", report.run_id: "completed"}


def test_reclaimed_rows_without_attempts_left_fail_retryable(batch, clock):
    """A reclaimed row whose attempts are used up fails as RunDied, retryable."""
    batch.add(pl.DataFrame({"n": [1, 2]}), key="n")
    _claim(batch.store, "items", "deadrun", (1, 1), now=clock.time())
    report = batch.run(rowfns.square, retries=0, backend="sequential", progress=False)
    assert report.reclaimed == 1
    failed = batch.failed()
    assert failed["key"].to_list() == ["1"]
    assert failed["error_type"].to_list() == ["RunDied"]
    assert failed["retryable"].to_list() == [True]
    assert batch.counts()["done"] == 1


# -- fenced commits ----------------------------------------------------------------------


def _outcome(ids: list[int], attempt: int, status: str = "done") -> pl.DataFrame:
    now = dt.datetime(2025, 1, 1)
    n = len(ids)
    return pl.DataFrame({
        "_id": pl.Series(ids, dtype=pl.Int64),
        "_attempt": pl.Series([attempt] * n, dtype=pl.Int32),
        "_status": [status] * n,
        "_error_type": pl.Series([None] * n, dtype=pl.String),
        "_error_message": pl.Series([None] * n, dtype=pl.String),
        "_error_trace": pl.Series([None] * n, dtype=pl.String),
        "_retryable": pl.Series([None] * n, dtype=pl.Boolean),
        "_not_before": pl.Series([None] * n, dtype=pl.Float64),
        "_started_at": [now] * n,
        "_finished_at": [now] * n,
        "_duration_s": [0.01] * n,
    })


def _values(ids: list[int], attempt: int, v: int) -> pl.DataFrame:
    return pl.DataFrame({"_id": pl.Series(ids, dtype=pl.Int64),
                         "_attempt": pl.Series([attempt] * len(ids), dtype=pl.Int32),
                         "v": [v] * len(ids)})


def _state(batch: bk.Batch) -> list[tuple]:
    return batch.items().select("_id", "_status", "_attempts", "_run_id").rows()


def test_commit_with_stale_attempt_changes_nothing(batch):
    """Results for an attempt other than the row's current one are ignored."""
    batch.add(pl.DataFrame({"n": [1, 2]}), key="n")
    store = batch.store
    _claim(store, "items", "r1", (1, 2))
    before = _state(batch)
    store.checkpoint("items", "r1", _outcome([1, 2], attempt=0), _values([1, 2], 0, v=9))
    store.checkpoint("items", "r1", _outcome([1, 2], attempt=2), _values([1, 2], 2, v=9))
    assert _state(batch) == before
    assert store.query('SELECT count(*) AS n FROM "items__results"')["n"][0] == 0
    store.checkpoint("items", "r1", _outcome([1], attempt=1), _values([1], 1, v=5))
    assert batch.items().select("_id", "_status", "v").rows() == [
        (1, "done", 5), (2, "running", None)]


def test_duplicate_commit_is_ignored(batch):
    """A second result for an attempt already recorded changes nothing."""
    batch.add(pl.DataFrame({"n": [1]}), key="n")
    store = batch.store
    _claim(store, "items", "r1", (1, 1))
    store.checkpoint("items", "r1", _outcome([1], attempt=1), _values([1], 1, v=5))
    store.checkpoint("items", "r1", _outcome([1], attempt=1, status="failed"),
                     _values([1], 1, v=6))
    assert batch.items().select("_status", "v").rows() == [("done", 5)]
    assert store.query('SELECT count(*) AS n FROM "items__results"')["n"][0] == 1


def test_commit_from_another_run_changes_nothing(batch):
    """Results sent under another run_id are ignored, even with the current attempt number."""
    batch.add(pl.DataFrame({"n": [1]}), key="n")
    store = batch.store
    _claim(store, "items", "r1", (1, 1))
    before = _state(batch)
    store.checkpoint("items", "other", _outcome([1], attempt=1), _values([1], 1, v=7))
    assert _state(batch) == before
    assert store.query('SELECT count(*) AS n FROM "items__results"')["n"][0] == 0


def test_late_result_of_a_dead_run_is_ignored(batch):
    """After a row is reclaimed and dispatched again, the dead run's late result is ignored."""
    batch.add(pl.DataFrame({"n": [1]}), key="n")
    store = batch.store
    _claim(store, "items", "r1", (1, 1))  # attempt 1, then r1 "dies"
    _claim(store, "items", "r2", (1, 1))  # reclaimed, attempt 2
    store.checkpoint("items", "r1", _outcome([1], attempt=1), _values([1], 1, v=1))
    assert _state(batch) == [(1, "running", 2, "r2")]
    store.checkpoint("items", "r2", _outcome([1], attempt=2), _values([1], 2, v=2))
    assert batch.items().select("_status", "_attempts", "v").rows() == [("done", 2, 2)]
