"""The report a run returns: counts, speed, retries and failures by type."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

__all__ = ["RunReport"]


@dataclass(frozen=True)
class RunReport:
    """What one ``Batch.run`` did.

    Attributes:
        batch: the batch name.
        run_id: the run's id (also in the store's ``_run_id`` column).
        outcome: ``completed`` (nothing left to do), ``budget`` (``budget=`` stopped
            dispatching), ``stopped`` (a background run's ``stop()``), ``halted`` (a failure policy
            stopped it), ``interrupted`` (Ctrl-C) or ``empty`` (nothing to run).
        counts: rows per status in the whole batch after the run.
        processed: rows that ended (done or failed) in this run.
        succeeded: rows that ended done in this run.
        failed: rows that ended failed in this run.
        retries: attempts that failed transiently and were scheduled again.
        reclaimed: rows left running by a dead run and taken back at the start.
        crashes: worker processes that died during the run.
        elapsed_s: wall time of the run.
        failures_by_type: final failures of this run per error type.
        halt_reason: why the run halted, if it did.
        cost_usd: USD spent by this run's attempts.

    Example:
        >>> r = RunReport("b", "r1", "completed", {"pending": 0, "running": 0, "done": 9,
        ...               "failed": 1}, 10, 9, 1, 2, 0, 0, 2.0, {"KeyError": 1})
        >>> r.items_per_s
        5.0
    """

    batch: str
    run_id: str
    outcome: str
    counts: dict[str, int]
    processed: int
    succeeded: int
    failed: int
    retries: int
    reclaimed: int
    crashes: int
    elapsed_s: float
    failures_by_type: dict[str, int] = field(default_factory=dict)
    halt_reason: str | None = None
    cost_usd: float = 0.0

    @property
    def items_per_s(self) -> float:
        """Rows ended per second of this run."""
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def resume_hint(self) -> str | None:
        """How to continue when rows are left to do."""
        left = self.counts.get("pending", 0) + self.counts.get("running", 0)
        if self.outcome in ("halted", "interrupted", "budget", "stopped") and left:
            return f"{left:,} rows left: call batch.run(fn) again to resume"
        if self.counts.get("failed", 0):
            return (f"{self.counts['failed']:,} rows failed: batch.failed() lists them; "
                    "batch.run(fn, only='failed') re-runs them")
        return None

    def _lines(self) -> list[tuple[str, str]]:
        c = self.counts
        total = sum(c.values())
        rows = [
            ("outcome", self.outcome + (f" ({self.halt_reason})" if self.halt_reason else "")),
            ("batch", f"{c.get('done', 0):,} done · {c.get('failed', 0):,} failed · "
                      f"{c.get('pending', 0):,} pending · {c.get('running', 0):,} running "
                      f"of {total:,}"),
            ("this run", f"{self.processed:,} rows in {self.elapsed_s:.2f} s "
                         f"({self.items_per_s:,.1f} rows/s): {self.succeeded:,} done, "
                         f"{self.failed:,} failed, {self.retries:,} retries"),
        ]
        if self.cost_usd:
            per = self.cost_usd / self.processed if self.processed else 0.0
            rows.append(("cost", f"${self.cost_usd:,.4f} (${per:,.4f} per row ended)"))
        if self.reclaimed:
            rows.append(("reclaimed", f"{self.reclaimed:,} rows left running by a dead run"))
        if self.crashes:
            rows.append(("worker crashes", f"{self.crashes:,}"))
        if self.failures_by_type:
            rows.append(("failures", ", ".join(
                f"{k}: {v:,}" for k, v in sorted(self.failures_by_type.items(),
                                                 key=lambda kv: -kv[1]))))
        if self.resume_hint:
            rows.append(("next", self.resume_hint))
        return rows

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self._lines())
        body = "\n".join(f"  {k:<{width}}  {v}" for k, v in self._lines())
        return f"RunReport {self.batch!r} run {self.run_id}\n{body}"

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in self._lines())
        return (f"<div><b>RunReport</b> {html.escape(self.batch)} · run "
                f"<code>{html.escape(self.run_id)}</code><table>{rows}</table></div>")
