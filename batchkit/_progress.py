"""The terminal progress bar: a tqdm bar over the run's live figures.

An observer like the notebook dashboard: the runner calls ``update(stats)`` while
the run goes on and ``close(stats)`` once at the end; tqdm is imported lazily.
"""

from __future__ import annotations

import time
from typing import Any

from ._live import LiveStats

__all__ = ["TqdmProgress"]

#: bar colour at the end: green when completed, red on a crash or a halt, yellow
#: when stopped on purpose (Ctrl-C, the budget) with rows left.
_COLOUR = {"completed": "green", "halted": "red", "died": "red", "interrupted": "yellow",
           "budget": "yellow"}


class TqdmProgress:
    """Renders a run's ``LiveStats`` as a tqdm bar (on stderr unless ``file`` is given).

    The bar's position is the rows that ended (done or failed) plus, while the run
    goes on, rows finished inside chunks not yet committed (``stats.in_chunk_done``),
    so it moves as single rows finish; ``close`` sets it to the committed figure.
    The postfix shows items/min over the last minute, failed rows, retries and the
    cost when there is one; the ETA is tqdm's own. The bar turns green, red or
    yellow on ``close`` (see ``_COLOUR``).

    Args:
        batch: the batch name, shown before the bar.
        file: where to write (a text stream); ``sys.stderr`` when None.

    Example:
        >>> import io
        >>> from batchkit._live import LiveStats
        >>> p = TqdmProgress("demo", file=io.StringIO())
        >>> s = LiveStats("demo", "r1", started_at=0.0, now=60.0, total=3, done=2, failed=1)
        >>> p.update(s); s.state = "completed"; p.close(s)
        >>> p.bar.n, p.bar.colour
        (3, 'green')
    """

    def __init__(self, batch: str, file: Any = None) -> None:
        self.batch = batch
        self.file = file
        self.bar: Any = None
        self._shim: LiveStats | None = None

    def update(self, stats: LiveStats) -> None:
        """Move the bar to ``stats`` (tqdm throttles the redraws itself)."""
        bar = self._bar(stats)
        position = stats.ended + (stats.in_chunk_done if stats.state == "running" else 0)
        if stats.total:
            position = min(position, stats.total)
        self._postfix(stats)
        if position > bar.n:
            bar.update(position - bar.n)

    def close(self, stats: LiveStats) -> None:
        """Draw the final figures, colour the bar by the run's end state and close it."""
        bar = self._bar(stats)
        bar.n = stats.ended
        colour = _COLOUR.get(stats.state)
        if colour:
            bar.colour = colour
        self._postfix(stats)
        bar.refresh()
        bar.close()

    def _bar(self, stats: LiveStats) -> Any:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=stats.total, desc=self.batch, unit="row", file=self.file,
                            dynamic_ncols=True)
        elif self.bar.total != stats.total:
            self.bar.total = stats.total
        return self.bar

    def _postfix(self, stats: LiveStats) -> None:
        fields: dict[str, Any] = {"items/min": f"{stats.items_per_min_recent:.1f}",
                                  "failed": stats.failed, "retries": stats.retried}
        if stats.cost_usd > 0:
            fields["cost"] = f"${stats.cost_usd:.2f}"
        self.bar.set_postfix(fields, refresh=False)

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        """The old observer protocol (``start``/``progress``/``finish`` events), on the new.

        Kept until the runner hands observers ``LiveStats``; it counts the events
        into a ``LiveStats`` of its own and calls ``update``/``close``.
        """
        now = time.time()
        if kind == "start":
            self._shim = LiveStats(self.batch, "", started_at=now, now=now,
                                   total=data["total"])
        s = self._shim
        if s is None:
            return
        if kind == "progress":
            s.done += data["done"]
            s.failed += data["failed"]
            s.retried += data["retried"]
        elif kind == "finish":
            outcome = data["report"].outcome
            s.state = "completed" if outcome == "empty" else outcome
        s.sample(now)
        if kind == "finish":
            self.close(s)
        else:
            self.update(s)
