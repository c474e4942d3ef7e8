"""Rate limits: parsing, validation, split across processes, GCRA pacing, burst, pause, async."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchkit._errors import ConfigError
from batchkit._ratelimit import Limiter, RateLimit
from batchkit.testing import FakeClock


def max_in_window(times: list[float], window: float) -> int:
    """The most of ``times`` that fall in any half-open window ``[t, t + window)``."""
    ordered = sorted(times)
    best = left = 0
    for right, t in enumerate(ordered):
        while t - ordered[left] >= window:
            left += 1
        best = max(best, right - left + 1)
    return best


def fake_async_sleep(clock: FakeClock):
    """An ``async_sleep`` that advances the fake clock (and yields to the loop)."""

    async def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        await asyncio.sleep(0)

    return sleep


# --- RateLimit: parsing and validation -------------------------------------------------------


@pytest.mark.parametrize(("text", "calls", "per"), [
    ("100/min", 100, 60.0), ("50/s", 50, 1.0), ("50/sec", 50, 1.0), ("5/m", 5, 60.0),
    ("1000/h", 1000, 3600.0), ("1000/hour", 1000, 3600.0), ("2/second", 2, 1.0),
    ("3/minute", 3, 60.0), ("7/hr", 7, 3600.0), (" 10 / MIN ", 10, 60.0), ("2.5/s", 2.5, 1.0),
    (".5/s", 0.5, 1.0),
])
def test_parse_reads_every_written_form(text, calls, per):
    """'N/s', 'N/sec', 'N/m', 'N/min', 'N/h', 'N/hour' (any case, spaces) read as calls/period."""
    rate = RateLimit.parse(text)
    assert (rate.calls, rate.per, rate.burst) == (calls, per, 1)


@pytest.mark.parametrize(("number", "per_second"), [(7, 7.0), (0.5, 0.5), (250.0, 250.0)])
def test_parse_reads_a_number_as_calls_per_second(number, per_second):
    """A bare number is calls per second."""
    rate = RateLimit.parse(number)
    assert rate.per == 1.0 and rate.per_second == per_second


def test_parse_passes_a_rate_limit_through_and_sets_burst():
    """A RateLimit parses to itself; burst= replaces its burst (and is validated)."""
    rate = RateLimit(100, per=60, burst=4)
    assert RateLimit.parse(rate) is rate
    assert RateLimit.parse(rate, burst=9) == RateLimit(100, per=60, burst=9)
    assert RateLimit.parse("100/min", burst=10).burst == 10
    with pytest.raises(ConfigError, match="burst"):
        RateLimit.parse("100/min", burst=0)


@pytest.mark.parametrize("bad", ["", "100", "100/", "/s", "abc/s", "-5/s", "1e3/s", "100/day",
                                 "100 per min", "100/min/s", "nan/s"])
def test_parse_rejects_bad_strings_naming_the_value_and_the_forms(bad):
    """A string in no known form is a ConfigError naming the string and the allowed forms."""
    with pytest.raises(ConfigError) as info:
        RateLimit.parse(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert "'100/min'" in message and "number of calls per second" in message


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("nan"), float("inf"), True, None, [50]])
def test_parse_rejects_numbers_that_are_not_positive_rates(bad):
    """Zero, negative, NaN, infinite, bool and non-numbers are ConfigErrors that name the value."""
    with pytest.raises(ConfigError) as info:
        RateLimit.parse(bad)
    assert repr(bad) in str(info.value)


def test_parse_rejects_zero_calls_in_a_string():
    """'0/s' allows no calls: a ConfigError naming it."""
    with pytest.raises(ConfigError, match="'0/min' allows no calls"):
        RateLimit.parse("0/min")


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"calls": 0}, "calls"), ({"calls": "5"}, "calls"), ({"calls": 5, "per": 0}, "period"),
    ({"calls": 5, "per": -1.0}, "period"), ({"calls": 5, "burst": 0}, "burst"),
    ({"calls": 5, "burst": 1.5}, "burst"), ({"calls": 5, "burst": True}, "burst"),
])
def test_rate_limit_is_validated_when_made(kwargs, word):
    """A RateLimit with a bad field fails at construction with a ConfigError about that field."""
    with pytest.raises(ConfigError, match=word):
        RateLimit(**kwargs)


def test_rate_limit_is_a_frozen_value_with_derived_figures():
    """RateLimit is immutable, hashable; per takes a timedelta; per_second and interval follow."""
    rate = RateLimit(100, per=timedelta(minutes=1))
    assert rate == RateLimit.parse("100/min") and hash(rate) == hash(RateLimit.parse("100/min"))
    assert rate.per == 60.0
    assert rate.per_second == pytest.approx(100 / 60)
    assert rate.interval == pytest.approx(0.6)
    with pytest.raises(AttributeError):
        rate.calls = 5  # type: ignore[misc]


@pytest.mark.parametrize(("rate", "text"), [
    (RateLimit.parse("100/min"), "100/min"),
    (RateLimit.parse("50/s", burst=10), "50/s (burst 10)"),
    (RateLimit.parse("1000/h"), "1000/h"), (RateLimit(2.5), "2.5/s"),
    (RateLimit(3, per=90), "3/90s"),
])
def test_rate_limit_prints_as_written(rate, text):
    """str() of a RateLimit reads like the form it was written in."""
    assert str(rate) == text


# --- RateLimit.split ---------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "n", "calls", "burst"), [
    (RateLimit(100, per=60), 1, 100, 1),
    (RateLimit(100, per=60), 2, 50, 1),
    (RateLimit(100, per=60), 3, 33, 1),
    (RateLimit(50, per=1, burst=10), 4, 12, 2),
    (RateLimit(50, per=1, burst=3), 4, 12, 1),
    (RateLimit(2.5, per=1), 2, 1, 1),
])
def test_split_gives_each_process_a_whole_share(rate, n, calls, burst):
    """split(n): calls // n per the same window each, burst max(1, burst // n)."""
    share = rate.split(n)
    assert (share.calls, share.per, share.burst) == (calls, rate.per, burst)


