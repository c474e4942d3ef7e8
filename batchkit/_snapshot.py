"""Watching a run from another process: a small JSON snapshot published beside the store.

DuckDB lets one process open a store file while a writer holds it, not even
read-only. So while a run holds the store, the runner publishes its live figures
to a JSON file beside it, and ``batchkit status`` or a notebook in another
process reads that file instead of the database.

Layout: for a store ``runs/leads.duckdb`` the snapshot of batch ``leads`` is
``runs/leads.duckdb.live/leads.json``. Each write goes to a temporary file in
the same folder and is moved into place with ``os.replace``, so a reader sees
the old file or the new one, never a torn one. In-memory stores (``":memory:"``)
publish nothing: no other process could watch them.

A snapshot holds figures only (``LiveStats.to_dict()``, the batch's status
counts, the publishing process id and host, the store path and the time): no
rows, no inputs, no error messages beyond the alerts' own sentences.

A writer given ``details=`` (``Batch.run`` passes ``batch_details(batch)``) also
publishes ``details``: the batch's ``Metrics`` and its top failure clusters (their
templates, example keys and over-represented values), so ``batchkit status STORE
BATCH`` and a read-only ``Batch`` in another process show the same figures as
``batch.metrics()`` and ``batch.failures()``. They are queries over the whole
batch, so they are refreshed less often than the live figures: once the first
rows of the run have ended, then every ``details_every`` seconds (2 by default)
at most, at the end of the run, and never taking more than about
5% of the run's time (a batch of a million rows refreshes them every half
minute or so); ``details["computed_at"]`` says when.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from ._clock import Clock, SystemClock
from ._errors import ConfigError

if TYPE_CHECKING:
    from ._batch import Batch
    from ._clusters import FailureClusters
    from ._live import LiveStats

__all__ = [
    "SNAPSHOT_FORMAT",
    "STALE_AFTER_S",
    "SnapshotWriter",
    "batch_details",
    "clear_snapshots",
    "clusters_to_dicts",
    "read_snapshot",
    "snapshot_path",
]

#: version of the snapshot file's layout
SNAPSHOT_FORMAT = 1
#: a snapshot older than this (seconds) is not live, whoever wrote it
STALE_AFTER_S = 10.0

#: failure clusters a snapshot carries (the largest)
TOP_CLUSTERS = 5

_log = logging.getLogger("batchkit")
# Details (metrics and clusters) may take this share of the run's time, or this many
# seconds however short the run; an estimate per row before the first measurement.
_DETAILS_SHARE = 0.05
_DETAILS_FLOOR_S = 0.25
_DETAILS_PER_ROW_S = 1.5e-6
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_SUFFIX = ".live"


def _live_dir(store_path: str | os.PathLike[str]) -> Path | None:
    path = os.fspath(store_path)
    if path == ":memory:":
        return None
    store = Path(path).expanduser().resolve()
    return store.with_name(store.name + _SUFFIX)


def snapshot_path(store_path: str | os.PathLike[str], batch: str) -> Path | None:
    """Where the live snapshot of ``batch`` in ``store_path`` is published (None in memory).

    Example:
        >>> snapshot_path("runs/leads.duckdb", "leads").parts[-2:]
        ('leads.duckdb.live', 'leads.json')
        >>> snapshot_path(":memory:", "leads") is None
        True
    """
    if not isinstance(batch, str) or not _SAFE_NAME.match(batch):
        raise ConfigError(
            f"batch name {batch!r} cannot name a snapshot file; use letters, digits and "
            "underscores (as batch names do)")
    folder = _live_dir(store_path)
    return None if folder is None else folder / f"{batch}.json"


def _plain(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


class SnapshotWriter:
    """Publishes a run's live figures for other processes, at most once per ``every`` seconds.

    It is also a run observer: ``update(stats)`` publishes (throttled) and
    ``close(stats)`` publishes the final figures. Publishing never raises on a
    file-system error: the run matters more than its snapshot, so the error is
    logged and the next publish tries again.

    Args:
        store_path: the store the run holds (``":memory:"`` publishes nothing).
        batch: the batch name.
        clock: time source (``time()`` for the timestamp, ``monotonic()`` for the
            throttle); the system clock by default.
        every: the least seconds between two publishes (unless forced).
        details: a function returning the batch's metrics and failure clusters as
            plain data (``batch_details(batch)``), published under ``details``;
            None publishes the live figures only.
        details_every: the least seconds between two refreshes of the details
            (the final publish refreshes them whenever that is cheap enough).

    Example:
        >>> from batchkit._live import LiveStats
        >>> writer = SnapshotWriter("leads.duckdb", "leads")
        >>> writer.publish(LiveStats("leads", "r1", total=10, done=4), counts={"done": 4})
        True
        >>> writer.publish(LiveStats("leads", "r1", total=10, done=5))  # within 1 s: skipped
        False
        >>> writer.close()
        True
        >>> read_snapshot("leads.duckdb", "leads")["stats"]["done"]
        5
    """

    def __init__(self, store_path: str | os.PathLike[str], batch: str, *,
                 clock: Clock | None = None, every: float = 1.0,
                 details: Callable[[], dict[str, Any]] | None = None,
                 details_every: float = 2.0) -> None:
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not (
                math.isfinite(every) and every >= 0):
            raise ConfigError(f"every must be seconds >= 0, got {every!r}")
        if isinstance(details_every, bool) or not isinstance(details_every, (int, float)) or not (
                math.isfinite(details_every) and details_every >= 0):
            raise ConfigError(f"details_every must be seconds >= 0, got {details_every!r}")
        self.path = snapshot_path(store_path, batch)
        self.store_path = os.fspath(store_path)
        self.batch = batch
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.every = float(every)
        self.published = 0
        self._last_mono: float | None = None
        self._stats: LiveStats | None = None
        self._counts: dict[str, int] | None = None
        self._closed = False
        self._host = socket.gethostname()
        self._details_fn = details
        self.details_every = float(details_every)
        self._details: dict[str, Any] | None = None
        self._details_cost: float | None = None  # seconds the last refresh took
        self._details_mono = self.clock.monotonic()  # the last refresh (or the start)

    def publish(self, stats: LiveStats, *, counts: dict[str, int] | None = None,
                force: bool = False) -> bool:
        """Publish ``stats`` (and the batch's status ``counts``) unless one was published
        less than ``every`` seconds ago; ``force`` publishes anyway.

        ``counts`` left out keeps the counts given last. Returns whether a file was written.
        """
        if self._closed:
            return False
        self._stats = stats
        if counts is not None:
            self._counts = dict(counts)
        if self.path is None:
            return False
        now = self.clock.monotonic()
        if not force and self._last_mono is not None and now - self._last_mono < self.every:
            return False
        self._refresh_details(now, final=force, first=stats.ended > 0)
        written = self._write(stats)
        if written:
            self._last_mono = now
        return written

    def update(self, stats: LiveStats) -> None:
        """Observer hook: publish ``stats`` (throttled)."""
        self.publish(stats)

    def close(self, stats: LiveStats | None = None, *,
              counts: dict[str, int] | None = None) -> bool:
        """Publish the final figures (``stats``, or the last ones given) and stop publishing."""
        if self._closed:
            return False
        final = stats if stats is not None else self._stats
        written = final is not None and self.publish(final, counts=counts, force=True)
        self._closed = True
        return written

    def _document(self, stats: LiveStats) -> dict[str, Any]:
        doc = {
            "format": SNAPSHOT_FORMAT,
            "batch": self.batch,
            "store": str(Path(self.store_path).expanduser().resolve()),
            "pid": os.getpid(),
            "host": self._host,
            "published_at": self.clock.time(),
            "stats": stats.to_dict(),
            "counts": self._counts,
        }
        if self._details_fn is not None:
            doc["details"] = self._details
        return doc

    def _refresh_details(self, now: float, *, final: bool, first: bool) -> None:
        """Recompute the details when due and cheap enough (see the module docstring):
        at the first publish after rows ended, then every ``details_every`` seconds."""
        if self._details_fn is None:
            return
        since = now - self._details_mono
        due = final or since >= self.details_every or (first and self._details is None)
        if not due:
            return
        rows = sum((self._counts or {}).values())
        estimate = (self._details_cost if self._details_cost is not None
                    else 0.01 + _DETAILS_PER_ROW_S * rows)
        if estimate > max(_DETAILS_FLOOR_S, _DETAILS_SHARE * since):
            return
        began = time.perf_counter()
        try:
            details = dict(self._details_fn())
        except Exception as exc:  # noqa: BLE001 - the run matters more than its details
            _log.debug("batch %r: live details not refreshed: %s", self.batch, exc)
            return
        finally:
            self._details_cost = time.perf_counter() - began
            self._details_mono = now
        details["computed_at"] = self.clock.time()
        details["compute_s"] = self._details_cost
        self._details = details

    def _mode(self) -> int:
        try:
            return os.stat(self.store_path).st_mode & 0o666
        except OSError:
            return 0o644

    def _write(self, stats: LiveStats) -> bool:
        assert self.path is not None
        tmp: str | None = None
        try:
            text = json.dumps(_plain(self._document(stats)), allow_nan=False)
            self.path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.batch}.", suffix=".tmp",
                                       dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, self._mode())  # mkstemp makes it private: readable as the store is
            os.replace(tmp, self.path)
            tmp = None
        except (OSError, TypeError, ValueError) as exc:
            _log.warning("batch %r: could not publish the live snapshot to %s: %s",
                         self.batch, self.path, exc)
            return False
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        self.published += 1
        return True


def _pid_alive(pid: object) -> bool | None:
    """Whether process ``pid`` runs on this host (None when that cannot be told)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    if os.name == "nt":  # os.kill would terminate it on Windows
        try:
            import psutil
        except ImportError:
            return None
        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return None
    return True


def _load(path: Path, now: float, stale_after: float) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("published_at"), (int, float)):
        return None
    age = max(0.0, now - float(doc["published_at"]))
    alive = _pid_alive(doc.get("pid")) if doc.get("host") == socket.gethostname() else None
    doc["age_s"] = age
    doc["live"] = alive is not False and age < stale_after
    return doc


