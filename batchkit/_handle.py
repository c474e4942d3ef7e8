"""A run in a background thread: ``batch.start(...)`` returns a ``RunHandle``."""

from __future__ import annotations

import threading
from typing import Any

from ._live import LiveStats
from ._report import RunReport

__all__ = ["RunHandle"]


class RunHandle:
    """A run going on in a background thread, so the notebook stays usable.

    The progress display stays live while other cells run. ``wait()`` returns the
    ``RunReport`` (re-raising an error that escaped the run); ``stop()`` asks the run
    to stop: chunks in flight finish and are kept, the rest stay pending (outcome
    ``stopped``), and the same ``batch.run`` / ``batch.start`` resumes it.

    Example:
        >>> import polars as pl, batchkit as bk
        >>> b = bk.Batch("bg", store=":memory:")
        >>> _ = b.add(pl.DataFrame({"x": [1, 2, 3]}), key="x")
        >>> h = b.start(lambda row: {"y": row["x"] * 2}, progress=False)
        >>> h.wait().outcome, b.counts()["done"]
        ('completed', 3)
    """

    def __init__(self, runner: Any, cleanup: Any) -> None:
        self._runner = runner
        self._cleanup = cleanup
        self._report: RunReport | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="batchkit-run", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self._report = self._runner.run()
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            self._error = exc
        finally:
            self._cleanup()

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        return not self._thread.is_alive()

    @property
    def stats(self) -> LiveStats:
        """The run's live figures (a copy)."""
        return self._runner.watch.stats.snapshot()  # type: ignore[no-any-return]

    def wait(self, timeout: float | None = None) -> RunReport | None:
        """Wait for the end (at most ``timeout`` seconds); the report, or None if still running."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            return None
        if self._error is not None:
            raise self._error
        return self._report

    def stop(self, *, wait: bool = True) -> RunReport | None:
        """Ask the run to stop after the chunks in flight; with ``wait``, return its report."""
        self._runner.stop_requested.set()
        return self.wait() if wait else None

    def __repr__(self) -> str:
        s = self._runner.watch.stats
        state = "running" if not self.done else s.state
        return (f"RunHandle({s.batch!r}, {state}, {s.done:,} done, {s.failed:,} failed "
                f"of {s.total:,})")