@pytest.mark.parametrize(("text", "burst", "n"), [("100/min", 1, 3), ("50/s", 10, 4),
                                                  ("10/s", 3, 4), ("7/s", 1, 7)])
def test_split_shares_starting_together_stay_within_the_limit(text, burst, n):
    """n processes on split(n), flat out from one start, keep calls + burst - 1 per window."""
    rate = RateLimit.parse(text, burst=burst)
    times: list[float] = []
    for _ in range(n):  # each process alone on its own clock; merging aligns their starts
        limiter = Limiter(rate.split(n), clock=FakeClock())
        times += [limiter.acquire() for _ in range(int(3 * rate.calls) // n)]
    assert max_in_window(times, rate.per) <= rate.calls + rate.burst - 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_split_rejects_a_bad_process_count(bad):
    """split() takes a whole number of processes >= 1."""
    with pytest.raises(ConfigError, match="whole number"):
        RateLimit.parse("100/min").split(bad)


def test_split_refuses_when_processes_outnumber_calls_per_window():
    """'1/s' over 2 processes cannot hold in every second: a ConfigError suggesting a longer one."""
    with pytest.raises(ConfigError, match=r"1/s cannot be split across 2 processes.*'60/min'"):
        RateLimit.parse("1/s").split(2)


# --- Limiter: GCRA pacing, burst, try_acquire ---------------------------------------------------


def test_acquire_spaces_calls_evenly_with_burst_one(clock):
    """burst=1: the first call goes at once, then exactly one every per/calls seconds."""
    limiter = Limiter("4/s", clock=clock)
    times = [limiter.acquire() for _ in range(6)]
    assert times == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    assert clock.slept == pytest.approx(1.25)
    assert limiter.admitted == 6 and limiter.waited == pytest.approx(1.25)


def test_acquire_follows_the_gcra_schedule_for_a_long_limit(clock):
    """100/min: one call every 0.6 s, and exactly 100 in the first minute."""
    limiter = Limiter("100/min", clock=clock)
    times = [limiter.acquire() for _ in range(150)]
    assert times == pytest.approx([0.6 * i for i in range(150)])
    assert sum(t < 60.0 for t in times) == 100


def test_burst_lets_that_many_go_at_once_then_paces(clock):
    """burst=3 on a fresh limiter: three calls at once (not a period's worth), then steady pace."""
    limiter = Limiter(RateLimit.parse("10/s", burst=3), clock=clock)
    times = [limiter.acquire() for _ in range(6)]
    assert times == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2, 0.3])


def test_burst_credit_after_idle_is_capped_at_burst(clock):
    """However long the idle, at most burst calls go at once; credit accrues one per interval."""
    limiter = Limiter(RateLimit.parse("10/s", burst=3), clock=clock)
    for _ in range(3):
        limiter.acquire()
    clock.advance(3600.0)
    assert [limiter.try_acquire() for _ in range(5)] == [True, True, True, False, False]
    clock.advance(0.2)  # two intervals: two calls' credit
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]


def test_first_window_holds_calls_plus_burst_minus_one():
    """Flat out from a fresh start, the first window sees exactly calls + burst - 1 (not 2x)."""
    for burst in (1, 5, 50):
        limiter = Limiter(RateLimit.parse("50/s", burst=burst), clock=FakeClock())
        times = [limiter.acquire() for _ in range(200)]
        assert sum(t < 1.0 for t in times) == 50 + burst - 1
        assert max_in_window(times, 1.0) == 50 + burst - 1


