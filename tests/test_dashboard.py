"""The notebook dashboard: widget model values after feeding it live figures (no browser)."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass

import pytest

from batchkit._dashboard import Dashboard, _in_kernel
from batchkit._live import LiveStats


@dataclass(frozen=True)
class FakeAlert:
    level: str
    message: str


class Clock:
    """A hand-driven monotonic clock for the redraw throttle."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def stats(**kw) -> LiveStats:
    kw.setdefault("started_at", 0.0)
    kw.setdefault("now", 60.0)
    return LiveStats("leads", "r1", **kw)


@pytest.fixture
def clock() -> Clock:
    """A clock that only moves when the test moves it."""
    return Clock()


@pytest.fixture
def dash(clock) -> Dashboard:
    """A dashboard that is not displayed, throttled on the test's clock."""
    return Dashboard("leads", display=False, clock=clock)


def test_bar_follows_rows_that_ended(dash, clock):
    """While running, the bar's value is done + failed out of total, blue, redrawn each update."""
    for i in range(1, 6):
        clock.t += 1.0
        dash.update(stats(total=20, done=3 * i, failed=i, now=10.0 * i))
        assert (dash.bar.value, dash.bar.max) == (4 * i, 20)
        assert dash.bar.bar_style == ""
        assert f"{4 * i:,} / 20" in dash.html.value
    assert dash.state()["colour"] == "blue"
    assert dash.draws == 5


def test_bar_counts_rows_finished_in_open_chunks(dash):
    """Rows finished in uncommitted chunks move the bar; the panel counts them apart."""
    dash.update(stats(total=10, done=2, in_chunk_done=3))
    assert dash.bar.value == 5
    assert "2 / 10 (20.0%)" in dash.html.value
    assert "+3 finished in open chunks" in dash.html.value


@pytest.mark.parametrize(("state", "style", "colour"), [
    ("completed", "success", "green"),
    ("halted", "danger", "red"),
    ("died", "danger", "red"),
    ("interrupted", "warning", "orange"),
    ("budget", "warning", "orange"),
])
def test_colour_by_end_state(dash, state, style, colour):
    """close() colours the bar: green when completed, red on crash or halt, orange when stopped."""
    dash.update(stats(total=10, done=4))
    assert dash.bar.bar_style == ""
    dash.close(stats(total=10, done=9 if state == "completed" else 4, failed=1, state=state))
    assert dash.bar.bar_style == style
    assert dash.state()["colour"] == colour


def test_final_value_ignores_provisional_rows(dash):
    """At close the bar shows committed rows only, even if in_chunk_done was left set."""
    dash.update(stats(total=10, done=2, in_chunk_done=5))
    dash.close(stats(total=10, done=6, failed=1, in_chunk_done=3, state="interrupted"))
    assert (dash.bar.value, dash.bar.max) == (7, 10)


def test_panel_shows_the_figures(dash):
    """The panel shows done/total and %, rates, ETA, chunks, workers, outcomes and cost."""
    dash.update(stats(total=200, done=90, failed=10, retried=5, now=120.0, chunks_done=4,
                      chunks_running=2, pending=60, chunk_size=25, workers=4, workers_active=2,
                      cost_usd=1.5))
    text = dash.html.value
    for part in ["100 / 200 (50.0%)", "50.0 items/min", "last minute 50.0 items/min",
                 "elapsed 2m 00s", "ETA 2m 00s", "4 done · 2 running · 3 pending",
                 "2 active / 4", "succeeded 90 (90.0%)", "failed 10 (10.0%)",
                 "retried 5 (5.0%)", "$1.50 so far", "$0.015 per item"]:
        assert part in text, part
    assert "projected" not in text


def test_deadline_time_left(dash, clock):
    """With a deadline the panel shows the time left, then that it passed."""
    dash.update(stats(total=10, deadline_s=3600.0, now=600.0))
    assert "deadline in 50m 00s" in dash.html.value
    clock.t += 1.0
    dash.update(stats(total=10, deadline_s=3600.0, now=3700.0))
    assert "deadline passed" in dash.html.value


def test_recent_rate_and_eta_come_from_the_stats_window(dash):
    """items/min over the last minute and the ETA are those of the samples fed in."""
    s = stats(total=1000, started_at=0.0)
    for t in range(0, 121, 10):  # 10 rows/s for two minutes, then the last minute at 5/s
        s.done = 10 * t if t <= 60 else 600 + 5 * (t - 60)
        s.sample(float(t))
    dash.update(s)
    assert s.items_per_min_recent == 300.0
    assert "last minute 300.0 items/min" in dash.html.value
    assert "ETA 20s" in dash.html.value  # 100 rows left at 300/min


def test_budget_spent_and_projection(dash, clock):
    """With a budget the panel shows spent vs budget and the projected total."""
    dash.update(stats(total=200, done=100, cost_usd=1.5, budget_usd=5.0))
    assert "$1.50 of $5.00 (30.0%)" in dash.html.value
    assert "projected $3.00" in dash.html.value
    assert "over budget" not in dash.html.value
    clock.t += 1.0
    dash.update(stats(total=200, done=100, cost_usd=1.5, budget_usd=2.0))
    assert "projected $3.00 (over budget)" in dash.html.value
    assert dash.state()["budget_usd"] == 2.0