@overload
def read_snapshot(store_path: str | os.PathLike[str], batch: str, *,
                  now: float | None = ..., stale_after: float = ...) -> dict[str, Any] | None:
    ...


@overload
def read_snapshot(store_path: str | os.PathLike[str], batch: None = ..., *,
                  now: float | None = ..., stale_after: float = ...) -> list[dict[str, Any]]:
    ...


def read_snapshot(store_path: str | os.PathLike[str], batch: str | None = None, *,
                  now: float | None = None, stale_after: float = STALE_AFTER_S,
                  ) -> dict[str, Any] | list[dict[str, Any]] | None:
    """Read the live snapshot of ``batch`` (None if there is none), or of every batch.

    Needs no database connection, so it works while another process holds the
    store. Each snapshot is the published document (``batch``, ``store``, ``pid``,
    ``host``, ``published_at``, ``stats``, ``counts``) plus ``age_s`` (seconds since
    it was published) and ``live``: its publisher still runs (checked when it is on
    this host) and it is younger than ``stale_after`` seconds. ``stats["state"]``
    says whether the run was still going.

    Args:
        store_path: the store file.
        batch: a batch name, or None for a list of every batch's snapshot (sorted by
            name; empty when there is none).
        now: epoch seconds to measure the age against (default: now).
        stale_after: seconds after which a snapshot is no longer live.

    Example:
        >>> read_snapshot("nothing-here.duckdb", "leads") is None
        True
        >>> read_snapshot("nothing-here.duckdb")
        []
    """
    when = time.time() if now is None else now
    if batch is not None:
        path = snapshot_path(store_path, batch)
        return None if path is None else _load(path, when, stale_after)
    folder = _live_dir(store_path)
    if folder is None or not folder.is_dir():
        return []
    found = (_load(p, when, stale_after) for p in sorted(folder.glob("*.json")))
    return [doc for doc in found if doc is not None]


