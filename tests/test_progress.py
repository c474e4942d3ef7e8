"""The terminal progress bar: tqdm rendering of live figures, written to a string buffer."""

from __future__ import annotations

import io

from batchkit._live import LiveStats
from batchkit._progress import TqdmProgress
from batchkit._report import RunReport

GREEN, RED, YELLOW = "\x1b[32m", "\x1b[31m", "\x1b[33m"


def stats(**kw) -> LiveStats:
    kw.setdefault("started_at", 0.0)
    kw.setdefault("now", 60.0)
    return LiveStats("leads", "r1", **kw)


def last_line(out: io.StringIO) -> str:
    return out.getvalue().rstrip("\n").split("\r")[-1]


def test_update_moves_bar_and_shows_postfix():
    """The bar is at done + failed of total; the postfix has items/min, failed, retries, cost."""
    out = io.StringIO()
    p = TqdmProgress("leads", file=out)
    p.update(stats(total=10, done=3, failed=1, retried=2, cost_usd=0.5))
    assert (p.bar.n, p.bar.total) == (4, 10)
    p.close(stats(total=10, done=3, failed=1, retried=2, cost_usd=0.5, state="halted"))
    line = last_line(out)
    assert line.startswith("leads:  40%")
    assert "4/10" in line
    for part in ["items/min=4.0", "failed=1", "retries=2", "cost=$0.50"]:
        assert part in line, part


def test_no_cost_shown_when_nothing_spent():
    """A run without cost shows no cost field."""
    out = io.StringIO()
    p = TqdmProgress("leads", file=out)
    p.close(stats(total=2, done=2, state="completed"))
    assert "cost=" not in out.getvalue()
    assert "2/2" in last_line(out)


def test_rows_finished_in_open_chunks_move_the_bar():
    """While running, rows finished in uncommitted chunks count; close() uses committed rows."""
    p = TqdmProgress("leads", file=io.StringIO())
    p.update(stats(total=10, done=2, in_chunk_done=3))
    assert p.bar.n == 5
    p.update(stats(total=10, done=4, in_chunk_done=0))  # never moves backwards while running
    assert p.bar.n == 5
    p.close(stats(total=10, done=4, state="interrupted"))
    assert p.bar.n == 4


def test_total_follows_the_stats():
    """A change of total (rows reclaimed, a selection grown) resizes the bar."""
    p = TqdmProgress("leads", file=io.StringIO())
    p.update(stats(total=10, done=1))
    p.update(stats(total=12, done=2))
    assert (p.bar.n, p.bar.total) == (2, 12)


def test_green_when_completed():
    """A completed run closes with a green bar at total."""
    out = io.StringIO()
    p = TqdmProgress("leads", file=out)
    p.update(stats(total=5, done=2))
    p.close(stats(total=5, done=5, state="completed"))
    assert p.bar.colour == "green"
    assert GREEN in last_line(out)
    assert "5/5" in last_line(out)


def test_red_on_halt_or_death():
    """A halted or dead run closes with a red bar."""
    for state in ("halted", "died"):
        out = io.StringIO()
        p = TqdmProgress("leads", file=out)
        p.close(stats(total=5, done=1, failed=1, state=state))
        assert p.bar.colour == "red"
        assert RED in last_line(out)


def test_yellow_when_stopped_on_purpose():
    """A run interrupted or stopped by its budget closes with a yellow bar."""
    for state in ("interrupted", "budget"):
        out = io.StringIO()
        p = TqdmProgress("leads", file=out)
        p.close(stats(total=5, done=1, state=state))
        assert p.bar.colour == "yellow"
        assert YELLOW in last_line(out)


def test_old_event_protocol_still_renders():
    """The start/progress/finish events of the old runner drive the same bar."""
    out = io.StringIO()
    p = TqdmProgress("leads", file=out)
    p("progress", {"done": 1, "failed": 0, "retried": 0})  # before start: ignored
    assert p.bar is None
    p("start", {"total": 3})
    p("progress", {"done": 1, "failed": 1, "retried": 2})
    assert p.bar.n == 2
    p("progress", {"done": 1, "failed": 0, "retried": 0})
    report = RunReport("leads", "r1", "completed", {"pending": 0, "running": 0, "done": 2,
                       "failed": 1}, 3, 2, 1, 2, 0, 0, 1.0)
    p("finish", {"report": report})
    assert (p.bar.n, p.bar.colour) == (3, "green")
    assert "failed=1" in last_line(out) and "retries=2" in last_line(out)
