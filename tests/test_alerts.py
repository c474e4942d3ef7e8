"""Alerts: thresholds validated when made, alerts raised once per level entered, at exact edges."""

from __future__ import annotations

import logging

import pytest

import batchkit as bk
from batchkit._alerts import Alert, AlertMonitor, Thresholds
from batchkit._live import LiveStats

T0 = 1_700_000_000.0


def stats(*, done: int = 0, failed: int = 0, total: int = 1000, elapsed: float = 60.0,
          cost: float = 0.0, deadline: float | None = None) -> LiveStats:
    """Hand-built figures of a run that started at T0 and is ``elapsed`` seconds in."""
    return LiveStats("leads", "r1", started_at=T0, now=T0 + elapsed, total=total, done=done,
                     failed=failed, cost_usd=cost, deadline_s=deadline)


class Run:
    """One run's LiveStats moved through time: cumulative rows ended at each moment."""

    def __init__(self, total: int = 10_000, deadline: float | None = None) -> None:
        self.stats = LiveStats("leads", "r1", started_at=T0, now=T0, total=total,
                               deadline_s=deadline)
        self.stats.sample(T0)

    def at(self, elapsed: float, *, done: int, failed: int = 0,
           cost: float | None = None) -> LiveStats:
        self.stats.done, self.stats.failed = done, failed
        if cost is not None:
            self.stats.cost_usd = cost
        self.stats.sample(T0 + elapsed)
        return self.stats


def levels(alerts: list[Alert]) -> list[tuple[str, str]]:
    return [(a.metric, a.level) for a in alerts]


# -- thresholds ------------------------------------------------------------------------------


def test_defaults_are_the_lead_enrichment_scenario():
    """Defaults: failure 5%/15%, cost $0.15/$0.25, ETA 80%/100%, no throughput floor, 20 rows."""
    t = Thresholds()
    assert (t.failure_rate_warn, t.failure_rate_critical) == (0.05, 0.15)
    assert (t.cost_per_item_warn, t.cost_per_item_critical) == (0.15, 0.25)
    assert (t.eta_warn, t.eta_critical) == (0.8, 1.0)
    assert (t.throughput_warn, t.throughput_critical) == (None, None)
    assert t.min_items == 20 and t.throughput_after_s == 60.0


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"failure_rate_warn": -0.1}, ["failure_rate_warn", "-0.1"]),
    ({"cost_per_item_critical": float("nan")}, ["cost_per_item_critical", "nan"]),
    ({"throughput_warn": "30/min"}, ["throughput_warn", "'30/min'"]),
    ({"eta_warn": True}, ["eta_warn", "True"]),
    ({"failure_rate_critical": 15}, ["failure_rate_critical", "0.15"]),
    ({"failure_rate_warn": 0.2, "failure_rate_critical": 0.1},
     ["failure_rate_warn 0.2", "failure_rate_critical 0.1"]),
    ({"cost_per_item_warn": 0.3}, ["cost_per_item_warn 0.3", "cost_per_item_critical 0.25"]),
    ({"eta_warn": 1.2}, ["eta_warn 1.2", "eta_critical 1.0"]),
    ({"eta_critical": 0}, ["eta_critical", "0.8"]),
    ({"throughput_warn": 10, "throughput_critical": 20},
     ["throughput_warn 10", "throughput_critical 20", "floors"]),
    ({"min_items": -1}, ["min_items", "-1"]),
    ({"min_items": 2.5}, ["min_items", "2.5"]),
    ({"throughput_after_s": -5}, ["throughput_after_s", "-5"]),
])
def test_bad_thresholds_fail_when_made_naming_the_value(kwargs, names):
    """A bad threshold raises ConfigError (a ValueError) naming the setting and its value."""
    with pytest.raises(bk.ConfigError) as info:
        Thresholds(**kwargs)
    assert isinstance(info.value, ValueError)
    for name in names:
        assert name in str(info.value)


def test_one_sided_and_unwatched_thresholds_are_valid():
    """A level may be None (unwatched); warn equal to critical is allowed."""
    t = Thresholds(failure_rate_warn=None, cost_per_item_warn=0.25, throughput_critical=15,
                   eta_warn=None, eta_critical=None, min_items=0)
    assert t.failure_rate_warn is None and t.throughput_warn is None


def test_monitor_rejects_a_non_thresholds_value():
    """AlertMonitor takes a Thresholds value (a dict is refused, naming it)."""
    with pytest.raises(bk.ConfigError, match="failure_rate_warn"):
        AlertMonitor({"failure_rate_warn": 0.1})  # type: ignore[arg-type]
    with pytest.raises(bk.ConfigError, match="on_alert"):
        AlertMonitor(Thresholds(), on_alert="print")  # type: ignore[arg-type]


# -- failure rate ----------------------------------------------------------------------------


def test_failure_rate_fires_strictly_above_each_threshold():
    """Exactly 5% raises nothing, above it a warning; exactly 15% no critical, above it one."""
    m = AlertMonitor(Thresholds())
    assert m.check(stats(done=190, failed=10)) == []  # 10/200 = 5%
    new = m.check(stats(done=189, failed=11))  # 5.5%
    assert levels(new) == [("failure_rate", "warning")]
    assert (new[0].value, new[0].threshold) == (0.055, 0.05)
    assert m.check(stats(done=170, failed=30)) == []  # 15% exactly: still a warning
    assert not m.critical
    new = m.check(stats(done=166, failed=34))
    assert levels(new) == [("failure_rate", "critical")]
    assert new[0].message == ("failure rate 17% is above the critical threshold 15% "
                              "(34 of 200 rows)")
    assert m.critical


def test_failure_rate_state_machine_warn_critical_recovered_warn():
    """An alert fires on entering a level only; after recovering, re-crossing fires again."""
    m = AlertMonitor(Thresholds())
    seen = []
    for failed, ended in [(12, 200), (13, 200), (40, 200), (45, 200),   # warn, -, crit, -
                          (20, 400), (10, 400),                       # back to warn, normal
                          (30, 400), (31, 400),                       # warn again, -
                          (100, 400), (30, 600), (100, 600)]:         # crit, warn, crit
        seen.append(levels(m.check(stats(done=ended - failed, failed=failed))))
        if (failed, ended) == (10, 400):
            assert not m.critical and m.levels["failure_rate"] is None
    assert seen == [[("failure_rate", "warning")], [], [("failure_rate", "critical")], [],
                    [], [],
                    [("failure_rate", "warning")], [],
                    [("failure_rate", "critical")], [], [("failure_rate", "critical")]]
    assert [a.level for a in m.alerts] == ["warning", "critical", "warning", "critical",
                                           "critical"]
    assert m.critical


def test_jumping_straight_to_critical_raises_one_alert():
    """A metric that goes from fine to critical in one step raises only the critical alert."""
    m = AlertMonitor(Thresholds())
    assert levels(m.check(stats(done=50, failed=50))) == [("failure_rate", "critical")]
    assert len(m.alerts) == 1


def test_min_items_holds_rates_back_until_enough_rows_ended():
    """With min_items=20, 19 failures of 19 rows raise nothing; the 20th row's check does."""
    m = AlertMonitor(Thresholds())
    assert m.check(stats(failed=1)) == []
    assert m.check(stats(failed=19)) == []
    assert levels(m.check(stats(failed=20))) == [("failure_rate", "critical")]


def test_min_items_is_capped_by_a_small_runs_total():
    """A run of 5 rows is judged once all 5 ended (min_items cannot exceed the run)."""
    m = AlertMonitor(Thresholds(min_items=20))
    assert m.check(stats(done=2, failed=2, total=5)) == []
    assert levels(m.check(stats(done=2, failed=3, total=5))) == [("failure_rate", "critical")]


def test_alert_time_comes_from_the_figures():
    """Alert.at is the figures' time (stats.now), so a fake clock rules it."""
    m = AlertMonitor(Thresholds())
    (alert,) = m.check(stats(done=80, failed=20, elapsed=125.0))
    assert alert.at == T0 + 125.0
    assert alert.to_dict() == {"level": "critical", "metric": "failure_rate",
                               "message": alert.message, "value": 0.2, "threshold": 0.15,
                               "at": T0 + 125.0}


# -- throughput ------------------------------------------------------------------------------


def test_throughput_is_not_watched_by_default():
    """With the default thresholds a run doing 0 items/min raises no throughput alert."""
    run = Run()
    m = AlertMonitor(Thresholds())
    assert m.check(run.at(600, done=0)) == []


def test_throughput_judged_on_the_last_minute_after_the_first_minute():
    """Floors 30/15 items/min: nothing before 60 s; then warn below 30, critical below 15."""
    run = Run()
    m = AlertMonitor(Thresholds(throughput_warn=30, throughput_critical=15))
    assert m.check(run.at(30, done=5)) == []          # 10/min, but only 30 s in
    assert m.check(run.at(59, done=9)) == []
    assert m.check(run.at(60, done=30)) == []         # 30/min exactly: not below
    run.at(90, done=45)
    new = m.check(run.at(120, done=59))              # last minute: 29/min
    assert levels(new) == [("throughput", "warning")]
    assert new[0].value == pytest.approx(29.0)
    assert new[0].message == ("throughput 29 items/min over the last minute is below the "
                              "warning floor 30 items/min")
    run.at(150, done=66)
    assert m.check(run.at(180, done=74)) == []        # 15/min exactly: still a warning
    run.at(210, done=80)
    new = m.check(run.at(240, done=88))               # 14/min
    assert levels(new) == [("throughput", "critical")] and m.critical
    run.at(270, done=120)
    assert m.check(run.at(300, done=150)) == []       # 62/min: recovered
    assert not m.critical
    run.at(330, done=160)
    assert levels(m.check(run.at(360, done=170))) == [("throughput", "warning")]  # 20/min
    assert [a.level for a in m.alerts] == ["warning", "critical", "warning"]


def test_throughput_is_not_judged_once_every_row_ended():
    """A run with nothing left to do is not slow: no throughput alert at its end."""
    run = Run(total=20)
    m = AlertMonitor(Thresholds(throughput_warn=30, throughput_critical=15))
    assert m.check(run.at(120, done=20)) == []


def test_throughput_after_s_is_configurable():
    """throughput_after_s=0 judges throughput from the start."""
    run = Run()
    m = AlertMonitor(Thresholds(throughput_critical=15, throughput_after_s=0))
    assert levels(m.check(run.at(10, done=1))) == [("throughput", "critical")]  # 6/min


# -- cost per item ---------------------------------------------------------------------------


def test_cost_per_item_fires_strictly_above_15_and_25_cents():
    """$0.15 per row raises nothing, $0.16 a warning, $0.25 still a warning, $0.26 critical."""
    m = AlertMonitor(Thresholds())
    assert m.check(stats(done=20, cost=3.0)) == []
    new = m.check(stats(done=20, cost=3.2))
    assert levels(new) == [("cost_per_item", "warning")]
    assert new[0].message == ("cost per item $0.16 is above the warning threshold $0.15 "
                              "($3.20 for 20 rows)")
    assert m.check(stats(done=100, cost=25.0)) == []
    new = m.check(stats(done=100, cost=26.0))
    assert levels(new) == [("cost_per_item", "critical")]
    assert (new[0].value, new[0].threshold) == (0.26, 0.25)


def test_cost_per_item_waits_for_min_items_and_ignores_free_runs():
    """One expensive first row raises nothing; a function that costs nothing never alerts."""
    m = AlertMonitor(Thresholds())
    assert m.check(stats(done=1, cost=5.0)) == []
    assert m.check(stats(done=10_000, total=10_000, cost=0.0)) == []


# -- ETA against the deadline ----------------------------------------------------------------


def test_eta_fires_past_80_percent_and_past_the_deadline():
    """8 h deadline at 2 rows/min: finishing at exactly 80% is fine, later warns, past 8 h is
    critical."""
    deadline = 8 * 3600.0
    m = AlertMonitor(Thresholds())
    # 64 min in, 128 rows ended = 2.0 rows/min; 640 left -> ETA 320 min -> finish at 6.4 h
    assert m.check(stats(done=128, total=768, elapsed=3840.0, deadline=deadline)) == []
    new = m.check(stats(done=128, total=769, elapsed=3840.0, deadline=deadline))
    assert levels(new) == [("eta", "warning")]
    assert (new[0].value, new[0].threshold) == (3840.0 + 30 * 641, 0.8 * deadline)
    assert new[0].message == ("projected finish 6.4 h after the start (64 min elapsed + ETA "
                              "5.3 h) is past 80% of the deadline (6.4 h of 8 h)")
    # 128 rows left at 2/min -> 64 min more: 8.0 h exactly, not past
    assert m.check(stats(done=128, total=128 + 832, elapsed=3840.0, deadline=deadline)) == []
    new = m.check(stats(done=128, total=128 + 833, elapsed=3840.0, deadline=deadline))
    assert levels(new) == [("eta", "critical")] and m.critical
    assert new[0].message.endswith("is past the deadline (8 h)")


