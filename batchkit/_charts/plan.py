"""What-if charts of a plan: time and cost against volume and against workers.

matplotlib is imported inside the function, so ``import batchkit`` stays fast
and works without it. The figure is a ``matplotlib.figure.Figure`` made
without pyplot: no global figure registry, no backend needed, nothing shown.
A notebook displays it as the cell's value; ``fig.savefig("plan.png")`` saves it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from .._plan import Projection

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_cost_time"]

_MAX_DEFAULT_WORKERS = 64


def _counts(what: str, values: Iterable[int] | None) -> list[int] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(f"{what} must be a list of whole numbers >= 1, got {values!r}")
    out = list(values)
    bad = [v for v in out if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if not out or bad:
        raise ConfigError(f"{what} must be a non-empty list of whole numbers >= 1, got {out!r}")
    return sorted(set(out))


def _time_unit(seconds: Iterable[float]) -> tuple[str, float]:
    finite = [s for s in seconds if s == s and s != float("inf")]
    top = max(finite, default=0.0)
    if top >= 7200:
        return "h", 3600.0
    if top >= 120:
        return "min", 60.0
    return "s", 1.0


def plot_cost_time(projection: Projection, *, volumes: Iterable[int] | None = None,
                   workers: Iterable[int] | None = None) -> Figure:
    """Time and cost against volume (at the plan's workers) and against workers (at its volume).

    Four axes: time vs volume, time vs workers, cost vs volume, cost vs workers.
    Time is drawn at p50 latencies (``time``) and with every call at p95
    (``time (p95)``, dashed); the deadline and the budget are horizontal lines
    (when the projection has them); ``this plan`` marks the projection itself;
    ``limit binds`` marks the worker count from which every rate-limited or
    capped step runs at its limit (more workers only speed up the other steps).

    Args:
        projection: a ``Projection`` (``bk.project(...)``).
        volumes: volumes to draw (default: a quarter of the plan's volume up to ten times it).
        workers: worker counts to draw (default: 1 up to twice the plan's, and past
            where the limits bind).

    Returns:
        A ``matplotlib.figure.Figure``.

    Raises:
        ConfigError: not a projection, or volumes / workers not whole numbers >= 1.

    Example:
        >>> from batchkit._plan import StepProfile, project
        >>> proj = project([StepProfile("search", calls=2, latency=1.0, cost=0.01,
        ...                             rate_limit="60/min")], volume=600, workers=2,
        ...                deadline="1h", budget=5)
        >>> fig = plot_cost_time(proj)
        >>> [ax.get_title() for ax in fig.axes][:2]
        ['Time vs volume (2 workers)', 'Time vs workers (600 items)']
    """
    if not isinstance(projection, Projection):
        raise ConfigError(f"plot_cost_time needs a Projection (bk.project(...)), "
                          f"got {type(projection).__name__}")
    from matplotlib.figure import Figure

    vols = _counts("volumes", volumes) or sorted(
        {max(1, round(projection.volume * k / 4)) for k in range(1, 41)} | {projection.volume})
    saturation = projection.saturation_workers
    top = max(2 * projection.workers, (saturation or 0) + 2, 4)
    counts = _counts("workers", workers) or sorted(
        set(range(1, min(top, _MAX_DEFAULT_WORKERS) + 1)) | {projection.workers})
    by_volume = [projection.at(volume=v) for v in vols]
    by_workers = [projection.at(workers=w) for w in counts]
    times = [p.seconds_p95 for p in by_volume + by_workers] + [projection.deadline or 0.0]
    unit, scale = _time_unit(times)

    fig = Figure(figsize=(11, 7.5), layout="constrained")
    (t_vol, t_wk), (c_vol, c_wk) = fig.subplots(2, 2)
    fig.suptitle(f"What if: {projection.volume:,} items, {projection.workers} workers — "
                 f"bottleneck {projection.bottleneck.why}", fontsize=10)

    def time_axes(ax: Any, xs: list[int], plans: list[Projection], x_now: int) -> None:
        ax.plot(xs, [p.seconds / scale for p in plans], label="time", color="C0")
        ax.plot(xs, [p.seconds_p95 / scale for p in plans], label="time (p95)", color="C0",
                linestyle="--")
        ax.plot([x_now], [projection.seconds / scale], label="this plan", color="C3",
                marker="o", linestyle="none")
        if projection.deadline is not None:
            ax.axhline(projection.deadline / scale, label="deadline", color="C1")
        ax.set_ylabel(f"time ({unit})")
        ax.set_ylim(bottom=0)

    def cost_axes(ax: Any, xs: list[int], plans: list[Projection], x_now: int) -> None:
        ax.plot(xs, [p.cost for p in plans], label="cost", color="C2")
        ax.plot([x_now], [projection.cost], label="this plan", color="C3", marker="o",
                linestyle="none")
        if projection.budget is not None:
            ax.axhline(projection.budget, label="budget", color="C1")
        ax.set_ylabel("cost (USD)")
        ax.set_ylim(bottom=0)

    time_axes(t_vol, vols, by_volume, projection.volume)
    t_vol.set(title=f"Time vs volume ({projection.workers} workers)", xlabel="items")
    time_axes(t_wk, counts, by_workers, projection.workers)
    t_wk.set(title=f"Time vs workers ({projection.volume:,} items)", xlabel="workers")
    cost_axes(c_vol, vols, by_volume, projection.volume)
    c_vol.set(title="Cost vs volume", xlabel="items")
    cost_axes(c_wk, counts, by_workers, projection.workers)
    c_wk.set(title=f"Cost vs workers ({projection.volume:,} items)", xlabel="workers")
    if saturation is not None and saturation <= counts[-1]:
        t_wk.axvline(saturation, label="limit binds", color="C7", linestyle=":")
    for ax in (t_vol, t_wk, c_vol, c_wk):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig
