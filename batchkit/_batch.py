"""``Batch``: the public face of a batch of rows in a store."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from ._alerts import Alert, Thresholds
from ._clock import Clock, SystemClock
from ._clusters import FailureClusters, cluster_failures
from ._errors import ConfigError, SchemaError
from ._handle import RunHandle
from ._metrics import Metrics, compute_metrics
from ._plan import Projection, parse_duration
from ._policy import RetryPolicy
from ._progress import TqdmProgress
from ._report import RunReport
from ._runner import Runner, check_function, make_options
from ._snapshot import SnapshotWriter, batch_details
from ._store import (
    RESERVED_COLUMNS,
    Store,
    check_batch_name,
    check_storable_schema,
)
from ._summary import BatchSummary
from ._watch import RunWatch, check_budget, check_halt_on

__all__ = ["DEFAULT_STORE", "Batch"]

#: The store used when none is given (override with the BATCHKIT_STORE variable).
DEFAULT_STORE = "batchkit.duckdb"

_STORES: dict[str, tuple[Store, int]] = {}
_STORES_LOCK = threading.Lock()


def _open_store(path: str, read_only: bool) -> Store:
    """One Store per file per process (DuckDB allows one writing process per file)."""
    key = path if path == ":memory:" else str(Path(path).expanduser().resolve())
    with _STORES_LOCK:
        if key in _STORES and key != ":memory:":
            store, refs = _STORES[key]
            _STORES[key] = (store, refs + 1)
            return store
        store = Store(path, read_only=read_only)
        if key != ":memory:":
            _STORES[key] = (store, 1)
        return store


def _close_store(store: Store) -> None:
    key = store.path if store.path == ":memory:" else str(Path(store.path).expanduser()
                                                           .resolve())
    with _STORES_LOCK:
        if key in _STORES:
            s, refs = _STORES[key]
            if refs > 1:
                _STORES[key] = (s, refs - 1)
                return
            del _STORES[key]
    store.close()


def _key_columns(frame: pl.DataFrame, key: str | Sequence[str] | None) -> list[str] | None:
    if key is None:
        return None
    cols = [key] if isinstance(key, str) else list(key) if isinstance(key, (list, tuple)) else []
    if not cols or not all(isinstance(c, str) for c in cols):
        raise ConfigError(
            f"key must be a column name, a list of column names, or None (a hash of the "
            f"whole row), got {key!r}")
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"key column(s) {missing} not in the frame; its columns are {frame.columns}. "
            "Pass key= one of them, or key=None to use a hash of each row")
    return cols


def _hash_rows(frame: pl.DataFrame) -> pl.Series:
    """A stable hash per row (same values give the same key across runs and versions)."""
    parts = []
    for name, dtype in frame.schema.items():
        if dtype.is_nested() or isinstance(dtype, (pl.Object, pl.Binary)):
            values = [json.dumps(v, default=str, sort_keys=True)
                      for v in frame[name].to_list()]
            text = pl.Series(name, values, dtype=pl.String)
        else:
            text = frame[name].cast(pl.String)
        parts.append(text.alias(name))
    # each value length-prefixed ("5:hello"), null as "-": no value can imitate a
    # separator or a null, so different rows never hash the same input
    framed = pl.DataFrame(parts).select(
        pl.concat_str([pl.concat_str(pl.col(c).str.len_bytes().cast(pl.String), pl.lit(":"),
                                     pl.col(c)).fill_null("-") for c in frame.columns],
                      separator="|"))
    joined = framed.to_series().to_list()
    return pl.Series("_key", [hashlib.blake2b(s.encode(), digest_size=12).hexdigest()
                              for s in joined], dtype=pl.String)


def _make_keys(frame: pl.DataFrame, cols: list[str] | None) -> pl.Series:
    if cols is None:
        keys = _hash_rows(frame)
        dup = keys.is_duplicated()
        if dup.any():
            raise SchemaError(
                f"{int(dup.sum())} rows are identical (key=None keys a row by a hash of all "
                f"its values), first at rows {dup.arg_true().head(3).to_list()}; drop them "
                "first with df.unique(), or choose key columns")
        return keys
    nulls = frame.select(pl.any_horizontal(pl.col(cols).is_null()).arg_true()).to_series()
    if nulls.len():
        raise SchemaError(
            f"key column(s) {cols} are null in {nulls.len()} row(s) (first at row "
            f"{nulls[0]}); fill or drop those rows, e.g. df.drop_nulls({cols!r})")
    if len(cols) == 1:
        col = frame[cols[0]]
        if col.dtype.is_nested():
            raise SchemaError(f"key column {cols[0]!r} is {col.dtype}; use a scalar column")
        keys = col.cast(pl.String)
    else:
        keys = frame.select(pl.struct(cols).struct.json_encode()).to_series()
    dup = keys.is_duplicated()
    if dup.any():
        examples = keys.filter(dup).unique(maintain_order=True).head(3).to_list()
        raise SchemaError(
            f"{int(dup.sum())} rows share a key in column(s) {cols}, e.g. {examples}; keys "
            "must be unique within a frame. Deduplicate first (df.unique(subset=...)) or "
            "choose more key columns")
    return keys.alias("_key")


def _progress_display(batch: str, display: bool) -> Any:
    """The notebook dashboard inside a Jupyter kernel, else a tqdm bar on stderr."""
    if "ipykernel" in sys.modules:
        try:
            from ._dashboard import Dashboard

            return Dashboard(batch, display=display)
        except ImportError:  # ipywidgets not installed: the terminal bar still works
            pass
    return TqdmProgress(batch)


class Batch:
    """A named batch of rows in a DuckDB store: add rows, run a function, read results.

    Args:
        name: the batch name (a table of that name holds its rows).
        store: the DuckDB file; opened or created. Defaults to ``$BATCHKIT_STORE`` or
            ``batchkit.duckdb`` in the working folder.
        clock: time source (tests pass ``batchkit.testing.FakeClock``).
        seed: seed of the backoff jitter.
        read_only: watch a batch without writing: the store is opened read-only for
            each call and released after it, and while another process runs it (DuckDB
            lets no one else open the file) ``counts()``, ``metrics()``, ``failures()``
            and ``report()`` read the run's live snapshot. See ``ReadOnlyBatch``.

    Example:
        >>> import polars as pl, batchkit as bk
        >>> b = bk.Batch("doc", store=":memory:")
        >>> b.add(pl.DataFrame({"n": [1, 2, 3]}), key="n")
        3
        >>> b.run(lambda row: {"sq": row["n"] ** 2}, progress=False).outcome
        'completed'
        >>> b.results()["sq"].to_list()
        [1, 4, 9]
    """

    def __new__(cls, *args: Any, read_only: bool = False, **kwargs: Any) -> Batch:
        if read_only and cls is Batch:  # bk.Batch(..., read_only=True): a ReadOnlyBatch
            from ._readonly import ReadOnlyBatch

            return super().__new__(ReadOnlyBatch)
        return super().__new__(cls)

    def __init__(self, name: str, store: str | os.PathLike[str] | None = None, *,
                 clock: Clock | None = None, seed: int | None = None,
                 read_only: bool = False) -> None:
        if read_only:  # only bk.Batch itself turns into a ReadOnlyBatch (see __new__)
            raise ConfigError(f"read_only=True is for bk.Batch itself, not {type(self).__name__}")
        self.name = check_batch_name(name)
        path = os.fspath(store) if store is not None else os.environ.get(
            "BATCHKIT_STORE", DEFAULT_STORE)
        self.store_path = path
        self._store: Store | None = _open_store(path, read_only=False)
        # a Batch dropped without close() (a re-run notebook cell) still releases the file
        self._finalizer = weakref.finalize(self, _close_store, self._store)
        self.clock: Clock = clock or SystemClock()
        self._rng = random.Random(seed)
        self.last_watch: RunWatch | None = None  # the live side of the last run

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The open store (raises once the batch is closed)."""
        if self._store is None:
            raise ConfigError(f"batch {self.name!r} is closed; open it again with "
                              f"bk.Batch({self.name!r}, store={self.store_path!r})")
        return self._store

    def close(self) -> None:
        """Release the store file so other processes can open it."""
        if self._store is not None:
            self._finalizer()
            self._store = None

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- adding --------------------------------------------------------------------------

    def add(self, frame: pl.DataFrame, key: str | Sequence[str] | None = None) -> int:
        """Persist rows; return how many were new (rows with a known key are skipped).

        Args:
            frame: the rows, one item per row.
            key: the column (or list of columns) that identifies a row, or None to use
                a hash of the whole row.

        An empty frame adds nothing and returns 0.

        Example:
            >>> import polars as pl, batchkit as bk
            >>> b = bk.Batch("adds", store=":memory:")
            >>> b.add(pl.DataFrame({"id": [1, 2]}), key="id"), b.add(
            ...     pl.DataFrame({"id": [2, 3]}), key="id")
            (2, 1)
        """
        if isinstance(frame, pl.LazyFrame):
            frame = frame.collect()
        if not isinstance(frame, pl.DataFrame):
            raise ConfigError(
                f"add() takes a polars DataFrame, got {type(frame).__name__}; convert with "
                "pl.from_pandas(df) or pl.DataFrame(rows)")
        if frame.width == 0:
            raise SchemaError("the frame has no columns; add a frame with at least one column")
        clash = [c for c in frame.columns if c in RESERVED_COLUMNS]
        if clash:
            raise SchemaError(
                f"column(s) {clash} collide with batchkit's own columns "
                f"({sorted(RESERVED_COLUMNS)}); rename them, e.g. "
                f"df.rename({{{clash[0]!r}: {clash[0].lstrip('_')!r}}})")
        check_storable_schema(frame.schema)
        cols = _key_columns(frame, key)
        info = self.store.batch_info(self.name)
        if info is not None:
            if info.key_columns != (tuple(cols) if cols is not None else None):
                raise SchemaError(
                    f"batch {self.name!r} is keyed by "
                    f"{list(info.key_columns) if info.key_columns else 'a hash of the row'}"
                    f", not {cols if cols else 'a hash of the row'}; add with the same key")
            self._check_schema(frame, info.input_schema)
            frame = frame.select(list(info.input_schema))
        if frame.height == 0:
            return 0
        keys = _make_keys(frame, cols)
        staged = frame.with_columns(keys, pl.int_range(frame.height, dtype=pl.Int64)
                                    .alias("_ord"))
        return self.store.add(self.name, cols, staged)

    def _check_schema(self, frame: pl.DataFrame, schema: pl.Schema) -> None:
        missing = [c for c in schema if c not in frame.columns]
        extra = [c for c in frame.columns if c not in schema]
        changed = [f"{c}: {schema[c]} -> {frame.schema[c]}" for c in schema
                   if c in frame.columns and frame.schema[c] != schema[c]]
        if missing or extra or changed:
            raise SchemaError(
                f"the frame does not match batch {self.name!r}: missing {missing}, extra "
                f"{extra}, other types {changed}. Select and cast to the batch's columns "
                f"({dict(schema)}), or use a new batch name")

    # -- running -------------------------------------------------------------------------

    def run(self, fn: Callable[..., Any], *, workers: int | None = None,
            chunk_size: int | None = None, backend: str = "threads",
            retries: int | RetryPolicy = 3, timeout: float | None = None,
            on_error: str = "skip", max_failure_rate: float | None = None,
            only: str | pl.Expr | Any | None = None, progress: bool | str = "auto",
            refresh: bool = False, budget: float | None = None,
            deadline: float | str | timedelta | None = None,
            alerts: Thresholds | None = None,
            on_alert: Callable[[Alert], object] | None = None,
            halt_on: str | None = None) -> RunReport:
        """Run ``fn`` over every pending row (or the rows ``only`` selects).

        Args:
            fn: the one-row function: ``fn(row: dict) -> dict`` of new columns (a scalar
                is stored under the function's name; None adds nothing). A function of
                two arguments also gets an ``ItemContext`` (batch, key, attempt,
                ``idempotency_key``).
            workers: parallel workers (default: 4 per CPU, at most 32, for threads; one
                per CPU for processes).
            chunk_size: rows per chunk; None sizes chunks automatically (about half a
                second of work each: small for slow rows, large for fast ones).
            backend: ``"threads"`` (I/O-bound rows), ``"processes"`` (CPU-bound rows,
                survives crashing rows) or ``"sequential"`` (one thread, for debugging).
            retries: retries of transient errors (or a ``RetryPolicy``).
            timeout: seconds a row may run before it fails with ``ItemTimeout``.
            on_error: ``"skip"`` records failed rows and goes on; ``"halt"`` stops at
                the first failed row.
            max_failure_rate: halt when more than this share of ended rows failed
                (judged after 10 rows).
            only: ``"failed"`` re-runs the failed rows only; a Polars expression over
                ``items()`` re-runs the rows it selects (done ones included).
            progress: a progress bar: True, False or ``"auto"`` (in a terminal or notebook).
            refresh: pipelines: ignore cached step results and compute every step
                afresh (new results replace the cached ones).
            budget: USD this run may spend: no chunk is dispatched once the spent cost
                plus the rows in flight and the next chunk (at the cost per row so far)
                would pass it; the rest stay pending (outcome ``budget``).
            deadline: the time allowed for the run (seconds, ``"8h"``, ``"30min"`` or a
                ``timedelta``): ETA alerts fire at 80% of it and past it.
            alerts: alert thresholds (``bk.Thresholds``; the scenario's defaults:
                failure rate warn > 5% / critical > 15%, cost per row > $0.15 / $0.25).
            on_alert: called with each new ``bk.Alert`` (also logged to the
                ``batchkit`` logger and shown in the progress display).
            halt_on: ``"critical"`` halts the run at the first critical alert.

        Returns:
            A ``RunReport``. Errors of single rows are never raised; they are stored.

        Example:
            >>> import polars as pl, batchkit as bk
            >>> b = bk.Batch("runs", store=":memory:")
            >>> _ = b.add(pl.DataFrame({"x": [1, 0, 2]}), key="x")
            >>> r = b.run(lambda row: {"inv": 1 / row["x"]}, retries=0, progress=False)
            >>> r.succeeded, r.failed
            (2, 1)
        """
        options = make_options(backend=backend, workers=workers, chunk_size=chunk_size,
                               retries=retries, timeout=timeout, on_error=on_error,
                               max_failure_rate=max_failure_rate, progress=progress)
        fn_name = check_function(fn, options.backend, options.workers)
        info = self.store.batch_info(self.name)
        if info is None:
            return RunReport(self.name, "-", "empty", self.counts(), 0, 0, 0, 0, 0, 0, 0.0)
        runner = self._runner(fn, fn_name, options, only=only, refresh=refresh,
                              budget=budget, deadline=deadline, alerts=alerts,
                              on_alert=on_alert, halt_on=halt_on, display=True)
        try:
            return runner.run()
        finally:
            if runner.selected:
                self.store.clear_selection()

    def start(self, fn: Callable[..., Any], **options: Any) -> RunHandle:
        """Run in a background thread (same arguments as ``run``); return a ``RunHandle``.

        The notebook stays usable while the run goes on: the dashboard keeps moving,
        ``batch.counts()`` and the other readers work (they wait for the store between
        commits), ``handle.wait()`` gives the report, ``handle.stop()`` stops cleanly.
        Bad arguments raise here, before the thread starts.
        """
        workers = options.pop("workers", None)
        chunk_size = options.pop("chunk_size", None)
        backend = options.pop("backend", "threads")
        run_opts = make_options(
            backend=backend, workers=workers, chunk_size=chunk_size,
            retries=options.pop("retries", 3), timeout=options.pop("timeout", None),
            on_error=options.pop("on_error", "skip"),
            max_failure_rate=options.pop("max_failure_rate", None),
            progress=options.pop("progress", "auto"))
        fn_name = check_function(fn, run_opts.backend, run_opts.workers)
        self.store._require(self.name)
        allowed = {"only", "refresh", "budget", "deadline", "alerts", "on_alert", "halt_on"}
        unknown = set(options) - allowed
        if unknown:
            raise ConfigError(f"start() got unknown arguments {sorted(unknown)}; it takes "
                              "the arguments of run()")
        runner = self._runner(fn, fn_name, run_opts, only=options.get("only"),
                              refresh=options.get("refresh", False),
                              budget=options.get("budget"), deadline=options.get("deadline"),
                              alerts=options.get("alerts"), on_alert=options.get("on_alert"),
                              halt_on=options.get("halt_on"), display=True)

        def cleanup() -> None:
            if runner.selected:
                self.store.clear_selection()
        return RunHandle(runner, cleanup)

    def plan(self, fn: Callable[..., Any], *, sample: int = 20, volume: int | None = None,
             deadline: float | str | timedelta | None = None, budget: float | None = None,
             failure_tolerance: str | float = "skip", workers: int | None = None,
             **run_kwargs: Any) -> Projection:
        """Run a measured sample, then project time, cost and workers for the whole batch.

        ``sample`` pending items (spread over the batch) run through a normal
        ``batch.run(fn, only=...)``: their results are kept, so the sample is paid
        once and not run again. Their attempt log gives each step's latency (p50,
        p95), calls, tokens, cost, cache hits, retry and failure rates; the steps'
        declarations give rate limits, concurrency caps and request batch sizes.
        The projection is for ``volume`` items with ``workers`` (or the recommended
        count) and the recommended chunk size: run the rest with
        ``batch.run(fn, workers=plan.workers, chunk_size=plan.chunk_size)``.

        Args:
            fn: the pipeline (or plain one-row function: one pseudo-step) to run.
            sample: items to run and measure; 0 plans from the attempt log of
                earlier runs and runs nothing.
            volume: items to plan for (default: the batch's total).
            deadline: ``"8h"``, seconds or a ``timedelta``; budget: USD.
            failure_tolerance: ``"skip"``, ``"halt"`` or a failure share to
                tolerate (``0.15``: halt past 15%); the sample runs with it.
            workers: fix the worker count (the sample runs with it too); None
                recommends one.
            **run_kwargs: passed to the sample run (``backend``, ``chunk_size``,
                ``retries``, ``timeout``, ``progress``, ...).

        Returns:
            A ``Projection``: ``.seconds``, ``.cost``, ``.bottleneck``, ``.table``,
            ``.scaling(volumes)``, ``.recommend()``, ``.report()``; ``.sample`` says
            what it was measured from.

        Raises:
            ConfigError: a bad argument, before anything runs; no pending items to
                sample; ``sample=0`` without an attempt log.

        Example:
            >>> import polars as pl, batchkit as bk
            >>> b = bk.Batch("planned", store=":memory:")
            >>> _ = b.add(pl.DataFrame({"n": range(100)}), key="n")
            >>> plan = b.plan(lambda row: {"sq": row["n"] ** 2}, sample=10, workers=2,
            ...               progress=False)
            >>> plan.volume, plan.sample.items, b.counts()["done"]
            (100, 10, 10)
        """
        from ._batchplan import plan_batch

        return plan_batch(self, fn, sample=sample, volume=volume, deadline=deadline,
                          budget=budget, failure_tolerance=failure_tolerance, workers=workers,
                          **run_kwargs)

    # -- looking at a batch --------------------------------------------------------------

    def metrics(self) -> Metrics:
        """Throughput, latency percentiles, calls, tokens, retries, failures, cost and ETA.

        Computed from the attempt log and the items, so it works during a run (between
        commits), after it, and for any earlier run.
        """
        return compute_metrics(self.attempts(), self.items())

    def failures(self, *, top_values: int = 3, min_lift: float = 1.5) -> FailureClusters:
        """Failed rows grouped into patterns (step, error type, normalised message).

        Each cluster has its count, share, first/last seen, example keys and the input
        values over-represented among its rows; ``batch.run(fn, only=cluster)`` re-runs
        one cluster.
        """
        info = self.store._require(self.name)
        return cluster_failures(self.items(), list(info.input_schema), attempts=self.attempts(),
                                top_values=top_values, min_lift=min_lift)

    def plot(self, *, budget: float | None = None) -> Any:
        """A one-page matplotlib summary: progress, throughput, cost, latency, failures."""
        from ._charts.run import plot_summary

        if budget is None and self.last_watch is not None:
            budget = self.last_watch.stats.budget_usd
        return plot_summary(self.attempts(), self.items(), budget=budget,
                            clusters_table=self.failures().table)

    def report(self) -> BatchSummary:
        """A summary of the batch (HTML in a notebook, Markdown as text): totals,
        throughput, latency, cost, the top failure clusters and the alerts raised."""
        alerts = list(self.last_watch.stats.alerts) if self.last_watch is not None else []
        return BatchSummary(self.name, self.metrics(), self.failures(), alerts)

    def _runner(self, fn: Callable[..., Any], fn_name: str, options: Any, *, only: Any,
                refresh: bool, budget: Any, deadline: Any, alerts: Thresholds | None,
                on_alert: Any, halt_on: Any, display: bool) -> Runner:
        """Validate the live settings, then select rows and build the runner."""
        budget = check_budget(budget)
        halt_on = check_halt_on(halt_on)
        deadline_s = parse_duration(deadline) if deadline is not None else None
        if alerts is not None and not isinstance(alerts, Thresholds):
            raise ConfigError(f"alerts must be a bk.Thresholds(...), got {alerts!r}")
        if on_alert is not None and not callable(on_alert):
            raise ConfigError(f"on_alert must be a function of one Alert, got {on_alert!r}")
        run_id = uuid.uuid4().hex[:12]
        observers: list[Any] = []
        if options.progress:
            observers.append(_progress_display(self.name, display))
        if self.store_path != ":memory:":
            observers.append(SnapshotWriter(self.store_path, self.name, clock=self.clock,
                                            details=batch_details(self)))
        watch = RunWatch(self.name, run_id, clock=self.clock, workers=options.workers,
                         observers=observers, thresholds=alerts, on_alert=on_alert,
                         halt_on=halt_on, budget=budget, deadline_s=deadline_s,
                         counts=self.counts)
        self.last_watch = watch
        selected = self._select(only)
        return Runner(self.store, self.name, fn, fn_name, options, clock=self.clock,
                      rng=self._rng, selected=selected, watch=watch, refresh=bool(refresh),
                      run_id=run_id)

    def _select(self, only: str | pl.Expr | Any | None) -> bool:
        if only is None:
            return False
        if hasattr(only, "expr") and hasattr(only, "template"):  # a failure cluster
            only = only.expr
        if isinstance(only, str):
            if only != "failed":
                raise ConfigError(
                    f"only must be 'failed', a Polars expression over batch.items() (e.g. "
                    f"pl.col('_status') == 'failed'), or None; got {only!r}")
            ids = self.store.ids_with_status(self.name, "failed")
            self.store.select_ids(self.name, ids, requeue_failed=True, requeue_done=False)
            return True
        if isinstance(only, pl.Expr):
            items = self.items()
            try:
                ids = items.filter(only)["_id"]
            except pl.exceptions.PolarsError as exc:
                raise ConfigError(
                    f"the only= expression cannot be evaluated over batch.items(): {exc}. "
                    f"Columns available: {items.columns}") from None
            self.store.select_ids(self.name, ids, requeue_failed=True, requeue_done=True)
            return True
        raise ConfigError(f"only must be 'failed', a Polars expression or None, got "
                          f"{type(only).__name__}")

    # -- reading -------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows per status: pending, running, done, failed (zeros included).

        Example:
            >>> import batchkit as bk
            >>> bk.Batch("none", store=":memory:").counts()
            {'pending': 0, 'running': 0, 'done': 0, 'failed': 0}
        """
        return self.store.counts(self.name)

    def results(self) -> pl.DataFrame:
        """Done rows: the input columns and the columns the function returned.

        A returned column with an input column's name replaces it here (the input
        stays in the store).
        """
        if self.store.batch_info(self.name) is None:
            return pl.DataFrame()
        return self.store.read(self.name, where="i._status = 'done'")

    def failed(self) -> pl.DataFrame:
        """The dead-letter list: failed rows with key, inputs and error details.

        Columns: ``key``, the input columns, ``error_type``, ``error_message``,
        ``attempts``, ``retryable`` (True when the last error was transient, so a
        later ``run(fn, only="failed")`` may well succeed), ``finished_at`` and
        ``error_trace``.
        """
        if self.store.batch_info(self.name) is None:
            return pl.DataFrame()
        frame = self.store.read(self.name, where="i._status = 'failed'", status_columns=True,
                                results=False)
        return frame.select(
            pl.col("_key").alias("key"),
            *[pl.col(c) for c in self.store.batch_info(self.name).input_schema],  # type: ignore[union-attr]
            pl.col("_error_type").alias("error_type"),
            pl.col("_error_message").alias("error_message"),
            pl.col("_attempts").alias("attempts"),
            pl.col("_retryable").alias("retryable"),
            pl.col("_finished_at").alias("finished_at"),
            pl.col("_error_trace").alias("error_trace"),
        )

    def attempts(self) -> pl.DataFrame:
        """The attempt log: one row per attempt of an item, and per step of a pipeline.

        Columns: ``_id, attempt, step`` (null for the item as a whole), ``run_id,
        started_at, duration_s, outcome`` (items: done / retry / failed; steps: done /
        failed / cached), ``error_type, error_message, usd, tokens, calls, tries``.

        Example:
            >>> import polars as pl, batchkit as bk
            >>> b = bk.Batch("log", store=":memory:")
            >>> _ = b.add(pl.DataFrame({"x": [1, 2]}), key="x")
            >>> _ = b.run(lambda row: {"y": row["x"]}, progress=False)
            >>> b.attempts()["outcome"].to_list()
            ['done', 'done']
        """
        if self.store.batch_info(self.name) is None:
            return pl.DataFrame()
        return self.store.attempts(self.name)

    def items(self) -> pl.DataFrame:
        """Every row: ``_id``, ``_key``, inputs, results and the status columns."""
        if self.store.batch_info(self.name) is None:
            return pl.DataFrame()
        return self.store.read(self.name, status_columns=True)

    def export(self, path: str | os.PathLike[str], *, rows: str = "done",
               status_columns: bool = False) -> int:
        """Write rows to a Parquet file; return how many were written.

        Args:
            path: the Parquet file to write.
            rows: ``"done"`` (default), ``"failed"`` or ``"all"``.
            status_columns: also write ``_id``, ``_key`` and the status columns.
        """
        where = {"done": "i._status = 'done'", "failed": "i._status = 'failed'",
                 "all": "TRUE"}
        if rows not in where:
            raise ConfigError(f"rows must be one of {list(where)}, got {rows!r}")
        target = Path(os.fspath(path))
        if not target.parent.exists():
            raise ConfigError(f"folder {str(target.parent)!r} does not exist; create it first")
        if self.store.batch_info(self.name) is None:
            pl.DataFrame().write_parquet(target)
            return 0
        return self.store.export(self.name, str(target), where=where[rows],
                                 status_columns=status_columns)

    def __repr__(self) -> str:
        c = self.counts()
        return (f"Batch({self.name!r}, store={self.store_path!r}: "
                + ", ".join(f"{v:,} {k}" for k, v in c.items()) + ")")

    def _repr_html_(self) -> str:
        c = self.counts()
        cells = "".join(f"<td>{v:,} {k}</td>" for k, v in c.items())
        return (f"<div><b>Batch</b> <code>{self.name}</code> in "
                f"<code>{self.store_path}</code><table><tr>{cells}</tr></table></div>")


