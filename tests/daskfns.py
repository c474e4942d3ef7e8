"""Module-level row functions and steps for tests/test_dask.py (importable by Dask workers).

Run as a script, this module is the driver of a child process the tests kill::

    python daskfns.py STORE SIDEFILE SCHEDULER_ADDRESS
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from pipefns import append_line, read_lines  # noqa: F401 - tests use daskfns.read_lines

import batchkit as bk
from batchkit._worker import process_share
from batchkit.testing import Flaky, Poison


def square(row: dict[str, Any]) -> dict[str, Any]:
    """``n`` squared, and the process that computed it."""
    return {"sq": row["n"] ** 2, "pid": os.getpid()}


def is_seven(row: dict[str, Any]) -> bool:
    """Row 7 is the poison row."""
    return row["n"] == 7


#: fails transiently on attempts 1 and 2 of every row, then squares
flaky_square = Flaky(square, fail_times=2)
#: row 7 kills its worker process with os._exit; the others are squared
exit_on_seven = Poison(square, is_seven, mode="exit")


def fails_at_five(row: dict[str, Any]) -> dict[str, Any]:
    """Row 5 fails permanently; the others are squared."""
    if row["n"] == 5:
        raise ValueError("five")
    return square(row)


def hang_at_three(row: dict[str, Any]) -> dict[str, Any]:
    """Row 3 loops forever in Python; when stopped it writes ``stopped 3`` to ``row['log']``."""
    if row["n"] == 3:
        try:
            while True:
                time.sleep(0.01)
        except bk.ItemTimeout:
            append_line(row["log"], "stopped 3")
            raise
    return square(row)


def share(row: dict[str, Any]) -> dict[str, Any]:
    """How many worker processes split the run's rate limits, seen from the worker."""
    return {"share": process_share(), "pid": os.getpid()}


class Unloadable:
    """A row function that pickles fine but cannot be loaded on a worker.

    Like a function whose module is installed on the driver only.
    """

    __name__ = "unloadable"

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return square(row)

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_load_unloadable, ())


def _load_unloadable() -> Unloadable:
    raise ModuleNotFoundError("No module named 'secret_lib'")


# -- a pipeline --------------------------------------------------------------------------


def double_step(row: dict[str, Any]) -> dict[str, Any]:
    """Step 1: ``twice`` = 2 n (logs ``double N``)."""
    append_line(row["log"], f"double {row['n']}")
    return {"twice": row["n"] * 2}


def label_step(row: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Step 2: fails transiently on a row's first attempt when ``n`` % 5 == 0 (logs it)."""
    append_line(row["log"], f"label {row['n']}")
    if row["n"] % 5 == 0 and ctx.item is not None and ctx.item.attempt == 1:
        raise bk.Transient("label service busy")
    return {"label": f"{row['twice']}!"}


def make_pipeline() -> bk.Pipeline:
    """double -> label (label costs $0.01 a row); fresh steps, no cache."""
    return bk.pipeline(bk.step("double", cache=False)(double_step),
                       bk.step("label", cache=False, cost=0.01)(label_step))


def make_limited_pipeline(rate: str) -> bk.Pipeline:
    """One step with a rate limit."""
    return bk.pipeline(bk.step("limited", rate_limit=rate, cache=False)(square))


# -- the child-process driver of the dead-driver test -------------------------------------


class LoggedRow:
    """Logs ``start KEY TIME`` to a side file, then sleeps a little; returns ``n``."""

    def __init__(self, log: str, sleep: float) -> None:
        self.log = log
        self.sleep = sleep
        self.__name__ = "logged_row"

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        append_line(self.log, f"start {row['n']} {time.time():.6f}")
        time.sleep(self.sleep)
        return {"m": row["n"]}


def main(store: str, log: str, address: str) -> None:
    """Run 2,000 logged rows of 20 ms on the Dask scheduler at ``address`` (killed midway)."""
    import polars as pl

    batch = bk.Batch("orphans", store=store)
    batch.add(pl.DataFrame({"n": list(range(2000))}), key="n")
    batch.run(LoggedRow(log, 0.02), backend=f"dask://{address}", workers=2, chunk_size=20,
              progress=False)


if __name__ == "__main__":
    main(*sys.argv[1:4])
