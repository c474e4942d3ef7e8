"""What-if charts of a plan: time and cost vs volume and vs workers, deadline and budget lines."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from batchkit._charts.plan import plot_cost_time
from batchkit._errors import ConfigError
from batchkit._plan import StepProfile, project

STEPS = [StepProfile("extract", latency=24.0, cost=0.1),
         StepProfile("contacts", calls=2, latency=3.0, cost=0.02, rate_limit="50/min")]


def lines(ax) -> dict:
    """An axes' lines by label."""
    return {line.get_label(): line for line in ax.get_lines()}


def test_four_axes_with_titles_and_labels():
    """Time and cost, each against volume and against workers, with labelled axes."""
    proj = project(STEPS, volume=500, workers=5, deadline="8h", budget=100)
    fig = plot_cost_time(proj)
    assert [ax.get_title() for ax in fig.axes] == [
        "Time vs volume (5 workers)", "Time vs workers (500 items)", "Cost vs volume",
        "Cost vs workers (500 items)"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["items", "workers", "items", "workers"]
    assert [ax.get_ylabel() for ax in fig.axes] == ["time (h)", "time (h)", "cost (USD)",
                                                    "cost (USD)"]
    assert "bottleneck" in fig.get_suptitle()
    fig.savefig(io.BytesIO(), format="png")  # renders without a display


def test_deadline_budget_and_plan_lines_carry_the_projection_figures():
    """Deadline and budget are horizontal lines at their values; 'this plan' marks the plan."""
    proj = project(STEPS, volume=500, workers=5, deadline="8h", budget=100)
    t_vol, t_wk, c_vol, c_wk = plot_cost_time(proj).axes
    assert set(lines(t_vol)) == {"time", "time (p95)", "this plan", "deadline"}
    assert set(lines(t_wk)) == {"time", "time (p95)", "this plan", "deadline",
                                "limit binds"}
    assert set(lines(c_vol)) == set(lines(c_wk)) == {"cost", "this plan", "budget"}
    assert list(lines(t_vol)["deadline"].get_ydata()) == [8.0, 8.0]
    assert list(lines(c_vol)["budget"].get_ydata()) == [100.0, 100.0]
    assert list(lines(t_vol)["this plan"].get_ydata()) == [pytest.approx(proj.seconds / 3600)]
    assert list(lines(c_wk)["this plan"].get_ydata()) == [pytest.approx(proj.cost)]
    # from 3 workers the contact search waits on its 50/min (6 s of calls ÷ 2.4 s)
    assert list(lines(t_wk)["limit binds"].get_xdata()) == [3, 3]  # saturation_workers


def test_curves_follow_the_projection_at_each_point():
    """Each point of the time and cost curves is the projection at that volume or worker count."""
    proj = project(STEPS, volume=500, workers=5, deadline="8h")
    t_vol, t_wk, c_vol, _ = plot_cost_time(proj, volumes=[100, 1000, 4000],
                                           workers=[1, 5, 20]).axes
    time = lines(t_vol)["time"]
    assert list(time.get_xdata()) == [100, 1000, 4000]
    assert list(time.get_ydata()) == [pytest.approx(proj.at(volume=v).seconds / 3600)
                                      for v in (100, 1000, 4000)]
    by_workers = lines(t_wk)["time"]
    assert list(by_workers.get_ydata()) == [pytest.approx(proj.at(workers=w).seconds / 3600)
                                            for w in (1, 5, 20)]
    # 20 workers: extract 24 s ÷ 20 plus contacts at 50/min (2.4 s), one after the other
    assert by_workers.get_ydata()[-1] == pytest.approx(500 * (24 / 20 + 2.4) / 3600)
    assert list(lines(c_vol)["cost"].get_ydata()) == [pytest.approx(0.12 * v)
                                                      for v in (100, 1000, 4000)]


def test_without_deadline_or_budget_there_are_no_such_lines():
    """A projection without deadline or budget draws neither line; time in fitting units."""
    proj = project([StepProfile("a", latency=1.0, cost=0.01)], volume=60, workers=2)
    t_vol, t_wk, c_vol, _ = plot_cost_time(proj).axes
    assert "deadline" not in lines(t_vol) and "budget" not in lines(c_vol)
    assert "limit binds" not in lines(t_wk)  # no rate or concurrency limit
    assert t_vol.get_ylabel() == "time (min)"  # 600 items at 2 workers: 5 min


def test_default_ranges_include_the_plan():
    """By default volumes span a quarter to ten times the plan; workers reach past saturation."""
    proj = project(STEPS, volume=500, workers=5)
    t_vol, t_wk, _, _ = plot_cost_time(proj).axes
    volumes = list(lines(t_vol)["time"].get_xdata())
    assert volumes[0] == 125 and volumes[-1] == 5000 and 500 in volumes
    workers = list(lines(t_wk)["time"].get_xdata())
    assert workers[0] == 1 and workers[-1] == 10 and 5 in workers  # twice the plan's 5


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"volumes": []}, "volumes"), ({"volumes": [0, 10]}, "volumes"),
    ({"workers": [1.5]}, "workers"), ({"workers": "5"}, "workers"),
])
def test_bad_ranges_are_refused(kwargs, match):
    """Volumes and workers must be whole numbers >= 1."""
    proj = project(STEPS, volume=500, workers=5)
    with pytest.raises(ConfigError, match=match):
        plot_cost_time(proj, **kwargs)


def test_projection_plot_draws_the_same_figure():
    """Projection.plot() is the public way to the what-if charts, with the same options."""
    proj = project(STEPS, volume=500, workers=5, deadline="8h", budget=100)
    fig = proj.plot(volumes=[100, 500], workers=[1, 5])
    t_vol, t_wk, c_vol, _ = fig.axes
    assert [ax.get_title() for ax in fig.axes] == [ax.get_title() for ax in
                                                   plot_cost_time(proj).axes]
    assert list(lines(t_vol)["time"].get_xdata()) == [100, 500]
    assert list(lines(t_wk)["time"].get_xdata()) == [1, 5]
    assert list(lines(c_vol)["budget"].get_ydata()) == [100.0, 100.0]


def test_needs_a_projection():
    """Anything but a Projection is refused with a ConfigError."""
    with pytest.raises(ConfigError, match="Projection"):
        plot_cost_time({"volume": 5})  # type: ignore[arg-type]


def test_plotting_leaves_pyplot_alone():
    """Figures are made without pyplot: nothing registered, nothing to close."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_cost_time(project(STEPS, volume=500, workers=5))
    assert plt.get_fignums() == before


def test_matplotlib_is_imported_only_when_plotting():
    """Importing the plan and chart modules does not import matplotlib."""
    code = ("import sys, batchkit._plan, batchkit._charts.plan, batchkit._calibrate; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
