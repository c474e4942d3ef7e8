"""Charts of runs: figures drawn from hand-built attempt logs, item frames and cluster tables."""

from __future__ import annotations

import pickle
import subprocess
import sys
from datetime import datetime, timedelta

import polars as pl
import pytest

from batchkit._charts.run import (
    NO_DATA,
    plot_cost,
    plot_cost_by_step,
    plot_failures,
    plot_latency,
    plot_progress,
    plot_summary,
)

T0 = datetime(2026, 3, 2, 9, 0, 0)
PNG = b"\x89PNG\r\n\x1a\n"
ATTEMPT_SCHEMA = {
    "_id": pl.Int64, "attempt": pl.Int32, "step": pl.String, "run_id": pl.String,
    "started_at": pl.Datetime("us"), "duration_s": pl.Float64, "outcome": pl.String,
    "error_type": pl.String, "error_message": pl.String, "usd": pl.Float64,
    "tokens": pl.Int64, "calls": pl.Int64, "tries": pl.Int32,
}


def attempt(_id: int, at_s: float, duration_s: float, outcome: str, *, step: str | None = None,
            usd: float = 0.0, attempt: int = 1, error_type: str | None = None) -> dict:
    return {"_id": _id, "attempt": attempt, "step": step, "run_id": "r1",
            "started_at": T0 + timedelta(seconds=at_s), "duration_s": duration_s,
            "outcome": outcome, "error_type": error_type, "error_message": None, "usd": usd,
            "tokens": 0, "calls": 0 if outcome == "cached" else 1, "tries": 1}


def log(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ATTEMPT_SCHEMA)


@pytest.fixture
def attempts() -> pl.DataFrame:
    """Five items of a two-step pipeline; item 3 retried once, item 4 failed for good."""
    rows = []
    #   id, start s, item duration, outcome, cost, attempt
    items = [(1, 0, 1.0, "done", 0.05, 1), (2, 10, 2.0, "done", 0.05, 1),
             (3, 20, 3.0, "retry", 0.02, 1), (3, 70, 4.0, "done", 0.05, 2),
             (4, 30, 5.0, "failed", 0.02, 1), (5, 100, 5.0, "done", 0.05, 1)]
    for _id, at, dur, outcome, usd, n in items:
        rows.append(attempt(_id, at, dur, outcome, usd=usd, attempt=n,
                            error_type="Timeout" if outcome in ("retry", "failed") else None))
        rows.append(attempt(_id, at, dur / 2, "done", step="search", usd=0.02, attempt=n))
        if outcome not in ("retry", "failed"):
            cached = _id == 2
            rows.append(attempt(_id, at + dur / 2, 0.0 if cached else dur / 2,
                                "cached" if cached else "done", step="extract",
                                usd=0.0 if cached else 0.03, attempt=n))
    return log(rows)


@pytest.fixture
def clusters() -> pl.DataFrame:
    """Three failure clusters with counts and shares."""
    return pl.DataFrame({
        "template": ["timeout after <n>s", "bad json at char <n>", "quota of $<n> exceeded"],
        "error_type": ["Timeout", "ValueError", "QuotaError"],
        "step": ["search", None, "extract"],
        "count": [3, 12, 1],
        "share": [0.1875, 0.75, 0.0625],
    })


@pytest.fixture
def items() -> pl.DataFrame:
    """Eight items: four done, one failed, two pending, one running."""
    return pl.DataFrame({
        "_id": list(range(1, 9)),
        "_status": ["done", "done", "done", "failed", "done", "pending", "pending", "running"],
        "_error_type": [None, None, None, "Timeout", None, None, None, None],
        "_step": [None, None, None, "search", None, None, None, None],
    }, schema_overrides={"_error_type": pl.String, "_step": pl.String})


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_progress_counts_items_that_ended(attempts):
    """Ended and done lines step up at each item's end; retries are not ends; total is dashed."""
    fig = plot_progress(attempts, total=8)
    top, bottom = fig.axes
    assert (top.get_title(), top.get_ylabel(), top.get_xlabel()) == ("Progress", "items",
                                                                      "time (UTC)")
    lines = lines_by_label(top)
    assert set(lines) == {"ended (done + failed)", "done", "total 8"}
    assert list(lines["ended (done + failed)"].get_ydata()) == [1, 2, 3, 4, 5]
    # ends at 1 s, 12 s, 35 s (failed), 74 s, 105 s
    assert list(lines["done"].get_ydata()) == [1, 2, 2, 3, 4]
    assert list(lines["total 8"].get_ydata()) == [8, 8]
    assert lines["total 8"].get_linestyle() == "--"
    assert bottom.get_title() == "Throughput"
    assert bottom.get_ylabel() == "items/min"
    assert [p.get_height() for p in bottom.patches] == [3.0, 2.0]  # minute 0: 3, minute 1: 2


