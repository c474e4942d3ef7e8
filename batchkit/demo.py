"""The demo job: enrich the 500 fictional companies of ``data/companies.csv``.

``batchkit demo`` (or ``python -m batchkit.demo``) adds the file to a store as batch
``leads``, runs :func:`enrich` over it on 8 threads, prints the report, the counts and
the first failures, and exports the enriched rows to Parquet. Run it again and it
resumes: known rows are not added twice and done rows do not run again.

:func:`enrich` stands in for a lead-enrichment API: it sleeps a few milliseconds per
row, fails transiently on its first attempt for about 3% of rows (they succeed on
retry), and fails permanently for rows without a usable domain.

Example:
    >>> row = {"company": "Acme Tools", "domain": "acmetools.de", "country": "DE",
    ...        "industry": "Manufacturing", "employees": 120, "founded": 1990}
    >>> out = enrich(row)
    >>> out["size_band"], out["region"], out["email_guess"]
    ('medium', 'EMEA', 'info@acmetools.de')
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import polars as pl

from ._batch import Batch
from ._errors import ConfigError, Permanent, Transient
from ._policy import RetryPolicy
from ._worker import current_item

__all__ = ["add_arguments", "enrich", "main", "run"]

_REGIONS = {
    "AMER": {"US", "CA", "MX", "BR", "AR", "CL", "CO"},
    "APAC": {"IN", "JP", "SG", "AU", "KR", "NZ", "CN", "ID"},
}
_INDUSTRY_WEIGHT = {"Software": 30, "Finance": 25, "Healthcare": 20, "Energy": 15,
                    "Logistics": 12, "Manufacturing": 10, "Consulting": 10, "Media": 8,
                    "Retail": 6, "Education": 5}
_TRANSIENT_PER_MILLE = 30  # rows whose first attempt fails with a transient error
_SHOW_FAILURES = 5


def _digest(text: str) -> int:
    """A stable hash (``hash()`` of a str changes between interpreter runs)."""
    return zlib.crc32(text.encode())


def _size_band(employees: int) -> str:
    for limit, band in ((10, "micro"), (50, "small"), (250, "medium"), (1000, "large")):
        if employees <= limit:
            return band
    return "enterprise"


def _region(country: str) -> str:
    for region, countries in _REGIONS.items():
        if country in countries:
            return region
    return "EMEA"


def enrich(row: dict[str, Any]) -> dict[str, Any]:
    """Enrich one company row, like a call to a lead-enrichment API would.

    Returns ``size_band``, ``region``, ``score`` (0-100), ``email_guess`` and
    ``age_years``. Raises ``bk.Permanent`` when the row has no usable domain and
    ``bk.Transient`` on the first attempt of about 3% of rows.

    Example:
        >>> enrich({"company": "X", "domain": "", "country": "US", "industry": "Media",
        ...         "employees": 3, "founded": 2020})
        Traceback (most recent call last):
        ...
        batchkit._errors.Permanent: no usable domain for company 'X': ''
    """
    h = _digest(row["company"])
    time.sleep((2 + (h % 3000) / 1000) / 1000)  # 2-5 ms of "network"
    domain = (row.get("domain") or "").strip().lower()
    if "." not in domain:
        raise Permanent(f"no usable domain for company {row['company']!r}: "
                        f"{row.get('domain') or ''!r}")
    item = current_item()
    attempt = item.attempt if item is not None else 1
    if attempt <= 1 and (h >> 12) % 1000 < _TRANSIENT_PER_MILLE:
        raise Transient(f"enrichment API busy for {domain} (HTTP 503)", retry_after=0.1)
    employees = int(row.get("employees") or 0)
    score = min(100, _INDUSTRY_WEIGHT.get(row.get("industry") or "", 0)
                + min(40, employees // 25) + (h >> 20) % 31)
    return {
        "size_band": _size_band(employees),
        "region": _region(row.get("country") or ""),
        "score": score,
        "email_guess": f"{'info' if h % 2 else 'hello'}@{domain}"
        if employees >= 10 else f"contact@{domain}",
        "age_years": 2026 - int(row["founded"]) if row.get("founded") else None,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser`` (shared by ``batchkit demo`` and ``main``)."""
    parser.add_argument("--input", default="data/companies.csv", metavar="CSV",
                        help="the companies file (default: %(default)s, from the working "
                             "folder)")
    parser.add_argument("--store", default="data/demo.duckdb", metavar="STORE",
                        help="the DuckDB store (default: %(default)s)")
    parser.add_argument("--export", default="data/leads_enriched.parquet", metavar="OUT",
                        help="where the enriched rows go (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=8, metavar="N",
                        help="threads (default: %(default)s)")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                        default="auto", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed options; print what happened; return the exit code."""
    source = Path(args.input)
    if not source.is_file():
        raise ConfigError(
            f"demo input {str(source)!r} not found (looked in {str(Path.cwd())!r}); run "
            "`batchkit demo` from the batchkit repository root, or pass --input PATH to "
            "a copy of data/companies.csv")
    companies = pl.read_csv(source)
    started = time.monotonic()
    with Batch("leads", store=args.store) as batch:
        new = batch.add(companies, key="company")
        print(f"batch 'leads' in {args.store}: {new:,} new rows added "
              f"({companies.height - new:,} already known)")
        report = batch.run(enrich, workers=args.workers, backend="threads",
                           retries=RetryPolicy(retries=3, backoff=0.2),
                           progress=args.progress)
        print(report)
        if not report.processed:
            print("nothing left to run: every row is done or failed (failed rows stay "
                  "failed: their domains are unusable)")
        counts = batch.counts()
        print("counts: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        failed = batch.failed()
        if failed.height:
            print(f"first failures ({min(_SHOW_FAILURES, failed.height)} of "
                  f"{failed.height:,}):")
            for rec in failed.head(_SHOW_FAILURES).iter_rows(named=True):
                print(f"  {rec['key']}: {rec['error_type']}: {rec['error_message']}")
        written = batch.export(args.export)
    print(f"exported {written:,} enriched rows to {args.export}")
    print(f"done in {time.monotonic() - started:.1f} s. Run `batchkit demo` again: known "
          "rows are skipped and finished rows do not run again.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``batchkit demo [options]``: parse, run, and return the exit code."""
    from ._cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover - `python -m batchkit.demo`
    raise SystemExit(main())
