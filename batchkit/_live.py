"""Live figures of a run: one plain-data snapshot that every renderer reads.

The runner owns a ``LiveStats`` and updates it as chunks come back (and, on the
threads backend, as single rows finish inside chunks still running). tqdm, the
notebook dashboard, alerts and the snapshot file published for other processes
only *read* it: ``stats.snapshot()`` returns a frozen copy that is safe to hand to
another thread.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["LiveStats", "Sample"]

_WINDOW_S = 60.0  # "items/min over the last minute"


@dataclass(frozen=True)
class Sample:
    """Cumulative figures of a run at one moment (for rates over a window and charts)."""

    t: float  # epoch seconds
    done: int
    failed: int
    cost_usd: float


@dataclass
class LiveStats:
    """What a run has done so far. Counts are for this run unless named otherwise.

    Attributes:
        batch: the batch name.
        run_id: the run's id.
        state: ``running``, then ``completed``, ``halted``, ``interrupted``,
            ``budget`` (stopped by ``budget=``) or ``died`` (an error escaped).
        started_at: epoch seconds when the run started.
        now: epoch seconds of the last update.
        total: rows this run set out to finish (pending rows of its selection).
        done: rows that ended done in this run (committed).
        failed: rows that ended failed in this run (committed).
        retried: attempts that failed transiently and were scheduled again.
        in_chunk_done: rows finished inside chunks not yet committed (threads only).
        pending: rows of the selection still waiting (not running).
        running: rows dispatched to workers and not yet committed.
        chunks_done / chunks_running: chunks committed / in flight.
        chunk_size: the current chunk size (for the pending-chunk estimate).
        workers: the run's worker count; workers_active: workers with a chunk.
        cost_usd: USD spent by this run (committed attempts).
        budget_usd: the run's budget, if any; deadline_s: seconds allowed from
            the start, if any.
        halt_reason: why the run stopped early, if it did.
        alerts: alerts raised so far (``batchkit._alerts.Alert`` values).
        samples: cumulative samples, oldest first (at most one per second kept).

    Example:
        >>> s = LiveStats("b", "r1", started_at=0.0, now=60.0, total=100, done=30)
        >>> s.items_per_min, s.eta_s
        (30.0, 140.0)
    """

    batch: str
    run_id: str
    state: str = "running"
    started_at: float = 0.0
    now: float = 0.0
    total: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    in_chunk_done: int = 0
    pending: int = 0
    running: int = 0
    chunks_done: int = 0
    chunks_running: int = 0
    chunk_size: int = 1
    workers: int = 1
    workers_active: int = 0
    cost_usd: float = 0.0
    budget_usd: float | None = None
    deadline_s: float | None = None
    halt_reason: str | None = None
    alerts: tuple[Any, ...] = ()
    samples: tuple[Sample, ...] = ()
    _window: deque[Sample] = field(default_factory=deque, repr=False, compare=False)

    # -- derived figures -----------------------------------------------------------------

    @property
    def ended(self) -> int:
        """Rows that ended (done or failed) in this run."""
        return self.done + self.failed

    @property
    def fraction(self) -> float:
        """Share of ``total`` that ended, 0..1 (1 for an empty run)."""
        return min(1.0, self.ended / self.total) if self.total else 1.0

    @property
    def elapsed_s(self) -> float:
        """Seconds since the run started."""
        return max(0.0, self.now - self.started_at)

    @property
    def items_per_min(self) -> float:
        """Rows ended per minute since the start."""
        return 60.0 * self.ended / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def items_per_min_recent(self) -> float:
        """Rows ended per minute over the last minute (the whole run if shorter)."""
        if len(self._window) < 2:
            return self.items_per_min
        first, last = self._window[0], self._window[-1]
        span = last.t - first.t
        if span <= 0:
            return self.items_per_min
        return 60.0 * ((last.done + last.failed) - (first.done + first.failed)) / span

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the recent rate; None before anything ended."""
        left = max(0, self.total - self.ended)
        if left == 0:
            return 0.0
        rate = self.items_per_min_recent
        return 60.0 * left / rate if rate > 0 else None

    @property
    def failure_rate(self) -> float:
        """Failed share of the rows that ended (0 before any ended)."""
        return self.failed / self.ended if self.ended else 0.0

    @property
    def retry_rate(self) -> float:
        """Retried attempts per row ended (0 before any ended)."""
        return self.retried / self.ended if self.ended else 0.0

    @property
    def cost_per_item(self) -> float | None:
        """USD per row ended so far; None before any ended."""
        return self.cost_usd / self.ended if self.ended else None

    @property
    def projected_cost_usd(self) -> float | None:
        """Cost of the whole run at the cost per row so far."""
        per = self.cost_per_item
        return None if per is None else per * self.total

    @property
    def chunks_pending(self) -> int:
        """Chunks still to dispatch, estimated from pending rows and the chunk size."""
        return math.ceil(self.pending / max(1, self.chunk_size))

    # -- updating (runner side) ----------------------------------------------------------

    def sample(self, now: float) -> None:
        """Record the current cumulative figures at ``now`` (at most one per second)."""
        self.now = now
        point = Sample(now, self.done, self.failed, self.cost_usd)
        if self._window and now - self._window[-1].t < 1.0:
            self._window[-1] = point
        else:
            self._window.append(point)
        while self._window and now - self._window[0].t > _WINDOW_S:
            self._window.popleft()
        if not self.samples or now - self.samples[-1].t >= 1.0:
            self.samples = (*self.samples, point)
        else:
            self.samples = (*self.samples[:-1], point)

    def snapshot(self) -> LiveStats:
        """A copy safe to hand to another thread (samples and window copied)."""
        return replace(self, _window=deque(self._window))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able figures (for the snapshot file and the CLI)."""
        out = {k: getattr(self, k) for k in (
            "batch", "run_id", "state", "started_at", "now", "total", "done", "failed",
            "retried", "in_chunk_done", "pending", "running", "chunks_done",
            "chunks_running", "chunk_size", "workers", "workers_active", "cost_usd",
            "budget_usd", "deadline_s", "halt_reason")}
        out.update(items_per_min=self.items_per_min,
                   items_per_min_recent=self.items_per_min_recent, eta_s=self.eta_s,
                   failure_rate=self.failure_rate, cost_per_item=self.cost_per_item,
                   fraction=self.fraction, chunks_pending=self.chunks_pending,
                   alerts=[a.to_dict() if hasattr(a, "to_dict") else str(a)
                           for a in self.alerts])
        return out
