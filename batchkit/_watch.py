"""What a run shows while it runs: live figures, observers, alerts, budget and snapshots.

The runner calls a ``RunWatch`` at its start, after every commit, on every turn of
its wait loop and at its end. The watch keeps the run's ``LiveStats``, hands them to
the observers (tqdm, the notebook dashboard, the snapshot file for other processes)
at most a few times a second, checks alert thresholds, and answers how many rows
the budget still allows. It imports no rendering library.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._alerts import Alert, AlertMonitor, Thresholds
from ._clock import Clock
from ._errors import ConfigError
from ._live import LiveStats

__all__ = ["RunWatch", "check_budget", "check_halt_on"]

_UPDATE_EVERY_S = 0.25  # observers are updated at most this often (and at every commit)
_HALT_ON = (None, "critical")


def check_budget(budget: Any) -> float | None:
    """Validate ``budget=`` (USD > 0 or None)."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not (
            math.isfinite(budget) and budget > 0):
        raise ConfigError(f"budget must be USD > 0 (e.g. budget=100) or None, got {budget!r}")
    return float(budget)


def check_halt_on(halt_on: Any) -> str | None:
    """Validate ``halt_on=`` (None or ``"critical"``)."""
    if halt_on not in _HALT_ON:
        raise ConfigError(f"halt_on must be None or 'critical', got {halt_on!r}")
    return halt_on  # type: ignore[no-any-return]


class RunWatch:
    """The live side of one run (owned by the runner's thread).

    Example:
        >>> from batchkit.testing import FakeClock
        >>> w = RunWatch("b", "r1", clock=FakeClock(), workers=2, budget=1.0)
        >>> w.start(total=100, chunk_size=10)
        >>> _ = w.committed(done=10, failed=0, retried=0, usd=0.2)
        >>> w.budget_rows(want=100, running=0)  # $0.80 left at $0.02 a row
        40
    """

    def __init__(self, batch: str, run_id: str, *, clock: Clock, workers: int,
                 observers: list[Any] | None = None, thresholds: Thresholds | None = None,
                 on_alert: Callable[[Alert], object] | None = None,
                 halt_on: str | None = None, budget: float | None = None,
                 deadline_s: float | None = None,
                 counts: Callable[[], dict[str, int]] | None = None) -> None:
        self.clock = clock
        self.observers = list(observers or [])
        self.monitor = AlertMonitor(thresholds, on_alert=on_alert)
        self.halt_on = halt_on
        self.counts = counts
        self.stats = LiveStats(batch, run_id, workers=workers, budget_usd=budget,
                               deadline_s=deadline_s)
        self.progress: list[list[int]] = []  # per-chunk row counters (threads backend)
        self._last = -math.inf
        self._counts: tuple[float, dict[str, int]] | None = None

    # -- runner side ---------------------------------------------------------------------

    def start(self, total: int, chunk_size: int) -> None:
        """The run begins with ``total`` rows to do."""
        now = self.clock.time()
        s = self.stats
        s.started_at = now
        s.total = total
        s.pending = total
        s.chunk_size = chunk_size
        s.sample(now)
        self._update(force=True)

    def committed(self, *, done: int, failed: int, retried: int, usd: float,
                  chunks: int = 0) -> str | None:
        """Rows ended by a commit; returns a halt reason when a critical alert says stop."""
        s = self.stats
        s.done += done
        s.failed += failed
        s.retried += retried
        s.cost_usd += usd
        s.chunks_done += chunks
        s.sample(self.clock.time())
        self._update(force=True)
        if self.halt_on == "critical" and self.monitor.critical:
            worst = [a for a in self.monitor.alerts if a.level == "critical"][-1]
            return f"halt_on='critical': {worst.message}"
        return None

    def tick(self, *, running: int, chunks_running: int, pending: int, chunk_size: int,
             in_chunk_done: int = 0) -> None:
        """The loop's state between commits (observers updated at most 4 times a second)."""
        s = self.stats
        s.running = running
        s.chunks_running = chunks_running
        s.workers_active = min(s.workers, chunks_running)
        s.pending = pending
        s.chunk_size = max(1, chunk_size)
        s.in_chunk_done = in_chunk_done
        self._update()

    def budget_rows(self, *, want: int, running: int) -> int:
        """How many of ``want`` rows may be claimed without the projected cost passing the
        budget: spent + (rows in flight + claimed) × cost per row so far <= budget.

        Before any row has ended (no cost per row yet) every row is allowed.
        """
        budget = self.stats.budget_usd
        per = self.stats.cost_per_item
        if budget is None or not per:
            return want
        left = budget - self.stats.cost_usd - running * per
        return max(0, min(want, math.floor(left / per + 1e-9)))

    def finish(self, state: str, halt_reason: str | None = None) -> None:
        """The run ended (``completed``, ``halted``, ``budget``, ``interrupted``, ...)."""
        s = self.stats
        s.state = state
        s.halt_reason = halt_reason
        s.running = s.chunks_running = s.workers_active = s.in_chunk_done = 0
        s.sample(self.clock.time())
        self._check_alerts()
        for observer in self.observers:
            try:
                if hasattr(observer, "close"):
                    if _takes_counts(observer) and self.counts is not None:
                        observer.close(s, counts=self.counts())  # final: always fresh
                    else:
                        observer.close(s)
            except Exception:  # noqa: BLE001 - a renderer never breaks the run
                pass

    # -- internals -----------------------------------------------------------------------

    def _check_alerts(self) -> None:
        new = self.monitor.check(self.stats)
        if new:
            self.stats.alerts = self.monitor.alerts

    def _update(self, *, force: bool = False) -> None:
        now = self.clock.monotonic()
        if not force and now - self._last < _UPDATE_EVERY_S:
            return
        self._last = now
        self.stats.now = self.clock.time()
        self._check_alerts()
        for observer in self.observers:
            try:
                if _takes_counts(observer) and self.counts is not None:
                    observer.publish(self.stats, counts=self._recent_counts(now))
                else:
                    observer.update(self.stats)
            except Exception:  # noqa: BLE001 - a renderer never breaks the run
                pass


    def _recent_counts(self, now: float) -> dict[str, int]:
        """The batch's counts, read at most once a second (a query on the store)."""
        assert self.counts is not None
        if self._counts is None or now - self._counts[0] >= 1.0:
            self._counts = (now, self.counts())
        return self._counts[1]


def _takes_counts(observer: Any) -> bool:
    """The snapshot writer also publishes the batch's counts."""
    return hasattr(observer, "publish")