def test_alerts_listed_with_their_level(dash):
    """Alerts appear in the panel by level, newest last, with their text escaped."""
    alerts = (FakeAlert("warning", "failure rate 6% > 5%"),
              FakeAlert("critical", "throughput 12 items/min < 15"))
    dash.update(stats(total=10, done=1, alerts=alerts))
    text = dash.html.value
    assert "alerts (2)" in text
    assert "<b>warning</b>: failure rate 6% &gt; 5%" in text
    assert "<b>critical</b>: throughput 12 items/min &lt; 15" in text
    assert text.index("warning</b>") < text.index("critical</b>")
    assert dash.state()["alerts"] == [a.message for a in alerts]


def test_many_alerts_show_the_newest(dash):
    """Past eight alerts the panel lists the newest eight and counts the rest."""
    alerts = tuple(FakeAlert("warning", f"alert number {i}") for i in range(11))
    dash.update(stats(total=10, alerts=alerts))
    assert "alert number 10" in dash.html.value
    assert "alert number 2" not in dash.html.value
    assert "and 3 earlier" in dash.html.value


def test_throttle_never_drops_the_final_state(dash, clock):
    """Updates within a quarter second are not drawn, but close() always draws the final figures."""
    for done in range(1, 11):
        dash.update(stats(total=50, done=done, cost_usd=done * 0.1))
    assert dash.draws == 1
    assert dash.bar.value == 1
    dash.close(stats(total=50, done=50, cost_usd=5.0, state="completed"))
    assert (dash.bar.value, dash.draws) == (50, 2)
    assert "$5.00 so far" in dash.html.value
    dash.update(stats(total=50, done=3))  # late updates after close change nothing
    assert (dash.bar.value, dash.draws) == (50, 2)
    assert dash.state()["done"] == 50


def test_throttled_update_is_drawn_by_the_next_one(dash, clock):
    """A redraw happens again once min_interval_s has passed since the last one."""
    dash.update(stats(total=10, done=1))
    clock.t = 0.1
    dash.update(stats(total=10, done=2))
    assert dash.bar.value == 1
    clock.t = 0.3
    dash.update(stats(total=10, done=3))
    assert (dash.bar.value, dash.draws) == (3, 2)


def test_empty_run_fills_the_bar(dash):
    """A run with nothing to do ends with a full green bar."""
    dash.close(stats(total=0, state="completed"))
    assert (dash.bar.value, dash.bar.max, dash.bar.bar_style) == (1, 1, "success")
    assert "0 / 0 (100.0%)" in dash.html.value


def test_state_reports_rendered_figures(dash):
    """state() returns the last rendered counts, cost and colour as plain data."""
    assert dash.state()["state"] is None
    dash.close(stats(total=10, done=8, failed=2, retried=3, cost_usd=0.7, state="halted",
                     halt_reason="failure rate 20% is above max_failure_rate=0.1"))
    st = dash.state()
    assert {k: st[k] for k in ("state", "done", "failed", "retried", "ended", "total", "value",
                               "max", "colour", "closed")} == {
        "state": "halted", "done": 8, "failed": 2, "retried": 3, "ended": 10, "total": 10,
        "value": 10, "max": 10, "colour": "red", "closed": True}
    assert st["cost_usd"] == pytest.approx(0.7)
    assert "halted: failure rate 20% is above max_failure_rate=0.1" in dash.html.value


def test_widget_holds_bar_and_panel():
    """The widget to display is a VBox of the bar and the panel; the bar is labelled."""
    dash = Dashboard("leads", display=False)
    assert dash.widget.children == (dash.bar, dash.html)
    assert dash.bar.description == "leads"
    assert "waiting" in dash.html.value


def test_display_outside_a_kernel_is_a_no_op():
    """display=True outside a Jupyter kernel builds the dashboard without showing it."""
    assert not _in_kernel()
    dash = Dashboard("leads", display=True)
    dash.update(stats(total=4, done=4))
    assert dash.bar.value == 4


def test_updates_from_another_thread_then_close():
    """Updates racing in a background thread never overwrite the figures drawn by close()."""
    dash = Dashboard("leads", display=False, min_interval_s=0.0)
    stop = threading.Event()

    def spam() -> None:
        i = 0
        while not stop.is_set():
            dash.update(stats(total=1000, done=i % 500))
            i += 1

    thread = threading.Thread(target=spam)
    thread.start()
    for _ in range(200):
        dash.update(stats(total=1000, done=1))
    dash.close(stats(total=1000, done=1000, state="completed"))
    stop.set()
    thread.join(timeout=10)
    assert (dash.bar.value, dash.bar.bar_style) == (1000, "success")
    assert "1,000 / 1,000 (100.0%)" in dash.html.value


def test_import_batchkit_does_not_import_renderers():
    """import batchkit loads neither ipywidgets nor matplotlib nor tqdm."""
    code = ("import sys, batchkit, batchkit._dashboard, batchkit._progress, "
            "batchkit._charts.run\n"
            "print(sorted(m for m in ('ipywidgets', 'matplotlib', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
