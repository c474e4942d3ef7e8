"""Time as an injected dependency, so tests never sleep.

The runner reads wall time (``time()``) for timestamps and retry schedules and
waits through the clock (``sleep()``, ``wait()``). ``batchkit.testing.FakeClock``
is the test double: its sleeps advance a counter instead of blocking.
"""

from __future__ import annotations

import concurrent.futures as cf
import time as _time
from collections.abc import Collection
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What the runner needs of time.

    Example:
        >>> isinstance(SystemClock(), Clock)
        True
    """

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...

    def wait(
        self, futures: Collection[cf.Future], timeout: float | None
    ) -> set[cf.Future]:
        """Wait until one of ``futures`` is done or ``timeout`` passes; return the done ones."""
        ...


class SystemClock:
    """The real clock.

    Example:
        >>> SystemClock().time() > 1.7e9
        True
    """

    def time(self) -> float:
        """Seconds since the epoch."""
        return _time.time()

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return _time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` (no-op when not positive)."""
        if seconds > 0:
            _time.sleep(seconds)

    def wait(
        self, futures: Collection[cf.Future], timeout: float | None
    ) -> set[cf.Future]:
        """Block until a future is done or the timeout passes."""
        if not futures:
            self.sleep(timeout or 0.0)
            return set()
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return done
