"""``batch.report()``: a summary of a batch as Markdown text and notebook HTML."""

from __future__ import annotations

import html
from typing import Any

from ._clusters import FailureClusters
from ._metrics import Metrics

__all__ = ["BatchSummary"]


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.3f} s"


class BatchSummary:
    """Totals, throughput, latency, cost, top failure clusters and alerts of a batch.

    ``str()`` / ``.markdown`` give Markdown; a notebook renders it as HTML.

    Example:
        >>> import polars as pl, batchkit as bk
        >>> b = bk.Batch("sum", store=":memory:")
        >>> _ = b.add(pl.DataFrame({"x": [1, 0]}), key="x")
        >>> _ = b.run(lambda row: {"y": 1 / row["x"]}, retries=0, progress=False)
        >>> "ZeroDivisionError" in b.report().markdown
        True
    """

    def __init__(self, batch: str, metrics: Metrics, clusters: FailureClusters,
                 alerts: list[Any], *, top: int = 5) -> None:
        self.batch = batch
        self.metrics = metrics
        self.clusters = clusters
        self.alerts = alerts
        self.top = top

    @property
    def markdown(self) -> str:
        """The summary as Markdown."""
        m = self.metrics
        c = m.counts
        lines = [
            f"# Batch `{self.batch}`",
            "",
            "## Totals",
            "",
            "| status | rows |",
            "|---|---:|",
            *[f"| {k} | {v:,} |" for k, v in c.items()],
            f"| **total** | **{m.total:,}** |",
            "",
            "## Throughput and latency",
            "",
            f"- items/min: {m.items_per_min or 0:,.1f} overall, "
            f"{m.items_per_min_recent or 0:,.1f} over the last minute",
            f"- item duration p50 / p95 / p99: {_s(m.duration_p50_s)} / "
            f"{_s(m.duration_p95_s)} / {_s(m.duration_p99_s)}",
            f"- attempts {m.attempts:,}, retries {m.retries:,} (in-step {m.step_retries:,}), "
            f"recovered after a transient error {m.transient_recovered:,}",
            f"- calls {m.calls:,}, tokens {m.tokens:,}, cache hits {m.cache_hits:,}",
            "",
            "## Cost",
            "",
            f"- total {_usd(m.cost_usd)}; per done row {_usd(m.cost_per_done_usd)}; "
            f"per ended row {_usd(m.cost_per_ended_usd)}",
        ]
        if m.steps.height:
            lines += ["", "| step | attempts | p50 s | p95 s | calls | USD | cache hits | "
                          "failures |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for r in m.steps.iter_rows(named=True):
                lines.append(
                    f"| {r['step']} | {r['attempts']:,} | {r['p50'] or 0:.3f} | "
                    f"{r['p95'] or 0:.3f} | {r['calls']:,} | {r['usd']:,.4f} | "
                    f"{r['cache_hits']:,} | {r['failures']:,} |")
        lines += ["", "## Failures", ""]
        if not len(self.clusters):
            lines.append("No failed rows.")
        else:
            lines += [f"{m.dead_letters:,} dead letters ({m.permanent_failures:,} permanent, "
                      f"{m.retries_exhausted:,} transient with retries used up). "
                      f"Top patterns:", ""]
            for cl in list(self.clusters)[:self.top]:
                lines.append(f"- **{cl.count:,}** × `{cl.error_type}` in "
                             f"{cl.step or 'the function'}: {cl.template}")
                lines += [f"  - {o.sentence}" for o in cl.over_represented]
        lines += ["", "## Alerts", ""]
        lines += [f"- {a.level}: {a.message}" for a in self.alerts] or ["None raised."]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.markdown

    def __repr__(self) -> str:
        return self.markdown

    def _repr_markdown_(self) -> str:
        return self.markdown

    def _repr_html_(self) -> str:
        return "<pre style='white-space:pre-wrap'>" + html.escape(self.markdown) + "</pre>"