def test_eta_is_critical_once_the_deadline_passed_even_without_an_eta():
    """Nothing ended yet (no ETA): elapsed time alone past 80% / 100% of the deadline alerts."""
    m = AlertMonitor(Thresholds())
    assert m.check(stats(elapsed=3600.0, deadline=7200.0)) == []
    new = m.check(stats(elapsed=6000.0, deadline=7200.0))
    assert levels(new) == [("eta", "warning")]
    assert new[0].message == ("100 min elapsed is already past 80% of the deadline "
                              "(96 min of 2 h)")
    assert levels(m.check(stats(elapsed=7300.0, deadline=7200.0))) == [("eta", "critical")]


def test_eta_is_not_judged_without_a_deadline():
    """A run with no deadline never raises an ETA alert, however slow."""
    m = AlertMonitor(Thresholds())
    assert m.check(stats(done=1, total=10**6, elapsed=10**6)) == []


# -- logging and the callback ----------------------------------------------------------------


def test_new_alerts_are_logged_warning_or_error(caplog):
    """A warning alert logs at WARNING, a critical one at ERROR, on the batchkit logger."""
    m = AlertMonitor(Thresholds())
    with caplog.at_level(logging.INFO, logger="batchkit"):
        m.check(stats(done=190, failed=11))
        m.check(stats(done=160, failed=40))
        m.check(stats(done=160, failed=40))  # no change: nothing logged
    records = [(r.name, r.levelno) for r in caplog.records]
    assert records == [("batchkit", logging.WARNING), ("batchkit", logging.ERROR)]
    assert "failure rate 20% is above the critical threshold 15%" in caplog.records[1].message


def test_on_alert_gets_each_new_alert_once():
    """on_alert is called once per new alert, with the same Alert values check returns."""
    got: list[Alert] = []
    m = AlertMonitor(Thresholds(), on_alert=got.append)
    first = m.check(stats(done=180, failed=20))
    m.check(stats(done=180, failed=20))
    second = m.check(stats(done=150, failed=50, cost=100.0))
    assert got == first + second == list(m.alerts)
    assert levels(second) == [("failure_rate", "critical"), ("cost_per_item", "critical")]


def test_a_failing_callback_is_logged_and_swallowed(caplog):
    """An exception in on_alert is logged with its traceback and never reaches the run."""
    calls = []

    def broken(alert: Alert) -> None:
        calls.append(alert)
        raise RuntimeError("pager is down")

    m = AlertMonitor(Thresholds(), on_alert=broken)
    with caplog.at_level(logging.WARNING, logger="batchkit"):
        new = m.check(stats(done=100, failed=100))
        later = m.check(stats(done=100, failed=100, cost=60.0))
    assert levels(new) == [("failure_rate", "critical")]
    assert levels(later) == [("cost_per_item", "critical")]
    assert len(calls) == 2
    failures = [r for r in caplog.records if "on_alert callback raised" in r.message]
    assert len(failures) == 2
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None and "pager is down" in str(failures[0].exc_info[1])


def test_custom_logger_is_used(caplog):
    """log= sends the alert lines to the given logger."""
    m = AlertMonitor(Thresholds(), log=logging.getLogger("myapp.alerts"))
    with caplog.at_level(logging.WARNING):
        m.check(stats(done=180, failed=20))
    assert [r.name for r in caplog.records] == ["myapp.alerts"]


def test_alerts_ride_in_live_stats_to_dict():
    """Alerts put on LiveStats.alerts come out of to_dict() as plain dicts."""
    m = AlertMonitor(Thresholds())
    s = stats(done=180, failed=20)
    m.check(s)
    s.alerts = m.alerts
    assert s.to_dict()["alerts"] == [a.to_dict() for a in m.alerts]
    assert s.to_dict()["alerts"][0]["level"] == "warning"