@settings(max_examples=150, deadline=None)
@given(calls=st.integers(1, 20), burst=st.integers(1, 6),
       steps=st.lists(st.tuples(st.floats(0, 2.0), st.integers(1, 6)), min_size=1, max_size=60))
def test_no_window_ever_exceeds_calls_plus_burst_minus_one(calls, burst, steps):
    """For any arrival pattern, no window of `per` holds more than calls + burst - 1 admissions."""
    clock = FakeClock()
    limiter = Limiter(RateLimit(calls, per=1.0, burst=burst), clock=clock)
    admitted: list[float] = []
    for gap, tries in steps:
        clock.advance(gap)
        for _ in range(tries):
            if limiter.try_acquire():
                admitted.append(clock.monotonic())
    assert max_in_window(admitted, 1.0) <= calls + burst - 1
    assert limiter.admitted == len(admitted)


def test_try_acquire_never_waits(clock):
    """try_acquire takes a free call and says False otherwise, without sleeping."""
    limiter = Limiter("2/s", clock=clock)
    assert limiter.try_acquire() is True
    assert limiter.try_acquire() is False
    clock.advance(0.49)
    assert limiter.try_acquire() is False
    clock.advance(0.01)
    assert limiter.try_acquire() is True
    assert clock.slept == 0 and limiter.admitted == 2


def test_acquire_n_takes_several_calls_at_once(clock):
    """acquire(n) lets n calls go together (n <= burst), pushing later calls back n intervals."""
    limiter = Limiter(RateLimit.parse("10/s", burst=4), clock=clock)
    assert limiter.acquire(4) == 0.0
    assert limiter.acquire(2) == pytest.approx(0.2)
    assert limiter.acquire() == pytest.approx(0.3)
    assert limiter.admitted == 7


@pytest.mark.parametrize("bad", [0, 5, -1, 1.0, True])
def test_acquire_n_must_fit_the_burst(clock, bad):
    """n outside 1..burst (or not a whole number) is a ConfigError naming n and the burst."""
    limiter = Limiter(RateLimit.parse("10/s", burst=4), clock=clock)
    with pytest.raises(ConfigError, match=r"1 to 4 calls .*n="):
        limiter.acquire(bad)
    with pytest.raises(ConfigError):
        limiter.try_acquire(bad)


def test_limiter_accepts_the_written_forms(clock):
    """Limiter takes a string, a number or a RateLimit, and bad ones fail when made."""
    assert Limiter("100/min", clock=clock).rate == RateLimit(100, per=60)
    assert Limiter(5, clock=clock).rate == RateLimit(5)
    with pytest.raises(ConfigError):
        Limiter("fast", clock=clock)


def test_threads_sharing_a_limiter_get_distinct_paced_slots(clock):
    """8 threads x 25 calls on one limiter: 200 admissions, one per interval, none lost/doubled."""
    limiter = Limiter("10/s", clock=clock)
    times: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        for _ in range(25):
            t = limiter.acquire()
            with lock:
                times.append(t)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(times) == pytest.approx([0.1 * i for i in range(200)])
    assert limiter.admitted == 200


def test_limiter_cannot_be_pickled_and_says_what_to_send():
    """Pickling a Limiter fails with advice to send the RateLimit (split) instead."""
    with pytest.raises(TypeError, match=r"rate\.split\(n\)"):
        pickle.dumps(Limiter("10/s"))
    assert pickle.loads(pickle.dumps(RateLimit.parse("10/s", burst=2))) == \
        RateLimit.parse("10/s", burst=2)


# --- pause (Retry-After) --------------------------------------------------------------------------


def test_pause_holds_every_caller_then_resumes_smoothly(clock):
    """pause(5) at t=0: nothing goes before 5 s, then one call per interval despite burst credit."""
    limiter = Limiter(RateLimit.parse("10/s", burst=3), clock=clock)
    limiter.pause(5.0)
    assert limiter.try_acquire() is False
    times = [limiter.acquire() for _ in range(3)]
    assert times == pytest.approx([5.0, 5.1, 5.2])


def test_a_shorter_pause_does_not_end_a_longer_one(clock):
    """pause(5) then pause(1): callers still wait the 5 s."""
    limiter = Limiter("10/s", clock=clock)
    limiter.pause(5.0)
    limiter.pause(1.0)
    assert limiter.acquire() == pytest.approx(5.0)


