"""Charts of runs, drawn from the attempt log and the items frame.

Each function takes Polars frames and returns a ``matplotlib.figure.Figure``
built without pyplot (no global state, so it is safe in any thread and needs no
display); a notebook shows it as a PNG, ``fig.savefig("run.png")`` writes it.
matplotlib is imported inside the functions, so importing this module is cheap.
Every chart draws "no data yet" on an empty frame instead of failing.

The attempt log has one row per attempt: item rows (``step`` null) with outcome
``done``/``retry``/``failed``, and step rows (``step`` set) with outcome
``done``/``failed``/``cached``; see ``Batch.attempts()``.
"""

from __future__ import annotations

import functools
import io
import math
import textwrap
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_cost", "plot_cost_by_step", "plot_failures", "plot_latency", "plot_progress",
           "plot_summary"]

NO_DATA = "no data yet"
_MAX_BINS = 120  # throughput bars at most; the bin widens past two hours
_BIN_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 240, 480, 720, 1440)
_LABEL_CHARS = 60  # failure-cluster labels are cut to this length
_WRAP = 32  # ... and wrapped to lines this long on the summary page
_RED = "#c62828"


# -- public charts -----------------------------------------------------------------------


def plot_progress(attempts: pl.DataFrame, total: int | None = None) -> Figure:
    """Items ended over time (done and done + failed), and the throughput per minute.

    Args:
        attempts: the attempt log (``Batch.attempts()``).
        total: the number of items to finish, drawn as a dashed line.

    Example:
        >>> fig = plot_progress(pl.DataFrame())
        >>> [ax.get_title() for ax in fig.axes]
        ['Progress', 'Throughput']
    """
    fig = _figure((10, 6.5))
    top, bottom = fig.subplots(2, 1)
    _draw_progress(top, attempts, total)
    _draw_throughput(bottom, attempts)
    return fig


def plot_cost(attempts: pl.DataFrame, budget: float | None = None) -> Figure:
    """Cumulative cost of all attempts over time, with the budget as a red line.

    Example:
        >>> plot_cost(pl.DataFrame(), budget=100.0).axes[0].get_title()
        'Cumulative cost'
    """
    fig = _figure((10, 4))
    _draw_cost(fig.subplots(), attempts, budget)
    return fig


def plot_cost_by_step(attempts: pl.DataFrame) -> Figure:
    """Total cost per step of a pipeline as bars (one bar for a plain function).

    Example:
        >>> plot_cost_by_step(pl.DataFrame()).axes[0].get_title()
        'Cost by step'
    """
    fig = _figure((8, 4))
    _draw_cost_by_step(fig.subplots(), attempts)
    return fig


def plot_latency(attempts: pl.DataFrame, step: str | None = None) -> Figure:
    """Histogram of attempt durations with p50 and p95 lines.

    Args:
        attempts: the attempt log.
        step: a step's name for that step's calls; None for whole items. Cached
            step results (no call made) are left out.

    Example:
        >>> plot_latency(pl.DataFrame(), step="search").axes[0].get_title()
        'Latency: step search'
    """
    fig = _figure((8, 4))
    _draw_latency(fig.subplots(), attempts, step)
    return fig


def plot_failures(clusters_table: pl.DataFrame, *, top: int = 10) -> Figure:
    """The largest failure clusters as horizontal bars of row counts, largest on top.

    Args:
        clusters_table: one row per cluster with at least ``template``,
            ``error_type``, ``step`` and ``count`` (``Batch.failures()``); a
            ``share`` column (0..1), when present, is printed beside the counts.
        top: how many clusters to draw.

    Example:
        >>> t = pl.DataFrame({"template": ["timeout after <n>s"], "error_type": ["Timeout"],
        ...                   "step": ["search"], "count": [7]})
        >>> [int(p.get_width()) for p in plot_failures(t).axes[0].patches]
        [7]
    """
    fig = _figure((10, 4))
    _draw_failures(fig.subplots(), clusters_table, top=top)
    return fig


