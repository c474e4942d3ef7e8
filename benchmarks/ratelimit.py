"""Rate-limit adherence: 16 callers flat out against one limiter; achieved rate and worst windows.

Each limiter gets the same job: 16 threads call ``acquire`` in a loop for the
run's duration and record ``time.monotonic()`` as each call is let go (what a
server would see). From the timestamps:

- achieved / limit: calls made during the run / (duration x limit per second);
  the issue asks >= 0.95 when work is plentiful;
- max in any sliding window of the limit's period (1 s for 50/s, 60 s for
  100/min): must not exceed limit + burst - 1;
- calls in the first period: a bucket that starts full doubles it;
- max in any sliding tenth of the period (100 ms for 50/s): smooth pacing
  shows ~limit/10, a burst of the whole period's calls shows the limit;
- CPU seconds the process used during the run (pollers and wake-ups).

Contenders, all in the same run: batchkit's ``Limiter`` with burst 1 and burst
10, pyrate-limiter (if installed: its default sliding-window log, and its GCRA
bucket with burst 1, with its default ``buffer_ms=50`` extra sleep per retry and
with ``buffer_ms=0``), and a naive token bucket of capacity = limit that starts
full.

    python benchmarks/ratelimit.py            # 50/s for 10 s (~1 min)
    python benchmarks/ratelimit.py --long     # also 100/min for 60 s (~6 min more)
    python benchmarks/ratelimit.py --quick    # 50/s for 3 s (smoke)
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _common as c

from batchkit._ratelimit import Limiter, RateLimit

NAME = "ratelimit"
CALLERS = 16


class NaiveTokenBucket:
    """A token bucket of capacity = limit that starts full (the common naive limiter)."""

    def __init__(self, rate: RateLimit) -> None:
        self.capacity = float(rate.calls)
        self.tokens = self.capacity
        self.refill = rate.per_second
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        """Take a token, sleeping until one has refilled."""
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.refill)
                self.last = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.refill
            time.sleep(wait)


Factory = Callable[[], Callable[[], Any]]


def contenders(rate: RateLimit) -> list[tuple[str, int, Factory]]:
    """(label, burst, factory of an acquire function) for each limiter measured."""
    out: list[tuple[str, int, Factory]] = [
        ("batchkit Limiter, burst 1", 1, lambda: Limiter(rate).acquire),
        ("batchkit Limiter, burst 10", 10,
         lambda: Limiter(RateLimit.parse(rate, burst=10)).acquire),
    ]
    try:
        import pyrate_limiter as pl
    except ImportError:
        print("(pyrate-limiter not installed: `pip install pyrate-limiter` to compare)\n")
    else:
        interval_ms = int(rate.per * 1000)

        def pyrate_log() -> Callable[[], Any]:
            limiter = pl.Limiter(pl.Rate(int(rate.calls), interval_ms))
            return lambda: limiter.try_acquire("step")

        def pyrate_gcra(buffer_ms: int) -> Factory:
            def make() -> Callable[[], Any]:
                bucket = pl.StateBucket([pl.Rate(int(rate.calls), interval_ms, burst=1)])
                limiter = pl.Limiter(bucket, buffer_ms=buffer_ms)
                return lambda: limiter.try_acquire("step")

            return make

        version = pl.__version__
        out += [(f"pyrate-limiter {version}, default (sliding log)", 1, pyrate_log),
                (f"pyrate-limiter {version}, GCRA bucket, burst 1", 1, pyrate_gcra(50)),
                (f"pyrate-limiter {version}, GCRA bucket, burst 1, buffer_ms=0", 1,
                 pyrate_gcra(0))]
    out.append(("naive token bucket, starts full", 1, lambda: NaiveTokenBucket(rate).acquire))
    return out


def max_in_window(times: list[float], window: float) -> int:
    """The most timestamps in any half-open window ``[t, t + window)``."""
    best = left = 0
    for right, t in enumerate(times):
        while t - times[left] >= window:
            left += 1
        best = max(best, right - left + 1)
    return best


@dataclass
class Result:
    label: str
    calls: int
    achieved: float
    max_window: int
    first_window: int
    max_tenth: int
    cpu_s: float
    allowed: int


def measure(label: str, acquire: Callable[[], Any], rate: RateLimit, seconds: float,
            burst: int) -> Result:
    """Run CALLERS threads on ``acquire`` for ``seconds``; summarize the timestamps."""
    go = threading.Event()
    stamps: list[float] = []
    lock = threading.Lock()
    box: dict[str, float] = {}

    def caller() -> None:
        go.wait()
        end = box["start"] + seconds
        while True:
            acquire()
            t = time.monotonic()
            if t >= end:
                return
            with lock:
                stamps.append(t)

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    cpu0 = time.process_time()
    box["start"] = start = time.monotonic()
    go.set()
    time.sleep(seconds)
    cpu = time.process_time() - cpu0
    for thread in threads:  # stragglers wait for one more slot; never hold up the next run long
        thread.join(timeout=max(0.0, start + seconds + 2.0 - time.monotonic()))
    with lock:
        times = sorted(stamps)
    return Result(
        label=label,
        calls=len(times),
        achieved=len(times) / (seconds * rate.per_second),
        max_window=max_in_window(times, rate.per),
        first_window=sum(t < start + rate.per for t in times),
        max_tenth=max_in_window(times, rate.per / 10),
        cpu_s=cpu,
        allowed=int(rate.calls) + burst - 1,
    )


def run(rate: RateLimit, seconds: float) -> None:
    """Measure every contender on ``rate`` for ``seconds`` and print the table."""
    tenth = f"{rate.per / 10 * 1000:g} ms" if rate.per < 10 else f"{rate.per / 10:g} s"
    window = "1 s" if rate.per == 1 else f"{rate.per:g} s"
    print(f"## {rate} for {seconds:g} s, {CALLERS} caller threads\n")
    rows = []
    for label, burst, factory in contenders(rate):
        r = measure(label, factory(), rate, seconds, burst)
        verdict = "ok" if r.achieved >= 0.95 and r.max_window <= r.allowed else (
            "over the limit" if r.max_window > r.allowed else "under 95%")
        rows.append([r.label, r.calls, round(r.achieved, 3), r.max_window, r.allowed,
                     r.first_window, r.max_tenth, round(r.cpu_s, 2), verdict])
        print(f"  measured: {label}", flush=True)
    print()
    print(c.table(["limiter", "calls", "achieved / limit", f"max in any {window}",
                   "allowed (limit + burst - 1)", f"calls in first {window}",
                   f"max in any {tenth}", "CPU s", "verdict"], rows))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the 50/s run")
    parser.add_argument("--long", action="store_true", help="also 100/min for 60 s")
    parser.add_argument("--quick", action="store_true", help="50/s for 3 s (smoke)")
    a = parser.parse_args()
    with c.Tee(NAME):
        c.header("Rate-limit adherence")
        run(RateLimit.parse("50/s"), 3.0 if a.quick else a.seconds)
        if a.long:
            run(RateLimit.parse("100/min"), 60.0)
        c.footer()


if __name__ == "__main__":
    main()