def test_pause_blocks_all_threads(clock):
    """After pause(5), every one of 6 threads is admitted at or after 5 s, one per interval."""
    limiter = Limiter("10/s", clock=clock)
    limiter.acquire()
    limiter.pause(5.0)
    times: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        t = limiter.acquire()
        with lock:
            times.append(t)

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(times) == pytest.approx([5.0, 5.1, 5.2, 5.3, 5.4, 5.5])


def test_pause_holds_callers_that_are_already_waiting():
    """A pause while threads wait for their slot holds them too: no admission inside the pause."""
    limiter = Limiter("20/s")  # real clock: the callers must already be asleep when the pause comes
    admitted: list[float] = []
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            admitted.append(limiter.acquire())

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.12)
    before = time.monotonic()
    limiter.pause(0.25)
    after = time.monotonic()  # the pause began between `before` and `after`
    time.sleep(0.4)
    stop.set()
    for thread in threads:
        thread.join()
    assert [t for t in admitted if after < t < before + 0.25] == []
    assert any(t < before for t in admitted) and any(t >= before + 0.25 for t in admitted)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "5", None])
def test_pause_rejects_what_is_not_seconds(bad):
    """pause() takes a finite number of seconds."""
    with pytest.raises(ConfigError, match="seconds"):
        Limiter("10/s").pause(bad)


def test_negative_pause_is_no_pause(clock):
    """A negative pause (a Retry-After already past) does not hold anyone."""
    limiter = Limiter("10/s", clock=clock)
    limiter.pause(-3.0)
    assert limiter.try_acquire() is True


# --- async ---------------------------------------------------------------------------------------


def test_acquire_async_paces_coroutines(clock):
    """Coroutines on one loop are admitted one per interval, waiting through async_sleep."""
    limiter = Limiter("5/s", clock=clock, async_sleep=fake_async_sleep(clock))

    async def main() -> list[float]:
        return await asyncio.gather(*(limiter.acquire_async() for _ in range(5)))

    assert sorted(asyncio.run(main())) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert limiter.admitted == 5


def test_acquire_async_honours_pause_and_burst(clock):
    """An async caller waits out a pause; acquire_async(n) takes n calls at once."""
    limiter = Limiter(RateLimit.parse("10/s", burst=2), clock=clock,
                      async_sleep=fake_async_sleep(clock))

    async def main() -> tuple[float, float]:
        first = await limiter.acquire_async(2)
        limiter.pause(3.0)
        return first, await limiter.acquire_async()

    assert asyncio.run(main()) == pytest.approx((0.0, 3.0))


def test_acquire_async_does_not_block_the_event_loop():
    """While coroutines wait for the limiter (real asyncio.sleep), other tasks keep running."""
    limiter = Limiter("20/s")

    async def main() -> tuple[list[float], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        times = await asyncio.gather(*(limiter.acquire_async() for _ in range(4)))
        task.cancel()
        return sorted(times), ticks

    times, ticks = asyncio.run(main())
    assert all(b - a >= 0.05 - 1e-6 for a, b in zip(times, times[1:]))
    assert ticks >= 5


def test_sync_and_async_callers_share_one_schedule(clock):
    """Threads calling acquire and a thread of coroutines share one pace, no slot given twice."""
    limiter = Limiter("10/s", clock=clock, async_sleep=fake_async_sleep(clock))
    times: list[float] = []
    lock = threading.Lock()

    def sync_caller() -> None:
        for _ in range(10):
            t = limiter.acquire()
            with lock:
                times.append(t)

    def async_caller() -> None:
        async def main() -> list[float]:
            return await asyncio.gather(*(limiter.acquire_async() for _ in range(10)))

        got = asyncio.run(main())
        with lock:
            times.extend(got)

    threads = [threading.Thread(target=sync_caller), threading.Thread(target=sync_caller),
               threading.Thread(target=async_caller)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ordered = sorted(times)
    assert len(ordered) == 30 and limiter.admitted == 30
    assert all(b - a >= 0.1 - 1e-9 for a, b in zip(ordered, ordered[1:]))


# --- real time: the behaviour is the pacing itself -----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("burst", [1, 10])
def test_sixteen_threads_get_the_limit_and_never_more(burst):
    """16 threads on 50/s for 3 s: >= 95% of the limit, no 1 s window over limit + burst - 1."""
    limiter = Limiter(RateLimit.parse("50/s", burst=burst))
    seconds, admitted, lock = 3.0, [], threading.Lock()
    start = time.monotonic()

    def caller() -> None:
        while True:
            t = limiter.acquire()
            if t >= start + seconds:
                return
            with lock:
                admitted.append(t)

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    achieved = len(admitted) / seconds / 50
    assert achieved >= 0.95, f"achieved {achieved:.3f} of the limit"
    assert max_in_window(admitted, 1.0) <= 50 + burst - 1
    assert limiter.admitted >= len(admitted)
