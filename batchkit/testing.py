"""Test mode, public: a fake clock (no backoff sleeps), flaky-function helpers and a
local simulated web service (``SimService``, loopback only).

Example:
    >>> import polars as pl, batchkit as bk
    >>> from batchkit.testing import FakeClock, Flaky
    >>> clock = FakeClock()
    >>> b = bk.Batch("t", store=":memory:", clock=clock)
    >>> _ = b.add(pl.DataFrame({"n": [1, 2]}), key="n")
    >>> report = b.run(Flaky(lambda row: {"m": row["n"]}, fail_times=2), progress=False)
    >>> report.retries, b.counts()["done"], clock.slept > 0
    (4, 2, True)
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time as _time
from collections.abc import Callable, Collection
from typing import Any

from ._errors import Permanent, Transient
from ._simservice import SimService
from ._worker import current_item

__all__ = ["FakeClock", "Flaky", "Poison", "SimService"]


class FakeClock:
    """A clock whose ``sleep`` advances time instantly: retries wait no real time.

    Attributes:
        slept: total seconds of sleep requested so far.

    Example:
        >>> c = FakeClock(start=100.0)
        >>> c.sleep(5); c.time()
        105.0
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = _time.time() if start is None else float(start)
        self._mono = 0.0
        self._lock = threading.Lock()
        self.slept = 0.0

    def time(self) -> float:
        """Fake epoch seconds."""
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        """Fake monotonic seconds."""
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        with self._lock:
            self._now += seconds
            self._mono += seconds

    def sleep(self, seconds: float) -> None:
        """Advance instead of sleeping."""
        if seconds > 0:
            self.slept += seconds
            self.advance(seconds)

    def wait(self, futures: Collection[cf.Future], timeout: float | None) -> set[cf.Future]:
        """Wait (really) a moment for futures; if none is done, advance by ``timeout``."""
        done: set[cf.Future] = set()
        if futures:
            done, _ = cf.wait(futures, timeout=0.05, return_when=cf.FIRST_COMPLETED)
        if not done and timeout:
            self.advance(timeout)
        return done


class Flaky:
    """Wrap a row function so each row fails transiently ``fail_times`` times first.

    The failure count is read from the row's attempt number (``current_item()``),
    so it works across threads, processes and resumed runs.

    Args:
        fn: the function to call once the row has failed enough.
        fail_times: transient failures per row before success.
        exc: what to raise (default ``bk.Transient``).

    Example:
        >>> f = Flaky(lambda row: 1, fail_times=0)
        >>> f({"a": 1})
        1
    """

    def __init__(self, fn: Callable[[dict[str, Any]], Any], *, fail_times: int = 1,
                 exc: Callable[[str], BaseException] | None = None) -> None:
        self.fn = fn
        self.fail_times = fail_times
        self.exc = exc or (lambda msg: Transient(msg))
        self.__name__ = getattr(fn, "__name__", "flaky")

    def __call__(self, row: dict[str, Any]) -> Any:
        ctx = current_item()
        attempt = ctx.attempt if ctx is not None else 1
        if attempt <= self.fail_times:
            raise self.exc(f"flaky failure on attempt {attempt}")
        return self.fn(row)


class Poison:
    """Wrap a row function so rows matching ``is_poison`` fail: raise, or kill the process.

    Args:
        fn: the function for healthy rows.
        is_poison: which rows are poison.
        mode: ``"raise"`` (``bk.Permanent``), ``"exit"`` (``os._exit``: a dead worker)
            or ``"segfault"`` (a real SIGSEGV).

    Example:
        >>> p = Poison(lambda row: 1, lambda row: row["n"] == 0)
        >>> p({"n": 1})
        1
    """

    def __init__(self, fn: Callable[[dict[str, Any]], Any],
                 is_poison: Callable[[dict[str, Any]], bool], *, mode: str = "raise") -> None:
        if mode not in ("raise", "exit", "segfault"):
            raise ValueError(f"mode must be 'raise', 'exit' or 'segfault', got {mode!r}")
        self.fn = fn
        self.is_poison = is_poison
        self.mode = mode
        self.__name__ = getattr(fn, "__name__", "poison")

    def __call__(self, row: dict[str, Any]) -> Any:
        if self.is_poison(row):
            if self.mode == "exit":
                import os

                os._exit(70)
            if self.mode == "segfault":
                import ctypes

                ctypes.string_at(0)
            raise Permanent(f"poison row {row!r:.60}")
        return self.fn(row)