def plot_summary(attempts: pl.DataFrame, items: pl.DataFrame, *, budget: float | None = None,
                 clusters_table: pl.DataFrame | None = None) -> Figure:
    """One page: progress, throughput, cost vs budget, cost by step, latency, failures.

    Args:
        attempts: the attempt log.
        items: the items frame (``Batch.items()``): its size is the progress total
            and its status counts head the page.
        budget: a budget in USD, drawn on the cost chart.
        clusters_table: failure clusters (``Batch.failures()``); without it the
            failed items are counted by step and error type.

    Example:
        >>> len(plot_summary(pl.DataFrame(), pl.DataFrame()).axes)
        6
    """
    fig = _figure((14, 13))
    axes = fig.subplots(3, 2)
    _draw_progress(axes[0][0], attempts, items.height or None)
    _draw_throughput(axes[0][1], attempts)
    _draw_cost(axes[1][0], attempts, budget)
    _draw_cost_by_step(axes[1][1], attempts)
    _draw_latency(axes[2][0], attempts, None)
    if clusters_table is None:
        _draw_failures(axes[2][1], _failures_by_type(items), top=8, wrap=_WRAP,
                       title="Failures by error type")
    else:
        _draw_failures(axes[2][1], clusters_table, top=8, wrap=_WRAP)
    fig.suptitle(_headline(attempts, items))
    return fig


# -- drawing -----------------------------------------------------------------------------


def _draw_progress(ax: Axes, attempts: pl.DataFrame, total: int | None) -> None:
    title = "Progress"
    ended = _ended(attempts)
    if ended.is_empty():
        _no_data(ax, title)
        return
    times = ended["ended_at"].to_list()
    ax.plot(times, range(1, ended.height + 1), drawstyle="steps-post",
            label="ended (done + failed)")
    ax.plot(times, ended["outcome"].eq("done").cum_sum().to_list(), drawstyle="steps-post",
            label="done")
    if total:
        ax.axhline(total, linestyle="--", color="grey", label=f"total {total:,}")
    ax.set_title(title)
    ax.set_ylabel("items")
    ax.set_ylim(bottom=0)
    _time_axis(ax)
    ax.legend(loc="upper left")


def _draw_throughput(ax: Axes, attempts: pl.DataFrame) -> None:
    title = "Throughput"
    ended = _ended(attempts)
    if ended.is_empty():
        _no_data(ax, title)
        return
    ends = ended["ended_at"]
    span_s = (ends.max() - ends.min()).total_seconds()  # type: ignore[operator,union-attr]
    minutes = next((m for m in _BIN_MINUTES if span_s / 60 / m <= _MAX_BINS), _BIN_MINUTES[-1])
    bins = (ended.group_by(pl.col("ended_at").dt.truncate(f"{minutes}m").alias("bin"))
            .len().sort("bin"))
    ax.bar(bins["bin"].to_list(), (bins["len"] / minutes).to_list(),
           width=timedelta(minutes=minutes),  # type: ignore[arg-type]
           align="edge", edgecolor="white", linewidth=0.5, label="items ended per minute")
    ax.set_title(title if minutes == 1 else f"{title} ({minutes}-minute bins)")
    ax.set_ylabel("items/min")
    _time_axis(ax)


def _draw_cost(ax: Axes, attempts: pl.DataFrame, budget: float | None) -> None:
    title = "Cumulative cost"
    rows = _item_rows(attempts)
    if rows.is_empty() and budget is None:
        _no_data(ax, title)
        return
    if rows.is_empty():
        _no_data(ax, title, clear=False)
    else:
        rows = _with_end(rows).sort("ended_at")
        spent = rows["usd"].fill_null(0.0).cum_sum()
        ax.plot(rows["ended_at"].to_list(), spent.to_list(), drawstyle="steps-post",
                label=f"spent {_usd(float(spent[-1]))}")
        _time_axis(ax)
    if budget is not None:
        ax.axhline(budget, linestyle="--", color=_RED, label=f"budget {_usd(budget)}")
    ax.set_title(title)
    ax.set_ylabel("USD")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")


