"""Alerts: thresholds on a run's live figures, raised once when a metric crosses them.

``Thresholds`` is a policy value (validated when made); ``AlertMonitor`` reads a
``LiveStats`` on every ``check`` and returns only the alerts that are *new*: a
metric fires when it enters a level (``warning``, or escalates to ``critical``),
not on every check while it stays there. Once it falls back below a level it may
fire again when it re-crosses it.

The defaults are the lead-enrichment scenario's (docs: SCENARIOS.md):

==============  ==========================  ===========================
metric          warning                     critical
==============  ==========================  ===========================
failure rate    above 5%                    above 15%
throughput      below 30 items/min (opt-in) below 15 items/min (opt-in)
cost per item   above $0.15                 above $0.25
ETA             finish past 80% of deadline finish past the deadline
==============  ==========================  ===========================
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError

if TYPE_CHECKING:
    from ._live import LiveStats

__all__ = ["LEVELS", "METRICS", "Alert", "AlertMonitor", "Thresholds"]

#: alert levels, mildest first
LEVELS = ("warning", "critical")
#: the metrics alerts watch
METRICS = ("failure_rate", "throughput", "cost_per_item", "eta")

_RANK = {None: 0, "warning": 1, "critical": 2}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Thresholds:
    """When a run's figures raise an alert. Any threshold may be ``None`` (not watched).

    "Above" and "below" are strict: a failure rate of exactly 5% does not cross a
    5% threshold.

    Args:
        failure_rate_warn: failed share of the rows ended (0..1) above which to warn.
        failure_rate_critical: ... above which the run is critical.
        throughput_warn: items/min over the last minute below which to warn.
            ``None`` by default: most batches have no natural floor. The
            lead-enrichment scenario uses 30 (warning) and 15 (critical).
        throughput_critical: items/min below which the run is critical.
        cost_per_item_warn: USD per row ended above which to warn (only runs that
            count a cost can cross it; plain functions cost 0).
        cost_per_item_critical: USD per row above which the run is critical.
        eta_warn: share of the run's deadline: warn when the projected finish
            (elapsed + ETA) is past ``eta_warn * deadline``. Only runs with a
            deadline are judged.
        eta_critical: share of the deadline past which the run is critical.
        min_items: rows that must have ended (or all rows of a smaller run) before
            failure rate, cost per item and the ETA projection are judged, so one
            early failure does not fire a critical alert.
        throughput_after_s: seconds of run time before throughput is judged (the
            first minute's rate says more about start-up than about the run).

    Example:
        >>> Thresholds().failure_rate_critical
        0.15
        >>> lead = Thresholds(throughput_warn=30, throughput_critical=15)  # the scenario's floor
        >>> Thresholds(failure_rate_warn=0.2, failure_rate_critical=0.1)
        Traceback (most recent call last):
        ...
        batchkit._errors.ConfigError: failure_rate_warn 0.2 is above failure_rate_critical 0.1; ...
    """

    failure_rate_warn: float | None = 0.05
    failure_rate_critical: float | None = 0.15
    throughput_warn: float | None = None
    throughput_critical: float | None = None
    cost_per_item_warn: float | None = 0.15
    cost_per_item_critical: float | None = 0.25
    eta_warn: float | None = 0.8
    eta_critical: float | None = 1.0
    min_items: int = 20
    throughput_after_s: float = 60.0

    def __post_init__(self) -> None:
        for metric in ("failure_rate", "throughput", "cost_per_item", "eta"):
            for level in ("warn", "critical"):
                name = f"{metric}_{level}"
                value = getattr(self, name)
                if value is None:
                    continue
                if not _is_number(value) or not math.isfinite(value) or value < 0:
                    raise ConfigError(
                        f"{name} must be a number >= 0 or None (not watched), got {value!r}")
            warn = getattr(self, f"{metric}_warn")
            critical = getattr(self, f"{metric}_critical")
            if metric == "failure_rate":
                for name, value in (("failure_rate_warn", warn),
                                    ("failure_rate_critical", critical)):
                    if value is not None and value > 1:
                        raise ConfigError(
                            f"{name} is a share between 0 and 1, got {value!r}; "
                            f"write {value / 100:g} for {value:g}%")
            if metric == "eta":
                for name, value in (("eta_warn", warn), ("eta_critical", critical)):
                    if value is not None and value == 0:
                        raise ConfigError(
                            f"{name} is a share of the deadline and must be above 0, got 0; "
                            "use 0.8 for 80% of the deadline")
            if warn is None or critical is None:
                continue
            if metric == "throughput" and warn < critical:
                raise ConfigError(
                    f"throughput_warn {warn!r} is below throughput_critical {critical!r}; "
                    "throughput thresholds are floors, so the warning floor must be the "
                    "higher one (e.g. warn 30, critical 15 items/min)")
            if metric != "throughput" and warn > critical:
                raise ConfigError(
                    f"{metric}_warn {warn!r} is above {metric}_critical {critical!r}; "
                    "the warning threshold must not be above the critical one")
        if (isinstance(self.min_items, bool) or not isinstance(self.min_items, int)
                or self.min_items < 0):
            raise ConfigError(f"min_items must be a whole number >= 0, got {self.min_items!r}")
        if (not _is_number(self.throughput_after_s) or not math.isfinite(self.throughput_after_s)
                or self.throughput_after_s < 0):
            raise ConfigError(
                f"throughput_after_s must be seconds >= 0, got {self.throughput_after_s!r}")


@dataclass(frozen=True)
class Alert:
    """One alert: a metric entered a level.

    Attributes:
        level: ``"warning"`` or ``"critical"``.
        metric: ``"failure_rate"``, ``"throughput"``, ``"cost_per_item"`` or ``"eta"``.
        message: a sentence with the numbers.
        value: the metric's value (a share, items/min, USD, or for ``eta`` the
            projected finish in seconds after the start).
        threshold: the threshold it crossed, in the same unit (for ``eta``, seconds
            after the start: share times deadline).
        at: epoch seconds of the figures that raised it.

    Example:
        >>> a = Alert("warning", "failure_rate", "failure rate 6% is above ...", 0.06, 0.05, 0.0)
        >>> a.to_dict()["level"]
        'warning'
    """

    level: str
    metric: str
    message: str
    value: float
    threshold: float
    at: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return asdict(self)


def _pct(share: float) -> str:
    return f"{share * 100:.1f}".rstrip("0").rstrip(".") + "%"


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _usd(value: float) -> str:
    return f"${value:.2f}" if value >= 0.1 or value == 0 else f"${value:.3g}"


def _dur(seconds: float) -> str:
    if seconds < 120:
        return f"{_num(seconds)} s"
    if seconds < 7200:
        return f"{_num(seconds / 60)} min"
    return f"{_num(seconds / 3600)} h"


class AlertMonitor:
    """Watches a run's ``LiveStats`` and raises each alert once, when its level is entered.

    The runner calls ``check(stats)`` after each update. Every new alert is logged
    (``logging.WARNING`` for a warning, ``logging.ERROR`` for a critical one) and
    passed to ``on_alert``; an exception in the callback is logged, never raised.
    A metric that drops back (critical to warning, or below both) raises nothing,
    and fires again when it re-crosses. Throughput is judged on the last minute's
    rate (``stats.items_per_min_recent``) and only after
    ``thresholds.throughput_after_s`` (60 s) of run time.

    Args:
        thresholds: the thresholds (default ``Thresholds()``).
        on_alert: called with each new ``Alert``.
        log: where alerts are logged.

    Example:
        >>> from batchkit._live import LiveStats
        >>> monitor = AlertMonitor(Thresholds())
        >>> stats = LiveStats("b", "r1", started_at=0.0, now=60.0, total=500, done=170,
        ...                   failed=30)
        >>> [a.message for a in monitor.check(stats)]
        ['failure rate 15% is above the warning threshold 5% (30 of 200 rows)']
        >>> monitor.check(stats), monitor.critical
        ([], False)
    """

    def __init__(self, thresholds: Thresholds | None = None, *,
                 on_alert: Callable[[Alert], object] | None = None,
                 log: logging.Logger | None = None) -> None:
        if thresholds is None:
            thresholds = Thresholds()
        if not isinstance(thresholds, Thresholds):
            raise ConfigError(
                f"thresholds must be a batchkit Thresholds value, got {thresholds!r}")
        if on_alert is not None and not callable(on_alert):
            raise ConfigError(f"on_alert must be callable, got {on_alert!r}")
        self.thresholds = thresholds
        self.on_alert = on_alert
        self.log = log if log is not None else logging.getLogger("batchkit")
        self._levels: dict[str, str | None] = dict.fromkeys(METRICS)
        self._alerts: tuple[Alert, ...] = ()
        self._lock = threading.Lock()

    @property
    def alerts(self) -> tuple[Alert, ...]:
        """Every alert raised so far, oldest first."""
        return self._alerts

    @property
    def critical(self) -> bool:
        """Whether any metric is at the critical level now (what ``halt_on="critical"`` reads)."""
        return any(level == "critical" for level in self._levels.values())

    @property
    def levels(self) -> dict[str, str | None]:
        """The current level of each metric (``None`` when fine or not judged yet)."""
        return dict(self._levels)

    def check(self, stats: LiveStats) -> list[Alert]:
        """Judge ``stats`` and return the alerts that are new since the last check."""
        new: list[Alert] = []
        with self._lock:
            for metric, judged in (
                ("failure_rate", self._failure_rate(stats)),
                ("throughput", self._throughput(stats)),
                ("cost_per_item", self._cost_per_item(stats)),
                ("eta", self._eta(stats)),
            ):
                if judged is None:  # not judged this time: keep the level it had
                    continue
                level, alert = judged
                before = self._levels[metric]
                self._levels[metric] = level
                if _RANK[level] > _RANK[before] and alert is not None:
                    new.append(alert)
                elif _RANK[level] < _RANK[before]:
                    self.log.info("batch %r: %s back %s", stats.batch, metric.replace("_", " "),
                                  "to warning" if level else "to normal")
            self._alerts = (*self._alerts, *new)
        for alert in new:
            self.log.log(logging.ERROR if alert.level == "critical" else logging.WARNING,
                         "batch %r: %s alert: %s", stats.batch, alert.level, alert.message)
            if self.on_alert is not None:
                try:
                    self.on_alert(alert)
                except Exception:
                    self.log.exception("batch %r: the on_alert callback raised on %s alert "
                                       "%r; the run goes on", stats.batch, alert.level,
                                       alert.metric)
        return new

    # -- one judge per metric: None (not judged) or (level, alert for that level) -------

    def _enough(self, stats: LiveStats) -> bool:
        need = self.thresholds.min_items
        if stats.total:
            need = min(need, stats.total)
        return stats.ended >= max(1, need)

    def _above(self, metric: str, value: float, at: float,
               describe: Callable[[str, float], str]) -> tuple[str | None, Alert | None]:
        for level, suffix in (("critical", "critical"), ("warning", "warn")):
            threshold = getattr(self.thresholds, f"{metric}_{suffix}")
            if threshold is not None and value > threshold:
                return level, Alert(level, metric, describe(level, threshold), value,
                                    threshold, at)
        return None, None

    def _failure_rate(self, stats: LiveStats) -> tuple[str | None, Alert | None] | None:
        if not self._enough(stats):
            return None
        rate = stats.failure_rate
        return self._above("failure_rate", rate, stats.now, lambda level, t: (
            f"failure rate {_pct(rate)} is above the {level} threshold {_pct(t)} "
            f"({stats.failed} of {stats.ended} rows)"))

    def _cost_per_item(self, stats: LiveStats) -> tuple[str | None, Alert | None] | None:
        per = stats.cost_per_item
        if per is None or not self._enough(stats):
            return None
        return self._above("cost_per_item", per, stats.now, lambda level, t: (
            f"cost per item {_usd(per)} is above the {level} threshold {_usd(t)} "
            f"({_usd(stats.cost_usd)} for {stats.ended} rows)"))

    def _throughput(self, stats: LiveStats) -> tuple[str | None, Alert | None] | None:
        t = self.thresholds
        if t.throughput_warn is None and t.throughput_critical is None:
            return None
        if stats.elapsed_s < t.throughput_after_s or stats.ended >= stats.total:
            return None  # too early to say, or nothing left to go fast on
        rate = stats.items_per_min_recent
        for level, threshold in (("critical", t.throughput_critical),
                                 ("warning", t.throughput_warn)):
            if threshold is not None and rate < threshold:
                message = (f"throughput {_num(rate)} items/min over the last minute is below "
                           f"the {level} floor {_num(threshold)} items/min")
                return level, Alert(level, "throughput", message, rate, threshold, stats.now)
        return None, None

    def _eta(self, stats: LiveStats) -> tuple[str | None, Alert | None] | None:
        deadline = stats.deadline_s
        if deadline is None or deadline <= 0:
            return None
        elapsed, eta = stats.elapsed_s, stats.eta_s
        if eta is None or not self._enough(stats):
            # no projection yet: only the time already spent can be past a threshold
            projected, left = elapsed, None
        else:
            projected, left = elapsed + eta, eta
        for level, suffix in (("critical", "critical"), ("warning", "warn")):
            share = getattr(self.thresholds, f"eta_{suffix}")
            if share is None or not projected > share * deadline:
                continue
            limit = share * deadline
            where = (f"the deadline ({_dur(deadline)})" if share == 1 else
                     f"{_pct(share)} of the deadline ({_dur(limit)} of {_dur(deadline)})")
            if left is None:
                message = f"{_dur(elapsed)} elapsed is already past {where}"
            else:
                message = (f"projected finish {_dur(projected)} after the start "
                           f"({_dur(elapsed)} elapsed + ETA {_dur(left)}) is past {where}")
            return level, Alert(level, "eta", message, projected, limit, stats.now)
        return None, None