def clear_snapshots(store_path: str | os.PathLike[str]) -> int:
    """Remove every snapshot published beside ``store_path``; return how many were removed.

    Example:
        >>> clear_snapshots("nothing-here.duckdb")
        0
    """
    folder = _live_dir(store_path)
    if folder is None or not folder.is_dir():
        return 0
    removed = 0
    for path in folder.iterdir():
        if path.suffix in (".json", ".tmp") and path.is_file():
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed += path.suffix == ".json"
    with contextlib.suppress(OSError):  # something else lives there: leave it
        folder.rmdir()
    return removed


def clusters_to_dicts(clusters: FailureClusters, *, top: int = TOP_CLUSTERS) -> dict[str, Any]:
    """The largest ``top`` failure clusters as plain data (no row ids: they can be many).

    Example:
        >>> from batchkit._clusters import FailureClusters
        >>> clusters_to_dicts(FailureClusters((), 0, 10))
        {'failed': 0, 'total': 10, 'count': 0, 'clusters': []}
    """
    shown = []
    for c in list(clusters)[:top]:
        shown.append({
            "id": c.id, "step": c.step, "error_type": c.error_type, "template": c.template,
            "count": c.count, "share": c.share,
            "first_seen": None if c.first_seen is None else c.first_seen.isoformat(),
            "last_seen": None if c.last_seen is None else c.last_seen.isoformat(),
            "example_keys": list(c.example_keys), "example_message": c.example_message,
            "retried": c.retried,
            "over_represented": [
                {"column": o.column, "value": o.value, "rows": o.rows,
                 "share_in_cluster": o.share_in_cluster, "share_overall": o.share_overall,
                 "sentence": o.sentence} for o in c.over_represented],
        })
    return {"failed": clusters.failed, "total": clusters.total, "count": len(clusters),
            "clusters": shown}


