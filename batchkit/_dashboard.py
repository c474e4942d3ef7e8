"""The notebook dashboard: a progress bar and a panel of live figures (ipywidgets).

This module is the only importer of ipywidgets, and it imports it lazily, so
``import batchkit`` works without it. The dashboard is an observer: the runner
calls ``update(stats)`` while the run goes on and ``close(stats)`` once at the end;
the dashboard only renders the ``LiveStats`` it is handed.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

from ._live import LiveStats

__all__ = ["CSS_CLASS", "Dashboard"]

#: the CSS class of the dashboard's outer box in the notebook's page
CSS_CLASS = "batchkit-dashboard"

#: bar style per run state: green when completed, red on a crash or a halt,
#: orange when stopped on purpose (Ctrl-C, ``stop()``, the budget) with rows left.
_BAR_STYLE = {"running": "", "completed": "success", "halted": "danger", "died": "danger",
              "interrupted": "warning", "budget": "warning"}
_COLOUR = {"": "blue", "success": "green", "danger": "red", "warning": "orange"}
_ALERT_COLOUR = {"warning": "#b36b00", "critical": "#c62828"}
_MAX_ALERTS = 8  # alerts listed in the panel (the newest); older ones are counted


class Dashboard:
    """A live ipywidgets dashboard of one run: a progress bar over a panel of figures.

    The bar counts rows that ended (done or failed) plus rows finished inside chunks
    not yet committed (``stats.in_chunk_done``), so it moves as single rows finish;
    the panel's counts are committed figures only. The bar is blue while running,
    green when the run completed, red when it died or was halted by a failure
    policy, orange when it was interrupted or stopped by its budget.

    Redraws are throttled to one per ``min_interval_s`` (a quarter second by
    default); the figures of a throttled update are drawn by the next update, and
    ``close`` always draws. Call ``update``/``close`` from the thread that owns the
    stats (the runner's); the widgets may be on screen in a notebook meanwhile.

    Args:
        batch: the batch name, shown beside the bar.
        display: show the dashboard in the notebook now when running in a Jupyter
            kernel (nothing happens outside one). False for tests.
        min_interval_s: the shortest time between two redraws.
        clock: a monotonic clock for the throttle (seconds); ``time.monotonic``.

    Attributes:
        bar: the ``ipywidgets.IntProgress`` (``value``, ``max``, ``bar_style``).
        html: the ``ipywidgets.HTML`` panel of figures and alerts.
        widget: the ``ipywidgets.VBox`` holding both (what a notebook displays); it has
            the CSS class ``batchkit-dashboard``.

    Example:
        >>> from batchkit._live import LiveStats
        >>> dash = Dashboard("demo", display=False)
        >>> s = LiveStats("demo", "r1", started_at=0.0, now=60.0, total=10, done=9, failed=1)
        >>> s.state = "completed"
        >>> dash.close(s)
        >>> dash.bar.value, dash.bar.max, dash.state()["colour"]
        (10, 10, 'green')
    """

    def __init__(self, batch: str = "", *, display: bool = True, min_interval_s: float = 0.25,
                 clock: Callable[[], float] | None = None) -> None:
        import ipywidgets as widgets

        self.batch = batch
        self.min_interval_s = min_interval_s
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._last_draw: float | None = None
        self._latest: LiveStats | None = None
        self._closed = False
        self.draws = 0
        self.bar = widgets.IntProgress(value=0, min=0, max=1, bar_style="",
                                       description=batch, layout=widgets.Layout(width="100%"))
        self.html = widgets.HTML(value=_panel(None))
        self.widget = widgets.VBox([self.bar, self.html])
        self.widget.add_class(CSS_CLASS)  # a stable hook for styling and browser checks
        if display and _in_kernel():
            self.display()

    def display(self) -> None:
        """Show the dashboard in the current notebook cell's output."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self) -> None:
        self.display()

    def update(self, stats: LiveStats) -> None:
        """Render ``stats`` unless the last redraw is under ``min_interval_s`` old."""
        with self._lock:
            if self._closed:
                return
            self._latest = stats
            now = self._clock()
            if self._last_draw is not None and now - self._last_draw < self.min_interval_s:
                return
            self._last_draw = now
            self._draw(stats)

    def close(self, stats: LiveStats) -> None:
        """Render the final ``stats`` (always, whatever the throttle) and stop updating."""
        with self._lock:
            self._latest = stats
            self._last_draw = self._clock()
            self._draw(stats)
            self._closed = True

    def state(self) -> dict[str, Any]:
        """The figures last rendered, as plain data (for tests and headless checks)."""
        with self._lock:
            s = self._latest
            style = self.bar.bar_style
            return {
                "state": s.state if s else None,
                "done": s.done if s else 0,
                "failed": s.failed if s else 0,
                "retried": s.retried if s else 0,
                "ended": s.ended if s else 0,
                "total": s.total if s else 0,
                "cost_usd": s.cost_usd if s else 0.0,
                "budget_usd": s.budget_usd if s else None,
                "alerts": [_alert_message(a) for a in s.alerts] if s else [],
                "value": self.bar.value,
                "max": self.bar.max,
                "bar_style": style,
                "colour": _COLOUR.get(style, "blue"),
                "closed": self._closed,
                "draws": self.draws,
            }

    def _draw(self, s: LiveStats) -> None:
        style = _BAR_STYLE.get(s.state, "danger")
        if s.total > 0:
            high = s.total
            value = min(high, s.ended + (s.in_chunk_done if s.state == "running" else 0))
        else:  # an empty run: a full bar once it completed
            high, value = 1, int(s.state == "completed")
        self.bar.max = high
        self.bar.value = value
        self.bar.bar_style = style
        self.bar.description = self.batch or s.batch
        self.html.value = _panel(s)
        self.draws += 1


# -- the panel ---------------------------------------------------------------------------


def _panel(s: LiveStats | None) -> str:
    """The HTML of the figures panel (a table of labelled rows, then the alerts)."""
    if s is None:
        return "<div style='font-family:monospace'>waiting for the run to start…</div>"
    ended = s.ended
    pct = 100.0 * s.fraction
    progress = f"{ended:,} / {s.total:,} ({pct:.1f}%)"
    if s.in_chunk_done and s.state == "running":
        progress += f" · +{s.in_chunk_done:,} finished in open chunks"
    state = html.escape(s.state)
    if s.halt_reason:
        state += f": {html.escape(s.halt_reason)}"
    rows = [
        ("state", state),
        ("progress", progress),
        ("speed", f"{s.items_per_min:,.1f} items/min · last minute "
                  f"{s.items_per_min_recent:,.1f} items/min"),
        ("time", f"elapsed {_duration(s.elapsed_s)} · ETA {_duration(s.eta_s)}"
                 + _deadline(s)),
        ("chunks", f"{s.chunks_done:,} done · {s.chunks_running:,} running · "
                   f"{s.chunks_pending:,} pending"),
        ("workers", f"{s.workers_active} active / {s.workers}"),
        ("outcomes", f"succeeded {s.done:,} ({_share(s.done, ended)}) · "
                     f"failed {s.failed:,} ({_share(s.failed, ended)}) · "
                     f"retried {s.retried:,} ({_share(s.retried, ended)})"),
        ("cost", f"{_usd(s.cost_usd)} so far · "
                 f"{'-' if s.cost_per_item is None else _usd(s.cost_per_item)} per item"),
    ]
    if s.budget_usd is not None:
        budget = (f"{_usd(s.cost_usd)} of {_usd(s.budget_usd)} "
                  f"({_share(s.cost_usd, s.budget_usd)})")
        projected = s.projected_cost_usd
        if projected is not None:
            text = f"projected {_usd(projected)}"
            if projected > s.budget_usd:
                text = f"<span style='color:#c62828'>{text} (over budget)</span>"
            budget += f" · {text}"
        rows.append(("budget", budget))
    cells = "".join(f"<tr><td style='padding:0 1em 0 0;color:#666'>{k}</td>"
                    f"<td style='padding:0'>{v}</td></tr>" for k, v in rows)
    out = f"<div style='font-family:monospace'><table>{cells}</table>"
    if s.alerts:
        shown = s.alerts[-_MAX_ALERTS:]
        items = "".join(_alert_html(a) for a in shown)
        more = len(s.alerts) - len(shown)
        if more:
            items += f"<li>… and {more} earlier</li>"
        out += f"<div>alerts ({len(s.alerts)}):</div><ul style='margin:0'>{items}</ul>"
    return out + "</div>"


def _alert_level(alert: Any) -> str:
    return str(getattr(alert, "level", "warning"))


def _alert_message(alert: Any) -> str:
    return str(getattr(alert, "message", alert))


def _alert_html(alert: Any) -> str:
    level = _alert_level(alert)
    colour = _ALERT_COLOUR.get(level, "#b36b00")
    return (f"<li style='color:{colour}'><b>{html.escape(level)}</b>: "
            f"{html.escape(_alert_message(alert))}</li>")


def _deadline(s: LiveStats) -> str:
    """`` · deadline in 1h 02m`` (or ``passed``); empty without a deadline."""
    if s.deadline_s is None:
        return ""
    left = s.deadline_s - s.elapsed_s
    return f" · deadline in {_duration(left)}" if left > 0 else " · deadline passed"


def _share(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _usd(x: float) -> str:
    """Dollars: cents above a dollar, up to four decimals below (``$0.07``, ``$0.0012``)."""
    if abs(x) >= 1:
        return f"${x:,.2f}"
    text = f"{x:.4f}".rstrip("0")
    if len(text.split(".")[1]) < 2:
        text = f"{x:.2f}"
    return f"${text}"


def _duration(seconds: float | None) -> str:
    """``-`` for unknown, else ``42s``, ``3m 05s`` or ``2h 04m``."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (where widgets can be shown)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
