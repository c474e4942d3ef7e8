"""Watching a batch without holding its store: ``bk.Batch(name, store=..., read_only=True)``.

DuckDB lets one process open a store file while a writer holds it, not even
read-only, and a read-only holder keeps a writer out too. So a read-only batch
opens the store for each call and releases it right after (it never stops a run
from starting), and when another process holds the store it reads the live
snapshot that process's run publishes beside it (see ``batchkit._snapshot``)
instead of failing:

================================  ==================  =============================
method                            store free          store held by another process
================================  ==================  =============================
``counts()``                      the database        the snapshot (about 1 s old)
``metrics()``, ``failures()``,    the database        the snapshot (refreshed every
``report()``                                          few seconds; the top clusters)
``status()``, ``live()``          both                the snapshot
``results()``, ``failed()``,      the database        ``StoreInUseError`` saying who
``items()``, ``attempts()``,                          holds it and what to read instead
``export()``, ``plot()``
``add()``, ``run()``, ``start()``  ``ConfigError``: a read-only batch writes nothing
================================  ==================  =============================

``batchkit status STORE BATCH`` is ``ReadOnlyBatch(BATCH, store=STORE).status()``.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import polars as pl

from ._alerts import Alert
from ._batch import DEFAULT_STORE, Batch, _close_store, _open_store
from ._clock import Clock, SystemClock
from ._clusters import Cluster, FailureClusters, OverRepresented
from ._errors import BatchkitError, ConfigError, StoreInUseError
from ._handle import RunHandle
from ._metrics import _STEP_SCHEMA, Metrics, _duration_text
from ._report import RunReport
from ._snapshot import clusters_to_dicts, read_snapshot, snapshot_path
from ._store import Store, check_batch_name
from ._summary import BatchSummary

__all__ = ["BatchStatus", "ReadOnlyBatch", "StoreHeldError", "clusters_from_dict",
           "metrics_from_dict"]

_TOP = 5  # failure clusters a status shows
_LIVE_READERS = ("batch.counts(), batch.metrics(), batch.failures(), batch.report() and "
                 "batch.live()")


class StoreHeldError(StoreInUseError):
    """A read-only batch needed the database while another process holds the store.

    A ``StoreInUseError`` whose message says what was asked, who holds the store and
    what still works meanwhile.

    Example:
        >>> e = StoreHeldError("s.duckdb", 42, "leads", "results()")
        >>> e.pid, str(e).startswith("store is in use by PID 42")
        (42, True)
    """

    def __init__(self, path: str, pid: int | None, batch: str, what: str, *,
                 reason: str | None = None) -> None:
        super().__init__(path, pid)
        who = f"PID {pid}" if pid is not None else "another process"
        why = reason or (f"{what} reads the database, which DuckDB does not share with "
                         "another process")
        self.args = (
            f"store is in use by {who}: {path!r}; {why}. Wait for the run to finish and "
            f"that process to close the batch (batch.close()), or read the live figures "
            f"meanwhile: {_LIVE_READERS}; in a terminal, `batchkit status {path} {batch}`.",)


# -- rebuilding figures from a snapshot ----------------------------------------------------


def metrics_from_dict(data: dict[str, Any]) -> Metrics:
    """A ``Metrics`` from its ``to_dict()`` (as published in a snapshot).

    Example:
        >>> from batchkit._metrics import compute_metrics
        >>> m = compute_metrics(pl.DataFrame(), pl.DataFrame())
        >>> metrics_from_dict(m.to_dict()) == m
        True
    """
    values: dict[str, Any] = {}
    for name in Metrics.__dataclass_fields__:
        value = data.get(name)
        if name in ("first_started_at", "last_finished_at", "now") and value is not None:
            value = datetime.fromisoformat(value)
        elif name == "steps":
            value = (pl.DataFrame(value, schema=_STEP_SCHEMA) if value
                     else pl.DataFrame(schema=_STEP_SCHEMA))
        elif name == "counts":
            value = {str(k): int(v) for k, v in (value or {}).items()}
        values[name] = value
    return Metrics(**values)


@dataclass(frozen=True)
class SnapshotCluster(Cluster):
    """A failure cluster read from a live snapshot: figures only, no row ids.

    Its ``expr`` raises (a snapshot does not carry the ids of the rows), so
    ``batch.run(fn, only=cluster)`` asks for the cluster read from the database.
    """

    @property
    def expr(self) -> pl.Expr:
        """Not available: raises ``ConfigError`` saying how to get a cluster that has it."""
        raise ConfigError(
            f"cluster {self.id} was read from a live snapshot, which carries no row ids; "
            "to re-run it, take it from batch.failures() on the batch itself once the run "
            "has ended")


def clusters_from_dict(data: dict[str, Any]) -> FailureClusters:
    """The top failure clusters published in a snapshot (``clusters_to_dicts``).

    Example:
        >>> clusters_from_dict({"failed": 0, "total": 3, "clusters": []}).total
        3
    """
    clusters = []
    for c in data.get("clusters") or []:
        over = tuple(OverRepresented(o["column"], o["value"], int(o["rows"]),
                                     float(o["share_in_cluster"]),
                                     float(o["share_overall"]), o["sentence"])
                     for o in c.get("over_represented") or [])
        clusters.append(SnapshotCluster(
            id=c["id"], step=c.get("step"), error_type=c.get("error_type"),
            template=c["template"], count=int(c["count"]), share=float(c["share"]),
            first_seen=_when(c.get("first_seen")), last_seen=_when(c.get("last_seen")),
            example_keys=tuple(c.get("example_keys") or ()), ids=(), over_represented=over,
            example_message=c.get("example_message"), retried=int(c.get("retried") or 0)))
    return FailureClusters(tuple(clusters), int(data.get("failed") or 0),
                           int(data.get("total") or 0))


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _alerts(doc: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for a in (doc.get("stats") or {}).get("alerts") or []:
        try:
            out.append(Alert(**a))
        except TypeError:
            out.append(a)
    return out


# -- the status of one batch -------------------------------------------------------------


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "at an unknown time"
    return f"{seconds:.1f} s ago" if seconds < 60 else f"{_duration_text(seconds)} ago"


@dataclass(frozen=True)
class BatchStatus:
    """What ``batchkit status STORE BATCH`` shows: counts, metrics and top failure clusters.

    Attributes:
        store: the store file.
        batch: the batch name.
        source: ``"database"`` (no other process held the store) or ``"snapshot"``.
        held_by: the PID holding the store (None when it was free or DuckDB did not say).
        snapshot: the live snapshot read (``read_snapshot``), or None.
        counts: rows per status.
        metrics: the batch's ``Metrics`` (None when a snapshot has none yet).
        clusters: the failure clusters (a snapshot has the top few only).
        metrics_age_s: seconds since a snapshot's metrics were computed (None otherwise).
        clusters_total: how many clusters there are in all (a snapshot carries the top
            few; None: all are in ``clusters``).

    ``str()`` renders it for a terminal; ``to_dict()`` gives plain JSON-able data.

    Example:
        >>> import polars as pl, batchkit as bk, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "st.duckdb")
        >>> with bk.Batch("st", store=path) as b:
        ...     _ = b.add(pl.DataFrame({"x": [1, 2]}), key="x")
        >>> status = bk.Batch("st", store=path, read_only=True).status()
        >>> status.source, status.counts["pending"], status.to_dict()["batch"]
        ('database', 2, 'st')
    """

    store: str
    batch: str
    source: str
    held_by: int | None
    snapshot: dict[str, Any] | None
    counts: dict[str, int]
    metrics: Metrics | None
    clusters: FailureClusters | None
    metrics_age_s: float | None = None
    clusters_total: int | None = None

    @property
    def age_s(self) -> float | None:
        """Seconds since the snapshot was published (None when read from the database)."""
        return None if self.snapshot is None else float(self.snapshot["age_s"])

    @property
    def running(self) -> bool:
        """Whether the snapshot shows a run still going on (live and not ended)."""
        s = self.snapshot
        return bool(s and s.get("live") and (s.get("stats") or {}).get("state") == "running")

    def _source_line(self) -> str:
        if self.source == "database":
            return "source: the database (no other process holds the store)"
        s = self.snapshot or {}
        pid = s.get("pid")
        holder = f"PID {self.held_by}" if self.held_by is not None else "another process"
        if self.running:
            line = (f"source: live snapshot published {_ago(self.age_s)} by PID {pid}; the "
                    f"store is in use by {holder} (a run is going on)")
        else:
            state = (s.get("stats") or {}).get("state", "?")
            line = (f"source: snapshot published {_ago(self.age_s)} by PID {pid}, when its "
                    f"run ended ({state}); the store is still in use by {holder} (an open "
                    "batch in a notebook or script? close it to read the database)")
        if self.held_by is not None and pid is not None and pid != self.held_by:
            line += (f"\nwarning: the snapshot comes from PID {pid}, not from PID "
                     f"{self.held_by} holding the store: its figures may be out of date")
        return line

    def _run_lines(self) -> list[str]:
        s = (self.snapshot or {}).get("stats")
        if not s:
            return []
        pct = 100.0 * float(s.get("fraction") or 0.0)
        lines = [
            f"{'run' if self.running else 'last run'} {s.get('run_id')}: {s.get('state')} · "
            f"{s.get('done', 0) + s.get('failed', 0):,} / {s.get('total', 0):,} rows ended "
            f"({pct:.1f}%) · {s.get('done', 0):,} done · "
            f"{s.get('failed', 0):,} failed · {s.get('retried', 0):,} retried",
            f"  {float(s.get('items_per_min') or 0):,.1f} items/min (last minute "
            f"{float(s.get('items_per_min_recent') or 0):,.1f}) · ETA "
            f"{_duration_text(s.get('eta_s'))} · elapsed "
            f"{_duration_text(max(0.0, float(s.get('now', 0)) - float(s.get('started_at', 0))))}",
            f"  workers {s.get('workers_active', 0)} active / {s.get('workers', 0)} · chunks "
            f"{s.get('chunks_done', 0):,} done, {s.get('chunks_running', 0):,} running, "
            f"{s.get('chunks_pending', 0):,} pending · cost ${float(s.get('cost_usd') or 0):,.4f}"
            + (f" of ${float(s['budget_usd']):,.2f} budget" if s.get("budget_usd") else ""),
        ]
        if s.get("halt_reason"):
            lines.append(f"  stopped: {s['halt_reason']}")
        alerts = s.get("alerts") or []
        if alerts:
            lines.append(f"  alerts ({len(alerts)}):")
            lines += [f"    {a.get('level')}: {a.get('message')}" if isinstance(a, dict)
                      else f"    {a}" for a in alerts[-3:]]
        return lines

    def __str__(self) -> str:
        c = self.counts
        total = sum(c.values())
        out = [f"batch {self.batch!r} in store {self.store}", self._source_line(),
               *self._run_lines(),
               f"rows: {total:,} total · " + " · ".join(f"{v:,} {k}" for k, v in c.items())]
        if self.metrics is None:
            out.append("metrics: not published yet (a run publishes them a few seconds after "
                       "it starts; big batches less often)")
        else:
            head = str(self.metrics)
            if self.metrics_age_s is not None:
                head = head.replace("Metrics", f"Metrics (computed {_ago(self.metrics_age_s)})",
                                    1)
            out.append(head)
        if self.clusters is not None:
            shown = FailureClusters(tuple(self.clusters)[:_TOP], self.clusters.failed,
                                    self.clusters.total)
            text = str(shown)
            more = (self.clusters_total or len(self.clusters)) - len(shown)
            if more > 0:
                text += f"\n… and {more:,} smaller clusters"
            out.append(text)
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (datetimes as ISO text)."""
        snap = self.snapshot
        return {
            "store": self.store, "batch": self.batch, "source": self.source,
            "held_by_pid": self.held_by,
            "snapshot": None if snap is None else {
                k: snap.get(k) for k in ("pid", "host", "published_at", "age_s", "live")},
            "running": self.running,
            "run": None if snap is None else snap.get("stats"),
            "counts": dict(self.counts), "total": sum(self.counts.values()),
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "metrics_age_s": self.metrics_age_s,
            "clusters": None if self.clusters is None else clusters_to_dicts(self.clusters,
                                                                             top=_TOP),
        }