def _draw_cost_by_step(ax: Axes, attempts: pl.DataFrame) -> None:
    title = "Cost by step"
    if attempts.is_empty():
        _no_data(ax, title)
        return
    steps = attempts.filter(pl.col("step").is_not_null())
    if steps.is_empty():
        names = ["(whole item)"]
        costs = [float(attempts["usd"].fill_null(0.0).sum())]
    else:
        by = steps.group_by("step", maintain_order=True).agg(pl.col("usd").fill_null(0.0).sum())
        names, costs = by["step"].to_list(), by["usd"].to_list()
    bars = ax.bar(range(len(names)), costs, tick_label=[_plain(n) for n in names])
    ax.bar_label(bars, labels=[_usd(c) for c in costs])
    ax.set_title(title)
    ax.set_ylabel("USD")
    ax.margins(y=0.15)


def _draw_latency(ax: Axes, attempts: pl.DataFrame, step: str | None) -> None:
    title = "Latency: items" if step is None else f"Latency: step {_plain(step)}"
    durations = pl.Series("duration_s", [], dtype=pl.Float64)
    if not attempts.is_empty():
        which = pl.col("step").is_null() if step is None else pl.col("step") == step
        durations = (attempts.filter(which & (pl.col("outcome") != "cached"))["duration_s"]
                     .drop_nulls())
    if durations.is_empty():
        _no_data(ax, title)
        return
    bins = min(40, max(1, math.ceil(math.sqrt(durations.len()))))
    ax.hist(durations.to_list(), bins=bins, color="#90a4ae")
    for q, colour in ((0.5, "#1565c0"), (0.95, _RED)):
        value = float(durations.quantile(q, interpolation="linear"))  # type: ignore[arg-type]
        ax.axvline(value, color=colour, linestyle="--", label=f"p{round(q * 100)} {value:.2f} s")
    ax.set_title(title)
    ax.set_xlabel("seconds")
    ax.set_ylabel("attempts")
    ax.legend(loc="upper right")


def _draw_failures(ax: Axes, table: pl.DataFrame, *, top: int = 10,
                   title: str = "Failure clusters", wrap: int | None = None) -> None:
    """Bars of the ``top`` clusters; ``wrap`` breaks labels into lines of that width."""
    if table.is_empty():
        _no_data(ax, title)
        return
    shown = table.sort("count", descending=True, maintain_order=True).head(top)
    if shown.height < table.height:
        title += f" (top {shown.height} of {table.height})"
    labels = [_cluster_label(row) for row in shown.iter_rows(named=True)]
    if wrap:
        labels = [textwrap.fill(label, wrap) for label in labels]
    counts = shown["count"].to_list()
    bars = ax.barh(range(shown.height), counts, tick_label=labels, color=_RED)
    if "share" in shown.columns:
        texts = [f"{n:,} ({100 * (s or 0):.0f}%)" for n, s in zip(counts, shown["share"])]
    else:
        texts = [f"{n:,}" for n in counts]
    ax.bar_label(bars, labels=texts, padding=3)
    ax.invert_yaxis()  # the largest cluster on top
    if wrap:
        ax.tick_params(axis="y", labelsize=8)
    ax.set_title(title)
    ax.set_xlabel("rows")
    ax.margins(x=0.2)


# -- data --------------------------------------------------------------------------------


def _item_rows(attempts: pl.DataFrame) -> pl.DataFrame:
    """Whole-item attempts (``step`` null); empty for an empty frame."""
    if attempts.is_empty():
        return attempts
    return attempts.filter(pl.col("step").is_null())


def _with_end(rows: pl.DataFrame) -> pl.DataFrame:
    """Add ``ended_at`` = ``started_at`` + ``duration_s``."""
    micros = (pl.col("duration_s").fill_null(0.0) * 1e6).round().cast(pl.Int64)
    return rows.with_columns(ended_at=pl.col("started_at") + pl.duration(microseconds=micros))


