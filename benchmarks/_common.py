"""Shared helpers of the benchmark scripts: the input frame, the row function, tables.

Not a benchmark itself. Every script imports it as ``_common`` (the scripts' own
folder is on ``sys.path`` when they run as ``python benchmarks/NAME.py``).
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

OUT = Path(__file__).resolve().parent / "out"
MIB = 1024 * 1024


def make_frame(rows: int) -> pl.DataFrame:
    """The benchmark input: ``id`` (int), ``name`` (str), ``x`` (float)."""
    return pl.select(id=pl.int_range(rows, dtype=pl.Int64)).with_columns(
        name=pl.format("name-{}", "id"),
        x=pl.col("id").cast(pl.Float64) * 0.5,
    )


def derive(row: dict[str, Any]) -> dict[str, Any]:
    """The trivial row function: two derived fields."""
    return {"y": row["x"] * 2, "tag": row["name"] + "!"}


def command() -> str:
    """The exact command that started this script, to paste into a shell."""
    script = os.path.relpath(sys.argv[0]) if not os.path.isabs(sys.argv[0]) else sys.argv[0]
    return shlex.join(["python", script, *sys.argv[1:]])


def machine() -> str:
    """One line about the machine and the library versions."""
    import duckdb

    import batchkit

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
            f"polars {pl.__version__}, duckdb {duckdb.__version__}, "
            f"batchkit {batchkit.__version__}; load average {load}")


def header(title: str) -> None:
    """Print the title, the command and the machine."""
    print(f"# {title}")
    print(f"command: {command()}")
    print(f"machine: {machine()}")
    print()


def footer() -> None:
    """Print the load average at the end (other work on the machine skews timings)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at the end: {load}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (right-aligned numbers) that also reads well in a terminal."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(_is_number(r[i]) for r in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(values, widths, numeric, strict=True)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 100 or v == 0 else f"{v:.3g}" if abs(v) < 0.01 else \
            f"{v:.2f}"
    return str(v)


def best_median(values: Sequence[float]) -> tuple[float, float]:
    """(minimum, median) of repeated timings."""
    return min(values), statistics.median(values)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn`` took, and what it returned."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


class Tee:
    """Copy everything printed to ``benchmarks/out/NAME.txt`` as well."""

    def __init__(self, name: str) -> None:
        OUT.mkdir(exist_ok=True)
        self.path = OUT / f"{name}.txt"
        self._file = self.path.open("w")
        self._stdout = sys.stdout

    def write(self, text: str) -> int:
        self._file.write(text)
        return self._stdout.write(text)

    def flush(self) -> None:
        self._file.flush()
        self._stdout.flush()

    def __enter__(self) -> Tee:
        sys.stdout = self  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout = self._stdout
        self._file.close()
        print(f"(output saved to {os.path.relpath(self.path)})")