def test_throughput_bins_widen_for_long_runs():
    """Past two hours the throughput bins widen so there are at most 120, in items per minute."""
    rows = [attempt(i, i * 60.0, 1.0, "done") for i in range(181)]  # one item a minute, 3 h
    ax = plot_progress(log(rows)).axes[1]
    assert ax.get_title() == "Throughput (2-minute bins)"
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 91
    assert heights[:3] == [1.0, 1.0, 1.0]  # two items per 2-minute bin
    assert heights[-1] == 0.5


def test_cost_is_cumulative_over_all_item_attempts(attempts):
    """The cost line sums every item attempt (retries included); the budget is a red dashed line."""
    ax = plot_cost(attempts, budget=0.5).axes[0]
    assert (ax.get_title(), ax.get_ylabel()) == ("Cumulative cost", "USD")
    lines = lines_by_label(ax)
    assert set(lines) == {r"spent \$0.24", r"budget \$0.50"}
    spent = list(lines[r"spent \$0.24"].get_ydata())
    assert spent == pytest.approx([0.05, 0.10, 0.12, 0.14, 0.19, 0.24])
    assert list(lines[r"budget \$0.50"].get_ydata()) == [0.5, 0.5]
    assert lines[r"budget \$0.50"].get_color() == "#c62828"
    assert ax.get_ylim()[1] >= 0.5  # the budget is on screen


def test_cost_without_budget_has_one_line(attempts):
    """Without a budget only the spent line is drawn."""
    assert len(plot_cost(attempts).axes[0].get_lines()) == 1


def test_cost_by_step_bars(attempts):
    """One bar per step in pipeline order, heights the steps' total cost, labelled in dollars."""
    ax = plot_cost_by_step(attempts).axes[0]
    assert ax.get_title() == "Cost by step"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["search", "extract"]
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.12, 0.09])
    assert texts(ax) == [r"\$0.12", r"\$0.09"]


def test_cost_by_step_of_a_plain_function():
    """Without steps there is one bar for the whole item."""
    ax = plot_cost_by_step(log([attempt(1, 0, 1, "done", usd=2.5),
                                attempt(2, 0, 1, "done", usd=1.0)])).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["(whole item)"]
    assert [p.get_height() for p in ax.patches] == [3.5]
    assert texts(ax) == [r"\$3.50"]


def test_latency_histogram_with_percentile_lines():
    """The histogram counts every item attempt; p50 and p95 lines sit at the linear quantiles."""
    rows = [attempt(i, i, float(i), "done") for i in range(1, 6)]
    rows.append(attempt(9, 0, 100.0, "done", step="search"))  # a step row: not an item
    ax = plot_latency(log(rows)).axes[0]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == (
        "Latency: items", "seconds", "attempts")
    assert sum(p.get_height() for p in ax.patches) == 5
    lines = lines_by_label(ax)
    assert set(lines) == {"p50 3.00 s", "p95 4.80 s"}
    assert lines["p50 3.00 s"].get_xdata()[0] == pytest.approx(3.0)
    assert lines["p95 4.80 s"].get_xdata()[0] == pytest.approx(4.8)


def test_latency_of_a_step_leaves_out_cached_results(attempts):
    """A step's histogram has its called attempts only (cached results made no call)."""
    ax = plot_latency(attempts, step="extract").axes[0]
    assert ax.get_title() == "Latency: step extract"
    assert sum(p.get_height() for p in ax.patches) == 3  # items 1, 3 and 5; item 2 was cached
    assert "p50 2.00 s" in lines_by_label(ax)


def test_failure_clusters_largest_on_top(clusters):
    """Bars are the clusters' counts, largest first and on top, labelled step · type: template."""
    ax = plot_failures(clusters).axes[0]
    assert (ax.get_title(), ax.get_xlabel()) == ("Failure clusters", "rows")
    assert [p.get_width() for p in ax.patches] == [12, 3, 1]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "ValueError: bad json at char <n>", "search · Timeout: timeout after <n>s",
        r"extract · QuotaError: quota of \$<n> exceeded"]
    assert ax.yaxis_inverted()
    assert texts(ax) == ["12 (75%)", "3 (19%)", "1 (6%)"]


