"""The DuckDB store: the only module that imports duckdb or writes SQL.

Layout of a store file (plain DuckDB; query it with SQL when no run holds it)::

    _batchkit_meta     key, value                     schema_version, created_by
    _batchkit_batches  name, key_columns, input_schema (Polars IPC), created_at
    _batchkit_runs     run_id, batch, pid, started_at, finished_at, outcome, function, options
    "<batch>"          one row per item: _id, _key, the input columns, then the status
                       columns (_status, _attempts, _error_type, ... see STATUS_COLUMNS)
    "<batch>__results" _id and the columns the function returned (done rows only)
    "<batch>__attempts" the attempt log: one row per attempt of an item, and per step
    "<batch>__steps"   outputs of pipeline steps that succeeded (per-step checkpoints)
    _batchkit_cache    step results keyed by (step, version, hash of the step's inputs)
    _batchkit_memo     values of ``ctx.memo`` keyed by (step, version, key)

The log tables' SQL lives in ``_storelog.py`` (a mixin of ``Store``, no duckdb import).

Every state change of items happens in one transaction per group of chunks, written
by the driver alone (workers never touch the store).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from ._errors import ConfigError, SchemaError, StoreError, StoreInUseError, StoreVersionError
from ._storelog import LogTables
from ._types import DType, fill_null_leaves, has_null_leaf, merge_dtypes

__all__ = ["STATUSES", "STATUS_COLUMNS", "SCHEMA_VERSION", "Store"]

SCHEMA_VERSION = 2

STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed")

#: The columns batchkit adds to every item, with their DuckDB types.
STATUS_COLUMNS: dict[str, str] = {
    "_status": "VARCHAR",  # pending | running | done | failed
    "_attempts": "INTEGER",  # attempts dispatched so far (counted at dispatch)
    "_attempts_base": "INTEGER",  # _attempts when the row was last (re)queued
    "_error_type": "VARCHAR",  # exception class of the last failed attempt
    "_error_message": "VARCHAR",  # its message, secrets redacted
    "_error_trace": "VARCHAR",  # the last frames of its traceback
    "_retryable": "BOOLEAN",  # failed rows: was the last error transient?
    "_not_before": "DOUBLE",  # pending retries: epoch seconds of the earliest next attempt
    "_started_at": "TIMESTAMP",  # UTC, when the last finished attempt started
    "_finished_at": "TIMESTAMP",  # UTC, when the last attempt ended
    "_duration_s": "DOUBLE",  # how long the last attempt ran in the function
    "_run_id": "VARCHAR",  # the run that touched the row last
    "_added_at": "TIMESTAMP",  # UTC, when the row was added
    "_step": "VARCHAR",  # pipelines: the step the last attempt failed in (NULL when done)
    "_cost_usd": "DOUBLE",  # USD spent on the row across all attempts (NULL: nothing)
}
#: Columns added by schema version 2 (added in place to version-1 stores).
_V2_COLUMNS = ("_step", "_cost_usd")
RESERVED_COLUMNS = frozenset({"_id", "_key", *STATUS_COLUMNS})

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_LOCK_PID = re.compile(r"PID (\d+)")


def _q(name: str) -> str:
    """Quote an identifier for SQL."""
    return '"' + name.replace('"', '""') + '"'


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def check_batch_name(name: str) -> str:
    """Validate a batch name (it becomes a table name)."""
    if not isinstance(name, str) or not _NAME.match(name) or "__" in name:
        raise ConfigError(
            f"batch name must start with a letter and hold only letters, digits and single "
            f"underscores (at most 63 characters), got {name!r}; e.g. 'leads' or 'leads_2026'"
        )
    return name


def _schema_to_bytes(schema: pl.Schema) -> bytes:
    buf = io.BytesIO()
    pl.DataFrame(schema=schema).write_ipc(buf)
    return buf.getvalue()


def _schema_from_bytes(data: bytes) -> pl.Schema:
    return pl.read_ipc(io.BytesIO(data)).schema


def _storable(dtype: DType) -> DType | None:
    """The dtype a column is stored as, if not itself (Durations as Int64)."""
    if isinstance(dtype, pl.Duration):
        return pl.Int64()
    return None


def _contains(dtype: DType, kinds: tuple[type, ...]) -> bool:
    if isinstance(dtype, kinds):
        return True
    if isinstance(dtype, (pl.List, pl.Array)):
        return _contains(dtype.inner, kinds)
    if isinstance(dtype, pl.Struct):
        return any(_contains(f.dtype, kinds) for f in dtype.fields)
    return False


def check_storable_schema(schema: pl.Schema) -> None:
    """Raise SchemaError for columns DuckDB cannot hold exactly."""
    for name, dtype in schema.items():
        if isinstance(dtype, (pl.Int128, pl.Object)) or (
            not isinstance(dtype, pl.Duration) and _contains(dtype, (pl.Duration, pl.Int128,
                                                                    pl.Object))
        ):
            raise SchemaError(
                f"column {name!r} has type {dtype}, which the store cannot hold exactly; "
                "cast it first (e.g. to Int64 or String) with df.with_columns(...)"
            )


def to_store_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Convert columns to the physical types they are stored as."""
    casts = {n: t for n, d in frame.schema.items() if (t := _storable(d)) is not None}
    if not casts:
        return frame
    return frame.with_columns(pl.col(n).to_physical().cast(t) for n, t in casts.items())