# -- the read-only batch -------------------------------------------------------------------


class ReadOnlyBatch(Batch):
    """A batch opened with ``read_only=True``: reads only, never holds the store file.

    ``bk.Batch(name, store=path, read_only=True)`` returns one. Every call opens the
    store read-only and releases it when done, so the batch never stops a run in
    another process from starting. While another process holds the store (a run,
    or a notebook with the batch open), ``counts()``, ``metrics()``, ``failures()``,
    ``report()``, ``status()`` and ``live()`` read the live snapshot that process
    publishes; ``results()``, ``failed()``, ``items()``, ``attempts()``, ``export()``
    and ``plot()`` raise ``StoreInUseError`` naming the PID and what to read instead.
    ``add()``, ``run()`` and ``start()`` raise ``ConfigError``.

    Clusters read from a snapshot are the top few and carry no row ids (their
    ``expr`` raises). Figures from a snapshot are as old as it is: ``live()`` and
    ``status()`` say how old.

    Args:
        name: the batch name.
        store: an existing store file (``":memory:"`` cannot be shared).
        clock: time source for ages (the system clock by default).
        seed: unused (accepted for the same signature as ``Batch``).
        read_only: must be True.

    Example:
        >>> import polars as pl, batchkit as bk, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "ro.duckdb")
        >>> with bk.Batch("ro", store=path) as b:
        ...     _ = b.add(pl.DataFrame({"x": [1, 2]}), key="x")
        >>> watcher = bk.Batch("ro", store=path, read_only=True)
        >>> watcher.counts()["pending"], watcher.status().source
        (2, 'database')
    """

    def __init__(self, name: str, store: str | os.PathLike[str] | None = None, *,
                 clock: Clock | None = None, seed: int | None = None,
                 read_only: bool = True) -> None:
        if not read_only:
            raise ConfigError("ReadOnlyBatch is read-only; use bk.Batch(...) to write")
        self.name = check_batch_name(name)
        path = os.fspath(store) if store is not None else os.environ.get(
            "BATCHKIT_STORE", DEFAULT_STORE)
        if path == ":memory:":
            raise ConfigError("read_only=True needs a store file: an in-memory store "
                              "cannot be watched; use the batch that created it")
        if not Path(path).expanduser().is_file():
            raise ConfigError(f"no store at {path!r}; read_only=True opens an existing store "
                              "(create it with bk.Batch(name, store=...))")
        self.store_path = path
        self._store: Store | None = None
        self.clock: Clock = clock or SystemClock()
        self._rng = random.Random(seed)
        self.last_watch = None
        self._lock = threading.RLock()
        try:
            with self._database() as db:
                names = db.batch_names()
                if name not in names:
                    raise ConfigError(f"store {path!r} has no batch {name!r}; its batches are "
                                      f"{names}")
        except StoreInUseError:
            pass  # held: the snapshot (or the error of a later call) tells the rest

    # -- holding the store only during a call ----------------------------------------------

    @property
    def store(self) -> Store:
        """The store while a call has it open (a read-only batch holds none between calls)."""
        if self._store is None:
            raise ConfigError(f"read-only batch {self.name!r} opens its store for each call "
                              "and holds none in between; call its methods instead")
        return self._store

    @contextlib.contextmanager
    def _database(self) -> Iterator[Store]:
        """The store opened read-only for one call (nested calls share it)."""
        with self._lock:
            if self._store is not None:
                yield self._store
                return
            store = _open_store(self.store_path, read_only=True)
            self._store = store
            try:
                yield store
            finally:
                self._store = None
                _close_store(store)

    def _read(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` with the database open; a clear StoreInUseError if another process has it."""
        try:
            with self._database():
                return fn()
        except StoreHeldError:
            raise
        except StoreInUseError as exc:
            raise StoreHeldError(self.store_path, exc.pid, self.name, what) from None

    def _held_snapshot(self, exc: StoreInUseError, what: str) -> dict[str, Any]:
        doc = read_snapshot(self.store_path, self.name)
        if doc is None or doc.get("counts") is None:
            where = snapshot_path(self.store_path, self.name)
            raise StoreHeldError(
                self.store_path, exc.pid, self.name, what,
                reason=(f"batch {self.name!r} has no live snapshot at {str(where)!r} for "
                        f"{what} to read (a run publishes one while it runs)")) from None
        return doc

    def _details(self, exc: StoreInUseError, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
        doc = self._held_snapshot(exc, what)
        details = doc.get("details") or {}
        if not details.get("metrics"):
            raise StoreHeldError(
                self.store_path, exc.pid, self.name, what,
                reason=(f"the live snapshot of batch {self.name!r} has no metrics yet (a run "
                        "publishes them a few seconds after it starts, big batches less "
                        "often); batch.counts() and batch.live() work now")) from None
        return doc, details

    # -- what works either way -------------------------------------------------------------

    def live(self) -> dict[str, Any] | None:
        """The live snapshot of this batch (``read_snapshot``): figures, ``pid``, ``age_s``,
        ``live``; None when no run has published one. Never opens the database."""
        return read_snapshot(self.store_path, self.name)

    def counts(self) -> dict[str, int]:
        """Rows per status: from the database, or from the live snapshot while it is held."""
        try:
            with self._database():
                return super().counts()
        except StoreInUseError as exc:
            doc = self._held_snapshot(exc, "counts()")
            return {str(k): int(v) for k, v in doc["counts"].items()}

    def metrics(self) -> Metrics:
        """``Batch.metrics()``, or the snapshot's copy while another process holds the store."""
        try:
            with self._database():
                return super().metrics()
        except StoreInUseError as exc:
            _, details = self._details(exc, "metrics()")
            return metrics_from_dict(details["metrics"])

    def failures(self, *, top_values: int = 3, min_lift: float = 1.5) -> FailureClusters:
        """``Batch.failures()``, or the snapshot's top clusters (no row ids) while held."""
        try:
            with self._database():
                return super().failures(top_values=top_values, min_lift=min_lift)
        except StoreInUseError as exc:
            _, details = self._details(exc, "failures()")
            return clusters_from_dict(details.get("clusters") or {})

    def report(self) -> BatchSummary:
        """``Batch.report()``, or one built from the snapshot while another process holds it."""
        try:
            with self._database():
                return super().report()
        except StoreInUseError as exc:
            doc, details = self._details(exc, "report()")
            return BatchSummary(self.name, metrics_from_dict(details["metrics"]),
                                clusters_from_dict(details.get("clusters") or {}),
                                _alerts(doc))

    def status(self) -> BatchStatus:
        """Counts, metrics and failure clusters, with where they come from and how old they are.

        Raises:
            StoreInUseError: the store is held and the batch has no snapshot to read.
        """
        try:
            with self._database():
                return BatchStatus(self.store_path, self.name, "database", None,
                                   self.live(), super().counts(), super().metrics(),
                                   super().failures())
        except StoreInUseError as exc:
            doc = self._held_snapshot(exc, "status()")
            details = doc.get("details") or {}
            metrics = (metrics_from_dict(details["metrics"]) if details.get("metrics")
                       else None)
            clusters = (clusters_from_dict(details["clusters"]) if details.get("clusters")
                        else None)
            computed = details.get("computed_at")
            age = (None if not isinstance(computed, (int, float))
                   else max(0.0, time.time() - float(computed)))
            return BatchStatus(self.store_path, self.name, "snapshot", exc.pid, doc,
                               {str(k): int(v) for k, v in doc["counts"].items()}, metrics,
                               clusters, age,
                               clusters_total=(details.get("clusters") or {}).get("count"))

    # -- what needs the database -----------------------------------------------------------

    def results(self) -> pl.DataFrame:
        """``Batch.results()``; StoreInUseError while another process holds the store."""
        return self._read("results()", super().results)  # type: ignore[no-any-return]

    def failed(self) -> pl.DataFrame:
        """``Batch.failed()``; StoreInUseError while another process holds the store."""
        return self._read("failed()", super().failed)  # type: ignore[no-any-return]

    def items(self) -> pl.DataFrame:
        """``Batch.items()``; StoreInUseError while another process holds the store."""
        return self._read("items()", super().items)  # type: ignore[no-any-return]

    def attempts(self) -> pl.DataFrame:
        """``Batch.attempts()``; StoreInUseError while another process holds the store."""
        return self._read("attempts()", super().attempts)  # type: ignore[no-any-return]

    def export(self, path: str | os.PathLike[str], *, rows: str = "done",
               status_columns: bool = False) -> int:
        """``Batch.export()``; StoreInUseError while another process holds the store."""
        parent = super().export
        return self._read(  # type: ignore[no-any-return]
            "export()", lambda: parent(path, rows=rows, status_columns=status_columns))

    def plot(self, *, budget: float | None = None) -> Any:
        """``Batch.plot()``; StoreInUseError while another process holds the store."""
        parent = super().plot
        return self._read("plot()", lambda: parent(budget=budget))

    # -- what a read-only batch refuses ----------------------------------------------------

    def _refuse(self, what: str) -> NoReturn:
        raise ConfigError(
            f"batch {self.name!r} was opened with read_only=True, so {what} is not "
            f"available; open it with bk.Batch({self.name!r}, store={self.store_path!r}) to "
            "write (once no other process holds the store)")

    def add(self, frame: pl.DataFrame, key: Any = None) -> int:
        """Refused: a read-only batch writes nothing (``ConfigError``)."""
        self._refuse("add()")

    def run(self, fn: Callable[..., Any], **options: Any) -> RunReport:  # type: ignore[override]
        """Refused: a read-only batch writes nothing (``ConfigError``)."""
        self._refuse("run()")

    def start(self, fn: Callable[..., Any], **options: Any) -> RunHandle:
        """Refused: a read-only batch writes nothing (``ConfigError``)."""
        self._refuse("start()")

    def close(self) -> None:
        """Nothing to release: a read-only batch holds the store only during a call."""

    def __repr__(self) -> str:
        try:
            c = self.counts()
        except BatchkitError as exc:
            return f"Batch({self.name!r}, store={self.store_path!r}, read-only: {exc})"
        return (f"Batch({self.name!r}, store={self.store_path!r}, read-only: "
                + ", ".join(f"{v:,} {k}" for k, v in c.items()) + ")")

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(repr(self))}</pre>"
