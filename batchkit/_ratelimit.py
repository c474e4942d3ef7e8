"""Per-step rate limits: a ``RateLimit`` value and the ``Limiter`` every worker of a run shares.

A rate limit is ``calls`` per ``per`` seconds, written ``"100/min"``, ``"50/s"``,
``"1000/h"`` or as a number of calls per second. The limiter paces calls with
GCRA (the generic cell rate algorithm, "virtual scheduling"): it keeps one
number, the theoretical arrival time ``tat`` of the next call at the steady
pace, and lets a call go at time ``now`` when ``now >= tat - (burst - 1) * T``,
where ``T = per / calls``; then ``tat = max(tat, now) + T``.

**What burst means.** ``burst`` is the most calls that may go at the same
instant, after the step has been idle long enough (``burst * T``). With the
default ``burst=1`` calls are evenly spaced, one every ``T`` (50/s: one every
20 ms). Credit for idle time is capped at ``burst`` calls, and a new limiter
starts with exactly that credit -- not with a whole period's worth of calls,
which is how a token bucket that starts full lets through twice the limit in
its first second (../shared/FACTS.md measured 99 calls in the first second of
a 50/s limit).

**The guarantee.** In any window of ``per`` seconds (half-open, ``[t, t + per)``)
at most ``calls + burst - 1`` calls are let go (``ceil(calls) + burst - 1`` when
``calls`` is fractional); with ``burst=1`` that is exactly the limit. The bound
holds for the moments the limiter admits calls (the value ``acquire`` returns).

**A 429 pauses the step.** ``pause(seconds)`` (a Retry-After) holds back every
caller, also those already waiting, until the pause ends; then calls resume
one at a time at the steady pace (no burst: the service has just said we were
too fast), and burst credit builds up again while idle.

**Processes.** One ``Limiter`` serves every thread (and event loop) of a
process. Processes cannot share it: each gets its own limiter of
``rate.split(n)``, documented there.

**Why not pyrate-limiter.** The issue asks to prefer a well-kept library where
it meets the figures. benchmarks/ratelimit.py measures pyrate-limiter 4.6 beside
this limiter (16 threads, 50/s for 10 s and 100/min for 60 s; BENCHMARKS.md):
its default sliding-window log holds the limit but lets each second's 50 calls
out within 100 ms -- bursts we do not want by default; its GCRA bucket paces
smoothly but sleeps an extra ``buffer_ms`` (50 ms) per retry and reached 29% of
50/s; with ``buffer_ms=0`` it reached the rate but made 101 calls in the first
minute of a 100/min limit (its clock counts whole milliseconds, so a call may go
up to 1 ms early) and used ~10x our CPU in wake-ups. It also sleeps with
``time.sleep`` (tests could not drive it with a fake clock) and cannot pause all
callers on a Retry-After. Wrapping all that would take more code than the ~60
lines of arithmetic below.

Example:
    >>> from batchkit.testing import FakeClock
    >>> limiter = Limiter("2/s", clock=FakeClock())
    >>> [limiter.acquire() for _ in range(4)]
    [0.0, 0.5, 1.0, 1.5]
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from ._clock import Clock, SystemClock
from ._errors import ConfigError

__all__ = ["Limiter", "RateLimit"]

_FORMS = ("'100/min', '50/s', '1000/h' (units s, sec, m, min, h, hour) "
          "or a number of calls per second")
_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
          "h": 3600.0, "hr": 3600.0, "hour": 3600.0}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*/\s*([A-Za-z]+)\s*$")
_NS = 1_000_000_000


def _positive(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


@dataclass(frozen=True)
class RateLimit:
    """At most ``calls`` calls per ``per`` seconds, with up to ``burst`` at once.

    Validated when made: a bad value raises ``ConfigError`` before any work
    starts. See the module docstring for the exact guarantee.

    Args:
        calls: calls allowed per ``per`` seconds (> 0; may be fractional).
        per: the window in seconds (> 0) or a ``timedelta``.
        burst: the most calls let go at once after idle (whole number >= 1);
            1, the default, spaces calls evenly.

    Example:
        >>> r = RateLimit(100, per=60)
        >>> r.per_second, str(r)
        (1.6666666666666667, '100/min')
        >>> str(RateLimit.parse("50/s", burst=10))
        '50/s (burst 10)'
    """

    calls: float
    per: float = 1.0
    burst: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.per, timedelta):
            object.__setattr__(self, "per", self.per.total_seconds())
        if not _positive(self.calls):
            raise ConfigError(f"a rate limit's calls must be a number > 0, got {self.calls!r}; "
                              f"write it as {_FORMS}")
        if not _positive(self.per):
            raise ConfigError(f"a rate limit's period must be seconds > 0 (or a timedelta), "
                              f"got {self.per!r}; write it as {_FORMS}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigError(f"burst must be a whole number >= 1 (the most calls at once; "
                              f"1 spaces calls evenly), got {self.burst!r}")

    @classmethod
    def parse(cls, value: RateLimit | str | float, *, burst: int | None = None) -> RateLimit:
        """Read ``"N/s"``, ``"N/min"``, ``"N/h"``, a number of calls per second, or a RateLimit.

        Units: ``s``/``sec``/``second``, ``m``/``min``/``minute``, ``h``/``hr``/``hour``,
        any case. ``burst`` (when given) replaces the value's burst.

        Raises:
            ConfigError: the value is none of these forms; the message names it.

        Example:
            >>> RateLimit.parse("100/min")
            RateLimit(calls=100, per=60.0, burst=1)
            >>> RateLimit.parse(2.5)
            RateLimit(calls=2.5, per=1.0, burst=1)
            >>> RateLimit.parse("100/day")
            Traceback (most recent call last):
            ...
            batchkit._errors.ConfigError: unknown rate limit unit 'day' in '100/day'; ...
        """
        if isinstance(value, RateLimit):
            rate = value
        elif isinstance(value, str):
            match = _RATE_RE.match(value)
            if match is None:
                raise ConfigError(f"cannot read rate limit {value!r}; write it as {_FORMS}")
            number, unit = match.groups()
            per = _UNITS.get(unit.lower())
            if per is None:
                raise ConfigError(f"unknown rate limit unit {unit!r} in {value!r}; "
                                  f"write it as {_FORMS}")
            calls: float = float(number) if "." in number else int(number)
            if not calls:
                raise ConfigError(f"rate limit {value!r} allows no calls; write it as {_FORMS}")
            rate = cls(calls, per=per)
        elif _positive(value):
            rate = cls(value, per=1.0)
        else:
            raise ConfigError(f"a rate limit must be > 0, got {value!r}; write it as {_FORMS}")
        return rate if burst is None else replace(rate, burst=burst)

    @property
    def per_second(self) -> float:
        """Calls per second at the steady pace.

        Example:
            >>> RateLimit.parse("120/min").per_second
            2.0
        """
        return self.calls / self.per

    @property
    def interval(self) -> float:
        """Seconds between calls at the steady pace (``per / calls``).

        Example:
            >>> RateLimit.parse("50/s").interval
            0.02
        """
        return self.per / self.calls

    def split(self, n: int) -> RateLimit:
        """The share of each of ``n`` processes that cannot share one limiter.

        Each process gets ``calls // n`` calls per ``per`` (the same window) and
        ``max(1, burst // n)`` burst. Rounding the calls down keeps the sum of
        the shares within the limit in every window even when the processes
        start together: with ``calls / n`` (say 100/min over 3 processes, 33.3
        each) each process may make 34 calls in its first minute, 102 in all.
        The cost is ``calls % n`` calls per window (100/min over 3: 99/min).
        Together the ``n`` processes make at most ``calls + burst - 1`` calls in
        any window of ``per``; more than ``burst`` calls (one per process) may
        coincide when ``burst < n``.

        Args:
            n: the number of processes (whole number >= 1).

        Raises:
            ConfigError: ``n`` is not a whole number >= 1, or the limit allows
                fewer than ``n`` calls per window (every process needs at least
                one: use threads, fewer processes or a longer window).

        Example:
            >>> str(RateLimit.parse("100/min", burst=10).split(3))
            '33/min (burst 3)'
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"a rate limit is split across a whole number >= 1 of processes, "
                              f"got {n!r}")
        if n == 1:
            return self
        share = math.floor(self.calls / n)
        if share < 1:
            raise ConfigError(
                f"rate limit {self} cannot be split across {n} processes without exceeding it: "
                f"each process needs at least one call per {_per_text(self.per)}. Use the "
                "threads backend (one shared limiter), fewer processes, or state the limit "
                "over a longer window (e.g. '60/min' instead of '1/s')"
            )
        return RateLimit(share, per=self.per, burst=max(1, self.burst // n))

    def __str__(self) -> str:
        calls = int(self.calls) if float(self.calls).is_integer() else self.calls
        text = f"{calls}/{_per_text(self.per)}"
        return text if self.burst == 1 else f"{text} (burst {self.burst})"


def _per_text(per: float) -> str:
    return {1.0: "s", 60.0: "min", 3600.0: "h"}.get(per, f"{per:g}s")


class Limiter:
    """Paces calls to a rate limit; one limiter is shared by every thread of a run.

    Thread-safe. Blocking callers queue on one gate, so only the first in line
    polls the clock; ``acquire_async`` callers queue per event loop. Time comes
    from the injected clock's ``monotonic()`` and ``sleep()`` (tests pass
    ``batchkit.testing.FakeClock``); async callers wait with ``async_sleep``.
    A limiter belongs to one process and cannot be pickled: send its
    ``RateLimit`` (``rate.split(n)``) to other processes instead.

    Args:
        rate: a ``RateLimit`` or anything ``RateLimit.parse`` reads.
        clock: time source (default: the real clock).
        async_sleep: coroutine function ``acquire_async`` waits with
            (default ``asyncio.sleep``); a test passes one that advances its fake clock.

    Attributes:
        rate: the ``RateLimit`` enforced.
        admitted: calls let go so far.
        waited: total seconds callers spent waiting in ``acquire``/``acquire_async``.

    Example:
        >>> from batchkit.testing import FakeClock
        >>> clock = FakeClock()
        >>> limiter = Limiter(RateLimit.parse("10/s", burst=3), clock=clock)
        >>> [limiter.acquire() for _ in range(5)]   # three at once, then every 0.1 s
        [0.0, 0.0, 0.0, 0.1, 0.2]
        >>> limiter.admitted, round(clock.slept, 3)
        (5, 0.2)
    """

    def __init__(self, rate: RateLimit | str | float, *, clock: Clock | None = None,
                 async_sleep: Callable[[float], Awaitable[Any]] | None = None) -> None:
        self.rate = RateLimit.parse(rate)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._async_sleep = async_sleep
        # nanoseconds, rounded so the limiter errs on the slow side
        self._t = max(1, math.ceil(self.rate.per * _NS / self.rate.calls))
        self._tau = (self.rate.burst - 1) * self._t
        self._tat: int | None = None  # theoretical arrival time; None: idle since made
        self._state = threading.Lock()
        self._gate = threading.Lock()
        self._async_gates: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self.admitted = 0
        self.waited = 0.0

    def _take(self, n: int, since: float | None) -> tuple[float, float]:
        """Admit ``n`` calls now if they conform; return (now, seconds still to wait)."""
        with self._state:
            now_s = self._clock.monotonic()
            # integer nanoseconds, rounded against the caller: "now" as early as it may be
            # for the check, as late as it may be for the schedule
            now, now_late = math.floor(now_s * _NS), math.ceil(now_s * _NS)
            if self._tat is not None and self._tat > now:
                allow_at = self._tat - self._tau + (n - 1) * self._t
                if allow_at > now:
                    return now_s, (allow_at - now) / _NS
            base = now_late if self._tat is None else max(self._tat, now_late)
            self._tat = base + n * self._t
            self.admitted += n
            if since is not None:
                self.waited += now_s - since
            return now_s, 0.0

    def _check(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.rate.burst:
            raise ConfigError(f"a limiter of {self.rate} lets 1 to {self.rate.burst} calls go "
                              f"at once (its burst), got n={n!r}")

    def acquire(self, n: int = 1) -> float:
        """Block until ``n`` calls may go; take them and return the moment they were let go.

        Args:
            n: calls to make at once, 1 to ``burst``.

        Returns:
            The clock's ``monotonic()`` reading when the calls were admitted.

        Example:
            >>> from batchkit.testing import FakeClock
            >>> limiter = Limiter("100/min", clock=FakeClock())
            >>> limiter.acquire(), limiter.acquire()
            (0.0, 0.6)
        """
        self._check(n)
        since = self._clock.monotonic()
        with self._gate:
            while True:
                now, wait = self._take(n, since)
                if wait <= 0:
                    return now
                self._clock.sleep(wait)

    def try_acquire(self, n: int = 1) -> bool:
        """Take ``n`` calls if they may go now; never waits.

        Example:
            >>> from batchkit.testing import FakeClock
            >>> clock = FakeClock()
            >>> limiter = Limiter("1/s", clock=clock)
            >>> limiter.try_acquire(), limiter.try_acquire()
            (True, False)
            >>> clock.advance(1.0); limiter.try_acquire()
            True
        """
        self._check(n)
        return self._take(n, None)[1] <= 0

    async def acquire_async(self, n: int = 1) -> float:
        """Like ``acquire``, for async steps: waits with ``asyncio.sleep``, not blocking the loop.

        Example:
            >>> import asyncio
            >>> from batchkit.testing import FakeClock
            >>> clock = FakeClock()
            >>> async def fake_sleep(seconds):
            ...     clock.sleep(seconds)
            >>> limiter = Limiter("4/s", clock=clock, async_sleep=fake_sleep)
            >>> async def three():
            ...     return await asyncio.gather(*(limiter.acquire_async() for _ in range(3)))
            >>> asyncio.run(three())
            [0.0, 0.25, 0.5]
        """
        import asyncio

        self._check(n)
        sleep = self._async_sleep or asyncio.sleep
        since = self._clock.monotonic()
        loop = asyncio.get_running_loop()
        with self._state:
            gate = self._async_gates.get(loop)
            if gate is None:
                gate = self._async_gates[loop] = asyncio.Lock()
        async with gate:
            while True:
                now, wait = self._take(n, since)
                if wait <= 0:
                    return now
                await sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold back every caller for ``seconds`` from now (a 429's Retry-After).

        Callers already waiting wait too. A shorter pause never ends a longer
        one. After the pause calls resume one at a time at the steady pace.

        Example:
            >>> from batchkit.testing import FakeClock
            >>> limiter = Limiter("10/s", clock=FakeClock())
            >>> limiter.pause(5.0)
            >>> limiter.try_acquire(), limiter.acquire(), limiter.acquire()
            (False, 5.0, 5.1)
        """
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) \
                or not math.isfinite(seconds):
            raise ConfigError(f"pause takes a finite number of seconds, got {seconds!r}")
        with self._state:
            now = math.ceil(self._clock.monotonic() * _NS)
            resume = now + math.ceil(max(0.0, seconds) * _NS) + self._tau
            if self._tat is None or self._tat < resume:
                self._tat = resume

    def __repr__(self) -> str:
        return f"Limiter({str(self.rate)!r}, admitted={self.admitted})"

    def __getstate__(self) -> None:
        raise TypeError(
            "a Limiter belongs to one process and cannot be pickled; send its RateLimit "
            "(rate.split(n) for n processes) and make a Limiter in each process"
        )