def from_store_frame(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Cast columns read from DuckDB back to the exact Polars types they were added with."""
    exprs = []
    for name, dtype in schema.items():
        if name in frame.columns and frame.schema[name] != dtype:
            exprs.append(pl.col(name).cast(dtype))
    return frame.with_columns(exprs) if exprs else frame


def _as_interrupt(exc: BaseException) -> BaseException:
    """DuckDB turns Ctrl-C during a query into an error: make it a KeyboardInterrupt again."""
    if isinstance(exc, duckdb.InterruptException) or "interrupted" in str(exc).lower():
        return KeyboardInterrupt()
    return exc


def _id_range(frame: pl.DataFrame) -> list[int]:
    """[min, max] of a frame's ``_id``: lets DuckDB skip row groups outside it."""
    ids = frame["_id"]
    return [int(ids.min()), int(ids.max())]  # type: ignore[arg-type]


_USAGE = {"_step": pl.String(), "usd": pl.Float64(), "tokens": pl.Int64(), "calls": pl.Int64()}


def _with_usage(outcomes: pl.DataFrame) -> pl.DataFrame:
    """Outcomes with the usage columns (step, usd, tokens, calls), zero when absent."""
    missing = [pl.lit(None if c == "_step" else 0, dtype=t).alias(c)
               for c, t in _USAGE.items() if c not in outcomes.columns]
    return outcomes.with_columns(missing) if missing else outcomes


@dataclass(frozen=True)
class BatchInfo:
    """What the store knows of a batch."""

    name: str
    key_columns: tuple[str, ...] | None  # None: the key is a hash of the row
    input_schema: pl.Schema
    created_at: datetime


class Store(LogTables):
    """An open store file (one DuckDB connection, used by one thread at a time).

    Example:
        >>> s = Store(":memory:")
        >>> s.batch_names()
        []
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.exists():
                raise ConfigError(
                    f"store folder {str(parent)!r} does not exist; create it or choose "
                    "another store path"
                )
        try:
            self.con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" in text.lower():
                pid = _LOCK_PID.search(text)
                raise StoreInUseError(self.path, int(pid.group(1)) if pid else None) from None
            raise StoreError(f"cannot open store {self.path!r}: {text}") from exc
        except duckdb.Error as exc:
            raise StoreError(
                f"cannot open store {self.path!r}: {exc}. Is it a DuckDB file written by "
                "batchkit?"
            ) from exc
        self.lock = threading.RLock()
        self._results_schema: dict[str, dict[str, DType]] = {}
        self._info: dict[str, BatchInfo] = {}
        self._init_meta()

    # -- setup ---------------------------------------------------------------------------

    def _first(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        """Execute and return the first row, or None."""
        rows = self._exec(sql, params)
        return rows[0] if rows else None

    def _exec(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Execute one statement and fetch all its rows (DuckDB wants results finished)."""
        try:
            if params is None:
                return self.con.execute(sql).fetchall()
            return self.con.execute(sql, params).fetchall()
        except (duckdb.InterruptException, RuntimeError) as exc:
            raise _as_interrupt(exc) from None

    def _frame(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run a statement with a result set (SELECT, or UPDATE ... RETURNING) as Polars."""
        try:
            return self.con.sql(sql, params=list(params) if params else None).pl()
        except (duckdb.InterruptException, RuntimeError) as exc:
            raise _as_interrupt(exc) from None

    def _init_meta(self) -> None:
        tables = self._tables()
        if "_batchkit_meta" in tables:
            row = self._first(
                "SELECT value FROM _batchkit_meta WHERE key = 'schema_version'"
            )
            found = int(row[0]) if row else 0
            if found > SCHEMA_VERSION:
                raise StoreVersionError(self.path, found=found, supported=SCHEMA_VERSION)
            if found < SCHEMA_VERSION:
                self._upgrade(found)
            return
        if self.read_only:
            return
        from . import __version__

        self._exec("BEGIN")
        self._exec("CREATE TABLE _batchkit_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        self._exec(
            "INSERT INTO _batchkit_meta VALUES ('schema_version', ?), ('created_by', ?)",
            [str(SCHEMA_VERSION), f"batchkit {__version__}"],
        )
        self._exec(
            "CREATE TABLE _batchkit_batches (name VARCHAR PRIMARY KEY, key_columns VARCHAR, "
            "input_schema BLOB, created_at TIMESTAMP)"
        )
        self._exec(
            "CREATE TABLE _batchkit_runs (run_id VARCHAR PRIMARY KEY, batch VARCHAR, "
            "pid INTEGER, started_at TIMESTAMP, finished_at TIMESTAMP, outcome VARCHAR, "
            "function VARCHAR, options VARCHAR)"
        )
        self._create_global_logs()
        self._exec("COMMIT")

    def _upgrade(self, found: int) -> None:
        """Bring a store of an older schema up to date, in place (one transaction)."""
        if self.read_only:
            raise StoreError(
                f"store {self.path!r} was written by an older batchkit (schema {found}); "
                "open it once without read_only (e.g. bk.Batch(...)) to upgrade it")
        self._exec("BEGIN")
        self._create_global_logs()
        for (name,) in self._exec("SELECT name FROM _batchkit_batches"):
            for col in _V2_COLUMNS:
                self._exec(f"ALTER TABLE {_q(name)} ADD COLUMN IF NOT EXISTS {_q(col)} "
                           f"{STATUS_COLUMNS[col]}")
            self._create_batch_logs(name)
        self._exec("UPDATE _batchkit_meta SET value = ? WHERE key = 'schema_version'",
                   [str(SCHEMA_VERSION)])
        self._exec("COMMIT")

    def _tables(self) -> set[str]:
        rows = self._exec(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        )
        return {r[0] for r in rows}

    def close(self) -> None:
        """Close the connection (the file stays)."""
        with contextlib.suppress(duckdb.Error):
            self.con.close()

    def set_schema_version(self, version: int) -> None:
        """Overwrite the stored schema version (used by tests of version checks)."""
        self._exec(
            "UPDATE _batchkit_meta SET value = ? WHERE key = 'schema_version'", [str(version)]
        )

    # -- batches -------------------------------------------------------------------------

    def batch_names(self) -> list[str]:
        """Names of the batches in this store."""
        if "_batchkit_batches" not in self._tables():
            return []
        return [r[0] for r in self._exec(
            "SELECT name FROM _batchkit_batches ORDER BY name")]

    def batch_info(self, name: str) -> BatchInfo | None:
        """The stored description of a batch, or None if it has no rows yet."""
        if name in self._info:
            return self._info[name]
        if "_batchkit_batches" not in self._tables():
            return None
        row = self._first(
            "SELECT key_columns, input_schema, created_at FROM _batchkit_batches WHERE name = ?",
            [name],
        )
        if row is None:
            return None
        keys = json.loads(row[0])
        info = BatchInfo(name, tuple(keys) if keys is not None else None,
                         _schema_from_bytes(row[1]), row[2])
        self._info[name] = info
        return info

    def _create_batch(self, name: str, key_columns: Sequence[str] | None,
                      frame: pl.DataFrame) -> BatchInfo:
        schema = frame.drop("_key", "_ord").schema
        self.con.register("_bk_new", to_store_frame(frame.head(0)))
        try:
            status_cols = ", ".join(
                f"CAST(NULL AS {t}) AS {_q(c)}" for c, t in STATUS_COLUMNS.items())
            inputs = ", ".join(_q(c) for c in schema)
            self._exec(
                f"CREATE TABLE {_q(name)} AS SELECT CAST(0 AS BIGINT) AS _id, "
                f"CAST(_key AS VARCHAR) AS _key, {inputs}, {status_cols} FROM _bk_new LIMIT 0"
            )
        finally:
            self.con.unregister("_bk_new")
        self._exec(f"CREATE TABLE {_q(name + '__results')} (_id BIGINT)")
        self._create_batch_logs(name)
        self._exec(
            "INSERT INTO _batchkit_batches VALUES (?, ?, ?, ?)",
            [name, json.dumps(list(key_columns) if key_columns is not None else None),
             _schema_to_bytes(schema), _utcnow()],
        )
        info = BatchInfo(name, tuple(key_columns) if key_columns is not None else None,
                         schema, _utcnow())
        self._info[name] = info
        return info

    def add(self, name: str, key_columns: Sequence[str] | None, frame: pl.DataFrame) -> int:
        """Insert rows whose ``_key`` is new; return how many were inserted.

        ``frame`` holds the input columns plus ``_key`` (str) and ``_ord`` (row order).
        """
        with self.lock:
            self._exec("BEGIN")
            try:
                if self.batch_info(name) is None:
                    self._create_batch(name, key_columns, frame)
                info = self.batch_info(name)
                assert info is not None
                cols = list(info.input_schema)
                start = self._exec(f"SELECT coalesce(max(_id), 0) FROM {_q(name)}")[0][0]
                empty = start == 0
                # ids follow the frame's order; rows skipped as known leave gaps (harmless)
                staged = to_store_frame(frame).with_columns(
                    (pl.col("_ord") + (start + 1)).alias("_id"))
                self.con.register("_bk_new", staged)
                try:
                    select = ", ".join(f"v.{_q(c)}" for c in cols)
                    anti = "" if empty else f" ANTI JOIN {_q(name)} i ON i._key = v._key"
                    new = self._exec(
                        f"INSERT INTO {_q(name)} (_id, _key, {', '.join(_q(c) for c in cols)}, "
                        "_status, _attempts, _attempts_base, _added_at) "
                        f"SELECT v._id, v._key, {select}, 'pending', 0, 0, ? "
                        f"FROM _bk_new v{anti}",
                        [_utcnow()],
                    )[0][0]
                finally:
                    self.con.unregister("_bk_new")
                self._exec("COMMIT")
            except BaseException:
                self._exec("ROLLBACK")
                self._info.pop(name, None)
                raise
            return int(new)

    # -- reading -------------------------------------------------------------------------

    def _require(self, name: str) -> BatchInfo:
        info = self.batch_info(name)
        if info is None:
            raise ConfigError(
                f"batch {name!r} has no rows in store {self.path!r}; add rows first with "
                f"batch.add(frame, key=...). Batches here: {self.batch_names()}"
            )
        return info

    def counts(self, name: str) -> dict[str, int]:
        """Rows per status, every status present (zeros too)."""
        out = dict.fromkeys(STATUSES, 0)
        if self.batch_info(name) is None:
            return out
        with self.lock:
            for status, n in self._exec(
                f"SELECT _status, count(*) FROM {_q(name)} GROUP BY _status"
            ):
                out[status] = int(n)
        return out

    def results_schema(self, name: str) -> dict[str, DType]:
        """Result columns of a batch and their Polars types (cached)."""
        if name not in self._results_schema:
            frame = self._frame(f"SELECT * FROM {_q(name + '__results')} LIMIT 0")
            schema: dict[str, DType] = {n: t for n, t in frame.schema.items() if n != "_id"}
            self._results_schema[name] = schema
        return self._results_schema[name]

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run a SELECT and return a Polars frame."""
        with self.lock:
            return self._frame(sql, params)

    def _select_sql(self, name: str, *, where: str, status_columns: bool,
                    results: bool, key: bool = False) -> str:
        info = self._require(name)
        res_cols = list(self.results_schema(name)) if results else []
        parts = ["i._id", "i._key"] if status_columns else (["i._key"] if key else [])
        parts += [f"r.{_q(c)}" if c in res_cols else f"i.{_q(c)}" for c in info.input_schema]
        parts += [f"r.{_q(c)}" for c in res_cols if c not in info.input_schema]
        if status_columns:
            parts += [f"i.{_q(c)}" for c in STATUS_COLUMNS if c != "_attempts_base"]
        join = f" LEFT JOIN {_q(name + '__results')} r ON r._id = i._id" if res_cols else ""
        return (f"SELECT {', '.join(parts)} FROM {_q(name)} i{join} "
                f"WHERE {where} ORDER BY i._id")

    def read(self, name: str, *, where: str = "TRUE", params: Sequence[Any] | None = None,
             status_columns: bool = False, results: bool = True,
             key: bool = False) -> pl.DataFrame:
        """Rows of a batch as Polars, input types restored exactly."""
        info = self._require(name)
        sql = self._select_sql(name, where=where, status_columns=status_columns,
                               results=results, key=key)
        return from_store_frame(self.query(sql, params), info.input_schema)

    def export(self, name: str, path: str, *, where: str, status_columns: bool,
               batch_rows: int = 131_072) -> int:
        """Write selected rows to Parquet, streamed in record batches; return the row count.

        Rows are read and written ``batch_rows`` at a time (input types restored on
        each batch), so the export never holds the whole result in Python memory.
        """
        import pyarrow.parquet as pq

        info = self._require(name)
        sql = self._select_sql(name, where=where, status_columns=status_columns, results=True)
        written = 0
        writer: Any = None
        with self.lock:
            try:
                reader = self.con.sql(sql).to_arrow_reader(batch_rows)
                for batch in reader:
                    frame = pl.from_arrow(batch)
                    assert isinstance(frame, pl.DataFrame)
                    table = from_store_frame(frame, info.input_schema).to_arrow()
                    if writer is None:
                        writer = pq.ParquetWriter(path, table.schema)
                    writer.write_table(table)
                    written += table.num_rows
            except (duckdb.InterruptException, RuntimeError) as exc:
                raise _as_interrupt(exc) from None
            finally:
                if writer is not None:
                    writer.close()
        if writer is None:  # no rows: still a valid file with the right columns
            self.read(name, where="FALSE", status_columns=status_columns).write_parquet(path)
        return written

    # -- runs ----------------------------------------------------------------------------

    def begin_run(self, name: str, run_id: str, function: str, options: dict[str, Any],
                  *, max_attempts: int) -> int:
        """Record a run and reclaim rows left ``running`` by a dead run.

        A reclaimed row whose attempts are used up fails (retryable); the others go
        back to pending. Returns how many rows were reclaimed.
        """
        with self.lock:
            self._exec("BEGIN")
            self._exec(
                "INSERT INTO _batchkit_runs VALUES (?, ?, ?, ?, NULL, 'running', ?, ?)",
                [run_id, name, os.getpid(), _utcnow(), function, json.dumps(options,
                                                                            default=str)],
            )
            self._exec(
                "UPDATE _batchkit_runs SET outcome = 'died', finished_at = ? "
                "WHERE batch = ? AND outcome = 'running' AND run_id <> ?",
                [_utcnow(), name, run_id],
            )
            n = self._exec(
                f"UPDATE {_q(name)} SET "
                "_status = CASE WHEN _attempts - _attempts_base >= ? THEN 'failed' "
                "ELSE 'pending' END, "
                "_error_type = 'RunDied', _error_message = 'the run stopped (crash, kill or "
                "interrupt) while this row was in flight', _retryable = TRUE, "
                "_finished_at = NULL WHERE _status = 'running'",
                [max_attempts],
            )[0][0]
            self._exec("COMMIT")
        return int(n)

    def end_run(self, run_id: str, outcome: str) -> None:
        """Record how a run ended."""
        with self.lock:
            self._exec(
                "UPDATE _batchkit_runs SET finished_at = ?, outcome = ? WHERE run_id = ?",
                [_utcnow(), outcome, run_id],
            )

    def select_ids(self, name: str, ids: pl.Series, *, requeue_failed: bool,
                   requeue_done: bool) -> int:
        """Make ``ids`` this run's selection (a temp table); requeue failed/done rows of it.

        Requeued rows get a fresh attempt budget (``_attempts_base = _attempts``).
        Returns the number of rows requeued.
        """
        statuses = [s for s, on in (("failed", requeue_failed), ("done", requeue_done)) if on]
        with self.lock:
            self._exec("CREATE OR REPLACE TEMP TABLE _bk_selection (_id BIGINT)")
            self.con.register("_bk_ids", pl.DataFrame({"_id": ids.cast(pl.Int64)}))
            try:
                self._exec("INSERT INTO _bk_selection SELECT DISTINCT _id FROM _bk_ids")
            finally:
                self.con.unregister("_bk_ids")
            if not statuses:
                return 0
            placeholders = ", ".join("?" for _ in statuses)
            self._exec("BEGIN")
            n = self._exec(
                f"UPDATE {_q(name)} SET _status = 'pending', _attempts_base = _attempts, "
                "_not_before = NULL WHERE _id IN (SELECT _id FROM _bk_selection) "
                f"AND _status IN ({placeholders})", statuses,
            )[0][0]
            if requeue_done:
                self.forget_step_outputs(name)
                self._exec(
                    f"DELETE FROM {_q(name + '__results')} WHERE _id IN "
                    f"(SELECT _id FROM {_q(name)} WHERE _id IN (SELECT _id FROM _bk_selection) "
                    "AND _status = 'pending')")
            self._exec("COMMIT")
            return int(n)

    def clear_selection(self) -> None:
        """Drop the run's selection."""
        with self.lock:
            self._exec("DROP TABLE IF EXISTS _bk_selection")

    def next_retry_after(self, name: str, *, now: float, selected: bool) -> float | None:
        """Earliest ``_not_before`` of pending rows still waiting after ``now``, if any."""
        sel = " AND _id IN (SELECT _id FROM _bk_selection)" if selected else ""
        with self.lock:
            row = self._first(
                f"SELECT min(_not_before) FROM {_q(name)} WHERE _status = 'pending' "
                f"AND _not_before > ?{sel}", [now])
        return None if row is None or row[0] is None else float(row[0])

    def next_due(self, name: str, *, selected: bool) -> float | None:
        """Earliest ``_not_before`` of pending rows waiting for a retry, if any."""
        sel = " AND _id IN (SELECT _id FROM _bk_selection)" if selected else ""
        with self.lock:
            row = self._first(
                f"SELECT min(coalesce(_not_before, 0)) FROM {_q(name)} "
                f"WHERE _status = 'pending'{sel}")
        return None if row is None or row[0] is None else float(row[0])

    def count_selected(self, name: str, *, selected: bool, status: str) -> int:
        """Rows of a status, within the selection if there is one."""
        sel = " AND _id IN (SELECT _id FROM _bk_selection)" if selected else ""
        with self.lock:
            return int(self._exec(
                f"SELECT count(*) FROM {_q(name)} WHERE _status = ?{sel}", [status]
            )[0][0])

    # -- the hot path: claim and commit ---------------------------------------------------

    def ids_with_status(self, name: str, status: str, *, run_id: str | None = None
                        ) -> pl.Series:
        """Sorted ids of the rows with ``status`` (touched last by ``run_id``, if given)."""
        run = " AND _run_id = ?" if run_id is not None else ""
        params = [status] + ([run_id] if run_id is not None else [])
        return self.query(f"SELECT _id FROM {_q(name)} WHERE _status = ?{run} ORDER BY _id",
                          params)["_id"]

    def pending_ids(self, name: str, *, now: float, selected: bool) -> pl.Series:
        """Sorted ids of pending rows that are due now (within the selection, if any).

        The driver claims rows by ranges of these ids, so a claim never scans the
        whole table (DuckDB prunes row groups by ``_id`` min/max).
        """
        sel = " AND _id IN (SELECT _id FROM _bk_selection)" if selected else ""
        with self.lock:
            return self.query(
                f"SELECT _id FROM {_q(name)} WHERE _status = 'pending' AND "
                f"(_not_before IS NULL OR _not_before <= ?){sel} ORDER BY _id", [now]
            )["_id"]

    def _claim(self, name: str, run_id: str, lo: int, hi: int, *, now: float,
               selected: bool) -> pl.DataFrame:
        """Mark due pending rows with ``lo <= _id <= hi`` running (attempt + 1); return them."""
        info = self._require(name)
        sel = " AND _id IN (SELECT _id FROM _bk_selection)" if selected else ""
        inputs = ", ".join(_q(c) for c in info.input_schema)
        claimed = self._frame(
            f"UPDATE {_q(name)} SET _status = 'running', _attempts = _attempts + 1, "
            "_run_id = ? WHERE _id BETWEEN ? AND ? AND _status = 'pending' "
            f"AND (_not_before IS NULL OR _not_before <= ?){sel} "
            f"RETURNING _id, _key, _attempts, _attempts_base, {inputs}",
            [run_id, lo, hi, now],
        )
        claimed = from_store_frame(claimed, info.input_schema)
        return claimed.sort("_id")

    def _ensure_result_columns(self, name: str, values: pl.DataFrame) -> pl.DataFrame:
        """Add or widen result columns for ``values``; return values cast to the store types.

        Columns that cannot be merged are returned in ``values`` unchanged; the caller
        checks ``conflicts`` via ``result_conflicts`` first.
        """
        known = self.results_schema(name)
        table = _q(name + "__results")
        casts: dict[str, DType] = {}
        for col, dtype in values.schema.items():
            if col in ("_id", "_attempt") or dtype == pl.Null():
                continue
            if col not in known:
                target = fill_null_leaves(dtype) if has_null_leaf(dtype) else dtype
                sql_type = self._sql_type(target)
                self._exec(f"ALTER TABLE {table} ADD COLUMN {_q(col)} {sql_type}")
                known[col] = target
                if target != dtype:
                    casts[col] = target
                continue
            stored = known[col]
            if stored == dtype:
                continue
            merged = merge_dtypes(stored, dtype)
            if merged is None:
                continue
            if merged != stored:
                self._exec(
                    f"ALTER TABLE {table} ALTER {_q(col)} TYPE {self._sql_type(merged)}")
                known[col] = merged
            casts[col] = merged
        if casts:
            values = values.with_columns(pl.col(c).cast(t) for c, t in casts.items())
        return values

    def result_conflicts(self, name: str, values: pl.DataFrame) -> dict[str, DType]:
        """Result columns of ``values`` whose type cannot merge with the stored type."""
        known = self.results_schema(name)
        out = {}
        for col, dtype in values.schema.items():
            if col in known and dtype != pl.Null() and merge_dtypes(known[col], dtype) is None:
                out[col] = known[col]
        return out

    def _sql_type(self, dtype: DType) -> str:
        self.con.register("_bk_t", pl.DataFrame({"x": pl.Series([], dtype=dtype)}))
        try:
            return str(self._exec("DESCRIBE SELECT x FROM _bk_t")[0][1])
        finally:
            self.con.unregister("_bk_t")

    def checkpoint(self, name: str, run_id: str, outcomes: pl.DataFrame | None,
                   values: pl.DataFrame | None, *, steps: pl.DataFrame | None = None,
                   claim: tuple[int, int] | None = None, now: float = 0.0,
                   selected: bool = False) -> pl.DataFrame | None:
        """One transaction: record finished rows (fenced), then claim the id range ``claim``.

        ``outcomes`` has one row per finished attempt: ``_id, _attempt, _status`` and
        the error/timing columns. A row is written only if it is still ``running``
        with the same attempt — attempts are counted at dispatch, so the attempt
        number names the dispatch — and late or duplicate results are ignored.
        ``values`` holds ``_id, _attempt`` and the result columns of done rows;
        ``steps`` the step records of pipeline rows (``STEP_RECORD_SCHEMA``). Every
        accepted attempt also lands in the attempt log.
        Returns the claimed rows (``_id, _key, _attempts, _attempts_base`` + inputs).
        """
        table, results = _q(name), _q(name + "__results")
        with self.lock:
            self._exec("BEGIN")
            try:
                if values is not None and values.height:
                    values = self._ensure_result_columns(name, values)
                    cols = [c for c in values.columns if c in self.results_schema(name)]
                    self.con.register("_bk_values", values.select("_id", "_attempt", *cols))
                    try:
                        names = "".join(f", {_q(c)}" for c in cols)
                        vals = "".join(f", v.{_q(c)}" for c in cols)
                        self._exec(
                            f"INSERT INTO {results} (_id{names}) SELECT v._id{vals} "
                            f"FROM _bk_values v JOIN {table} i ON i._id = v._id "
                            "WHERE i._id BETWEEN ? AND ? AND i._attempts = v._attempt "
                            "AND i._status = 'running' AND i._run_id = ?",
                            [*_id_range(values), run_id])
                    finally:
                        self.con.unregister("_bk_values")
                if steps is not None and steps.height:
                    self._log_steps(name, run_id, steps, _id_range(steps))
                if outcomes is not None and outcomes.height:
                    outcomes = _with_usage(outcomes)
                    self._log_items(name, run_id, outcomes, _id_range(outcomes))
                    self._write_outcomes(table, run_id, outcomes)
                claimed = (self._claim(name, run_id, claim[0], claim[1], now=now,
                                       selected=selected) if claim is not None else None)
                self._exec("COMMIT")
            except BaseException:
                self._exec("ROLLBACK")
                self._results_schema.pop(name, None)
                raise
        return claimed

    _NARROW = ("_id", "_attempt", "_status", "_started_at", "_finished_at", "_duration_s")

    def _write_outcomes(self, table: str, run_id: str, outcomes: pl.DataFrame) -> None:
        """UPDATE rows from outcomes, fenced on run, attempt and status.

        First attempts that succeeded only need four columns (their error columns are
        still empty), which halves the cost of the common case.
        """
        first_ok = ((pl.col("_status") == "done") & (pl.col("_attempt") == 1)
                    & (pl.col("usd") == 0))
        wide = outcomes.filter(~first_ok).drop("tokens", "calls")
        parts = [outcomes.filter(first_ok).select(self._NARROW), wide]
        for part in parts:
            if not part.height:
                continue
            self.con.register("_bk_out", part)
            try:
                # alias _bk_o: batch names start with a letter, so a batch "o" cannot clash
                sets = ", ".join(f"{_q(c)} = _bk_o.{_q(c)}" for c in part.columns
                                 if c not in ("_id", "_attempt", "usd"))
                if "usd" in part.columns:
                    sets += (", _cost_usd = CASE WHEN _bk_o.usd > 0 THEN "
                             f"coalesce({table}._cost_usd, 0) + _bk_o.usd "
                             f"ELSE {table}._cost_usd END")
                self._exec(
                    f"UPDATE {table} SET {sets} FROM _bk_out _bk_o "
                    f"WHERE {table}._id = _bk_o._id AND {table}._id BETWEEN ? AND ? "
                    f"AND {table}._attempts = _bk_o._attempt AND {table}._status = 'running' "
                    f"AND {table}._run_id = ?", [*_id_range(part), run_id])
            finally:
                self.con.unregister("_bk_out")

    def release(self, name: str, run_id: str, ids: Sequence[int] | pl.Series, *,
                refund: bool) -> None:
        """Put running rows of this run back to pending.

        ``refund``: their attempt is not charged (they never started).
        """
        frame = pl.DataFrame({"_id": pl.Series(list(ids) if not isinstance(ids, pl.Series)
                                               else ids, dtype=pl.Int64)})
        if not frame.height:
            return
        with self.lock:
            self.con.register("_bk_rel", frame)
            try:
                dec = "_attempts = _attempts - 1, " if refund else ""
                self._exec(
                    f"UPDATE {_q(name)} SET {dec}_status = 'pending' "
                    "WHERE _id IN (SELECT _id FROM _bk_rel) AND _status = 'running' "
                    "AND _run_id = ?", [run_id])
            finally:
                self.con.unregister("_bk_rel")

    def recheck_exhausted(self, name: str, run_id: str, max_attempts: int) -> None:
        """Fail released rows of this run whose attempts are used up."""
        with self.lock:
            self._exec(
                f"UPDATE {_q(name)} SET _status = 'failed', _retryable = TRUE, "
                "_error_type = coalesce(_error_type, 'RunDied') WHERE _status = 'pending' "
                "AND _run_id = ? AND _attempts - _attempts_base >= ?", [run_id, max_attempts])
