"""The store's log tables: attempt log, per-step checkpoints, step cache and memo.

A mixin of ``Store`` (``_store.py``): it only builds SQL and runs it through the
store's connection helpers, so ``_store.py`` stays the one module importing duckdb.

Tables::

    "<batch>__attempts"  _id, attempt, step (NULL: the item as a whole), run_id,
                         started_at, duration_s, outcome, error_type, error_message,
                         usd, tokens, calls, tries
    "<batch>__steps"     _id, step, attempt, output (pickle), usd, tokens, calls:
                         outputs of steps that succeeded, so a retry or a resumed run
                         restarts each item at the step that failed
    _batchkit_cache      step, version, input_hash, output (pickle), usd, tokens,
                         calls, batch, created_at: shared by every batch of the store
    _batchkit_memo       step, version, key_hash, key, value (pickle), created_at

Outputs are pickled: open only stores you trust (as with any pickle).

Item rows of the attempt log have ``outcome`` ``done``, ``retry`` (a transient error,
scheduled again) or ``failed`` (final); step rows ``done``, ``failed`` or ``cached``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import polars as pl

__all__ = ["ATTEMPT_COLUMNS", "LogTables"]

#: Columns of the attempt log with their DuckDB types.
ATTEMPT_COLUMNS: dict[str, str] = {
    "_id": "BIGINT",
    "attempt": "INTEGER",
    "step": "VARCHAR",
    "run_id": "VARCHAR",
    "started_at": "TIMESTAMP",
    "duration_s": "DOUBLE",
    "outcome": "VARCHAR",
    "error_type": "VARCHAR",
    "error_message": "VARCHAR",
    "usd": "DOUBLE",
    "tokens": "BIGINT",
    "calls": "BIGINT",
    "tries": "INTEGER",
}

#: Columns of a chunk's step records (what workers send back per row and step).
STEP_RECORD_SCHEMA: dict[str, pl.DataType] = {
    "_id": pl.Int64(),
    "_attempt": pl.Int32(),
    "step": pl.String(),
    "version": pl.String(),
    "started": pl.Float64(),
    "duration_s": pl.Float64(),
    "outcome": pl.String(),
    "error_type": pl.String(),
    "error_message": pl.String(),
    "usd": pl.Float64(),
    "tokens": pl.Int64(),
    "calls": pl.Int64(),
    "tries": pl.Int32(),
    "output": pl.Binary(),
    "cache_key": pl.String(),
}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# a result counts only for the item's current attempt of this run, while it is running
_FENCE = ("i._id BETWEEN ? AND ? AND i._attempts = {a}._attempt AND i._status = 'running' "
          "AND i._run_id = ?")


def _epoch_to_ts(col: str) -> pl.Expr:
    return pl.from_epoch((pl.col(col) * 1e6).cast(pl.Int64), time_unit="us")


class LogTables:
    """SQL of the log tables; mixed into ``Store`` (which provides the connection)."""

    con: Any
    lock: Any

    def _exec(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _frame(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        raise NotImplementedError

    # -- creation ------------------------------------------------------------------------

    def _create_global_logs(self) -> None:
        self._exec(
            "CREATE TABLE IF NOT EXISTS _batchkit_cache (step VARCHAR, version VARCHAR, "
            "input_hash VARCHAR, output BLOB, usd DOUBLE, tokens BIGINT, calls BIGINT, "
            "batch VARCHAR, created_at TIMESTAMP, PRIMARY KEY (step, version, input_hash))")
        self._exec(
            "CREATE TABLE IF NOT EXISTS _batchkit_memo (step VARCHAR, version VARCHAR, "
            "key_hash VARCHAR, key VARCHAR, value BLOB, created_at TIMESTAMP, "
            "PRIMARY KEY (step, version, key_hash))")

    def _create_batch_logs(self, name: str) -> None:
        cols = ", ".join(f"{c} {t}" for c, t in ATTEMPT_COLUMNS.items())
        self._exec(f"CREATE TABLE IF NOT EXISTS {_q(name + '__attempts')} ({cols})")
        self._exec(
            f"CREATE TABLE IF NOT EXISTS {_q(name + '__steps')} (_id BIGINT, step VARCHAR, "
            "attempt INTEGER, output BLOB, usd DOUBLE, tokens BIGINT, calls BIGINT)")

    # -- writing (inside the checkpoint transaction) -------------------------------------

    def _log_items(self, table: str, run_id: str, outcomes: pl.DataFrame,
                   id_range: list[int]) -> None:
        """Item rows of the attempt log (fenced like the outcomes; run before their UPDATE)."""
        self.con.register("_bk_log", outcomes)
        try:
            self._exec(
                f"INSERT INTO {_q(table + '__attempts')} SELECT o._id, o._attempt, NULL, ?, "
                "o._started_at, o._duration_s, CASE o._status WHEN 'pending' THEN 'retry' "
                "ELSE o._status END, o._error_type, o._error_message, o.usd, o.tokens, "
                f"o.calls, 1 FROM _bk_log o JOIN {_q(table)} i ON i._id = o._id "
                f"WHERE {_FENCE.format(a='o')}", [run_id, *id_range, run_id])
        finally:
            self.con.unregister("_bk_log")

    def _log_steps(self, table: str, run_id: str, steps: pl.DataFrame,
                   id_range: list[int]) -> None:
        """Step rows: attempt log, per-step checkpoints and cache entries (fenced)."""
        frame = steps.with_columns(_epoch_to_ts("started").alias("started_at"))
        self.con.register("_bk_steps", frame)
        try:
            join = (f"FROM _bk_steps s JOIN {_q(table)} i ON i._id = s._id "
                    f"WHERE {_FENCE.format(a='s')}")
            self._exec(
                f"INSERT INTO {_q(table + '__attempts')} SELECT s._id, s._attempt, s.step, ?, "
                "s.started_at, s.duration_s, s.outcome, s.error_type, s.error_message, "
                f"s.usd, s.tokens, s.calls, s.tries {join}", [run_id, *id_range, run_id])
            self._exec(
                f"INSERT INTO {_q(table + '__steps')} SELECT s._id, s.step, s._attempt, "
                f"s.output, s.usd, s.tokens, s.calls {join} AND s.outcome = 'done' "
                "AND s.output IS NOT NULL", [*id_range, run_id])
            self._exec(
                # REPLACE: a refresh=True run's new results replace the cached ones
                "INSERT OR REPLACE INTO _batchkit_cache SELECT step, version, cache_key, "
                "any_value(output), any_value(usd), any_value(tokens), any_value(calls), ?, ? "
                "FROM _bk_steps WHERE outcome = 'done' AND cache_key IS NOT NULL "
                "AND output IS NOT NULL GROUP BY step, version, cache_key",
                [table, datetime.now(timezone.utc).replace(tzinfo=None)])
        finally:
            self.con.unregister("_bk_steps")

    def save_memos(self, entries: Iterable[tuple[str, str, str, str, bytes]]) -> None:
        """Persist ``ctx.memo`` values: (step, version, key_hash, key repr, pickled value)."""
        rows = list(entries)
        if not rows:
            return
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with self.lock:
            self.con.executemany(
                "INSERT OR IGNORE INTO _batchkit_memo VALUES (?, ?, ?, ?, ?, ?)",
                [(*r, now) for r in rows])

    # -- reading -------------------------------------------------------------------------

    def attempts(self, name: str, *, where: str = "TRUE",
                 params: Sequence[Any] | None = None) -> pl.DataFrame:
        """The attempt log of a batch (oldest first)."""
        with self.lock:
            return self._frame(
                f"SELECT * FROM {_q(name + '__attempts')} WHERE {where} "
                "ORDER BY started_at, _id, step NULLS LAST", params)

    def step_outputs(self, name: str, ids: Sequence[int]) -> pl.DataFrame:
        """Saved step outputs of these items: ``_id, step, output, usd, tokens, calls``."""
        with self.lock:
            self.con.register("_bk_sids", pl.DataFrame({"_id": pl.Series(ids, dtype=pl.Int64)}))
            try:
                return self._frame(
                    f"SELECT _id, step, output, usd, tokens, calls FROM "
                    f"{_q(name + '__steps')} WHERE _id IN (SELECT _id FROM _bk_sids)")
            finally:
                self.con.unregister("_bk_sids")

    def has_step_outputs(self, name: str) -> bool:
        """Whether any step output is saved for the batch."""
        with self.lock:
            return bool(self._exec(f"SELECT count(*) > 0 FROM {_q(name + '__steps')}")[0][0])

    def cache_lookup(self, step: str, version: str, hashes: Sequence[str]
                     ) -> dict[str, tuple[bytes, float, int, int]]:
        """Cached outputs of ``step`` for these input hashes (missing ones are absent)."""
        if not hashes:
            return {}
        with self.lock:
            self.con.register("_bk_h", pl.DataFrame({"h": pl.Series(hashes, dtype=pl.String)}))
            try:
                rows = self._exec(
                    "SELECT input_hash, output, usd, tokens, calls FROM _batchkit_cache "
                    "WHERE step = ? AND version = ? AND input_hash IN (SELECT h FROM _bk_h)",
                    [step, version])
            finally:
                self.con.unregister("_bk_h")
        return {r[0]: (r[1], r[2] or 0.0, r[3] or 0, r[4] or 0) for r in rows}

    def load_memos(self, steps: Sequence[tuple[str, str]]) -> dict[tuple[str, str],
                                                                   dict[str, bytes]]:
        """Stored memo values per (step, version): ``{key_hash: pickled value}``."""
        out: dict[tuple[str, str], dict[str, bytes]] = {s: {} for s in steps}
        if not steps:
            return out
        with self.lock:
            for step, version, key_hash, value in self._exec(
                    "SELECT step, version, key_hash, value FROM _batchkit_memo"):
                if (step, version) in out:
                    out[(step, version)][key_hash] = value
        return out

    def forget_step_outputs(self, name: str) -> None:
        """Drop saved step outputs of rows of the selection that were requeued from done."""
        self._exec(
            f"DELETE FROM {_q(name + '__steps')} WHERE _id IN (SELECT _id FROM _bk_selection) "
            f"AND _id IN (SELECT _id FROM {_q(name)} WHERE _status = 'pending')")

    def clear_cache(self, step: str | None = None) -> int:
        """Delete cached step results (of one step, or all); return how many."""
        with self.lock:
            if step is None:
                return int(self._exec("DELETE FROM _batchkit_cache")[0][0])
            return int(self._exec("DELETE FROM _batchkit_cache WHERE step = ?", [step])[0][0])