def batch_details(batch: Batch, *, top: int = TOP_CLUSTERS) -> Callable[[], dict[str, Any]]:
    """A ``details=`` function for ``SnapshotWriter``: ``batch``'s metrics and top clusters.

    It holds the batch weakly (a batch dropped in a notebook still releases its
    store) and reads it through the batch's own store, from the run's thread.
    Returns ``{"metrics": Metrics.to_dict(), "clusters": clusters_to_dicts(...)}``.
    """
    ref = weakref.ref(batch)

    def details() -> dict[str, Any]:
        from ._clusters import FailureClusters, cluster_failures
        from ._metrics import compute_metrics

        owner = ref()
        if owner is None:
            raise RuntimeError("the batch is gone")
        store = owner.store
        info = store.batch_info(owner.name)
        if info is None:
            import polars as pl

            empty = compute_metrics(pl.DataFrame(), pl.DataFrame())
            return {"metrics": empty.to_dict(),
                    "clusters": clusters_to_dicts(FailureClusters((), 0, 0), top=top)}
        items = store.read(owner.name, status_columns=True, results=False)
        attempts = store.attempts(owner.name)
        metrics = compute_metrics(attempts, items)
        clusters = (cluster_failures(items, list(info.input_schema), attempts=attempts)
                    if metrics.counts["failed"] else FailureClusters((), 0, items.height))
        return {"metrics": metrics.to_dict(), "clusters": clusters_to_dicts(clusters, top=top)}

    return details