def test_failure_clusters_top_n(clusters):
    """Only the top clusters are drawn and the title says how many there were."""
    ax = plot_failures(clusters.drop("share"), top=2).axes[0]
    assert ax.get_title() == "Failure clusters (top 2 of 3)"
    assert [p.get_width() for p in ax.patches] == [12, 3]
    assert texts(ax) == ["12", "3"]


def test_long_templates_are_cut():
    """A long template is cut to 60 characters ending in an ellipsis."""
    table = pl.DataFrame({"template": ["x" * 200], "error_type": ["E"], "step": [None],
                          "count": [1]}, schema_overrides={"step": pl.String})
    label = plot_failures(table).axes[0].get_yticklabels()[0].get_text()
    assert len(label) == 60
    assert label.endswith("…")


def test_summary_page(attempts, items, clusters):
    """The summary has the six charts and a headline of item counts and cost."""
    fig = plot_summary(attempts, items, budget=1.0, clusters_table=clusters)
    assert [ax.get_title() for ax in fig.axes] == [
        "Progress", "Throughput", "Cumulative cost", "Cost by step", "Latency: items",
        "Failure clusters"]
    assert fig.get_suptitle() == (r"8 items · done 4 (50%) · failed 1 (12%) · running 1 (12%)"
                                  r" · pending 2 (25%) · cost \$0.24")
    assert "total 8" in lines_by_label(fig.axes[0])
    assert r"budget \$1.00" in lines_by_label(fig.axes[2])
    assert [p.get_width() for p in fig.axes[5].patches] == [12, 3, 1]


def test_summary_without_clusters_counts_failed_items(attempts, items):
    """Without a cluster table the failures chart counts failed items by step and error type."""
    ax = plot_summary(attempts, items).axes[5]
    assert ax.get_title() == "Failures by error type"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["search · Timeout"]
    assert [p.get_width() for p in ax.patches] == [1]


@pytest.mark.parametrize("frame", [pl.DataFrame(), pl.DataFrame(schema=ATTEMPT_SCHEMA)],
                         ids=["no-columns", "no-rows"])
def test_empty_frames_say_no_data(frame, tmp_path):
    """Every chart draws "no data yet" on an empty attempt log, and still saves."""
    clusters = pl.DataFrame(schema={"template": pl.String, "error_type": pl.String,
                                    "step": pl.String, "count": pl.Int64})
    figs = [plot_progress(frame, total=10), plot_cost(frame), plot_cost_by_step(frame),
            plot_latency(frame), plot_latency(frame, step="search"), plot_failures(clusters),
            plot_summary(frame, pl.DataFrame())]
    for fig in figs:
        for ax in fig.axes:
            assert NO_DATA in texts(ax), ax.get_title()
    assert figs[-1].get_suptitle() == "no items"
    for i, fig in enumerate(figs):
        fig.savefig(tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").read_bytes().startswith(PNG)


def test_empty_log_with_budget_still_shows_the_budget():
    """Before any attempt the cost chart shows the budget line beside "no data yet"."""
    ax = plot_cost(pl.DataFrame(), budget=100.0).axes[0]
    assert NO_DATA in texts(ax)
    assert r"budget \$100.00" in lines_by_label(ax)


def test_save_to_png(attempts, items, tmp_path):
    """A summary figure saves as a PNG file."""
    path = tmp_path / "run.png"
    plot_summary(attempts, items, budget=1.0).savefig(path, dpi=50)
    assert path.read_bytes().startswith(PNG)


def test_figures_show_as_png_in_notebooks(attempts):
    """Figures have a PNG representation, so a notebook shows them without pyplot."""
    assert plot_cost(attempts)._repr_png_().startswith(PNG)


def test_figures_pickle(attempts):
    """A figure survives a pickle round trip (to send it to another process)."""
    fig = pickle.loads(pickle.dumps(plot_cost_by_step(attempts)))
    assert [p.get_height() for p in fig.axes[0].patches] == pytest.approx([0.12, 0.09])


def test_charts_do_not_use_pyplot(tmp_path):
    """Drawing and saving charts never imports pyplot (no global figure state)."""
    code = ("import sys, polars as pl\n"
            "from batchkit._charts.run import plot_summary\n"
            f"plot_summary(pl.DataFrame(), pl.DataFrame()).savefig({str(tmp_path / 'x.png')!r})\n"
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "False"