def _ended(attempts: pl.DataFrame) -> pl.DataFrame:
    """Item attempts that ended the item (done or failed), in the order they ended."""
    rows = _item_rows(attempts)
    if rows.is_empty():
        return rows
    return _with_end(rows.filter(pl.col("outcome").is_in(["done", "failed"]))).sort("ended_at")


def _failures_by_type(items: pl.DataFrame) -> pl.DataFrame:
    """Failed items counted by step and error type (a cluster table without templates)."""
    schema = {"template": pl.String, "error_type": pl.String, "step": pl.String,
              "count": pl.UInt32}
    if items.is_empty() or "_status" not in items.columns:
        return pl.DataFrame(schema=schema)
    failed = items.filter(pl.col("_status") == "failed")
    step = pl.col("_step") if "_step" in items.columns else pl.lit(None, pl.String)
    return (failed.group_by(step.alias("step"), pl.col("_error_type").alias("error_type"))
            .len("count")
            .select(pl.lit(None, pl.String).alias("template"), "error_type", "step", "count"))


def _headline(attempts: pl.DataFrame, items: pl.DataFrame) -> str:
    """The page title: item counts by status and the cost so far."""
    if items.is_empty() or "_status" not in items.columns:
        parts = ["no items"]
    else:
        counts = dict(items.group_by("_status").len().iter_rows())
        n = items.height
        parts = [f"{n:,} items"] + [f"{s} {counts[s]:,} ({100 * counts[s] / n:.0f}%)"
                                     for s in ("done", "failed", "running", "pending")
                                     if counts.get(s)]
    if not attempts.is_empty():
        parts.append(f"cost {_usd(float(_item_rows(attempts)['usd'].fill_null(0.0).sum()))}")
    return " · ".join(parts)


# -- matplotlib plumbing -----------------------------------------------------------------


def _figure(size: tuple[float, float]) -> Figure:
    return _figure_type()(figsize=size, layout="constrained")


@functools.cache
def _figure_type() -> type[Figure]:
    """A ``Figure`` that a notebook shows as a PNG even when pyplot was never imported."""
    from matplotlib.figure import Figure

    class ChartFigure(Figure):
        """A matplotlib Figure with a PNG representation for IPython."""

        def _repr_png_(self) -> bytes:
            out = io.BytesIO()
            self.savefig(out, format="png")
            return out.getvalue()

    # picklable: pickle looks the class up as this module's ChartFigure (__getattr__)
    ChartFigure.__module__, ChartFigure.__qualname__ = __name__, "ChartFigure"
    return ChartFigure


def __getattr__(name: str) -> Any:
    if name == "ChartFigure":
        return _figure_type()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _time_axis(ax: Axes) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")


def _no_data(ax: Axes, title: str, *, clear: bool = True) -> None:
    ax.text(0.5, 0.5, NO_DATA, transform=ax.transAxes, ha="center", va="center",
            color="grey")
    ax.set_title(title)
    if clear:
        ax.set_xticks([])
        ax.set_yticks([])


def _cluster_label(row: dict[str, Any]) -> str:
    text = str(row.get("error_type") or "error")
    if row.get("template"):
        text += f": {row['template']}"
    if row.get("step"):
        text = f"{row['step']} · {text}"
    if len(text) > _LABEL_CHARS:
        text = text[:_LABEL_CHARS - 1] + "…"
    return _plain(text)


def _plain(text: str) -> str:
    """Text drawn literally (a ``$`` would otherwise start matplotlib's math mode)."""
    return text.replace("$", r"\$")


def _usd(x: float) -> str:
    """Dollars, drawn literally: cents from a dollar up, up to four decimals below."""
    if abs(x) >= 1:
        return _plain(f"${x:,.2f}")
    text = f"{x:.4f}".rstrip("0")
    return _plain(f"${text if len(text.split('.')[1]) >= 2 else f'{x:.2f}'}")
