"""Diagnostic (not a benchmark): where the time of the overhead job goes.

Runs the overhead job once (add + run + export) with timers wrapped around the
store's and the runner's methods and around the chunk function, and prints the
wall time of each, summed over calls. The driver thread's methods add up to the
run's wall time; ``run_chunk`` is summed over worker threads (it overlaps them),
so compare it with run seconds x workers. Uses private names: a method that no
longer exists is skipped.

    python benchmarks/profile_run.py                        # 1,000,000 rows, threads
    python benchmarks/profile_run.py --rows 200000 --backend sequential --chunk-size 1000
"""

from __future__ import annotations

import argparse
import collections
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

import batchkit as bk
from batchkit import _executors, _runner, _store, _worker

STORE = ["add", "pending_ids", "checkpoint", "_claim", "_write_outcomes",
         "_ensure_result_columns", "result_conflicts", "release", "begin_run", "end_run",
         "count_selected", "next_due", "counts", "export", "read"]
RUNNER = ["_loop", "_collect_ready", "_decide", "_check_conflicts", "_account", "_dispatch",
          "_submit", "_wait", "_next_range"]

total: dict[str, float] = collections.defaultdict(float)
calls: collections.Counter[str] = collections.Counter()


def timer(label: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            total[label] += time.perf_counter() - t0
            calls[label] += 1
    return wrapped


def instrument() -> None:
    for cls, names in ((_store.Store, STORE), (_runner.Runner, RUNNER)):
        for name in names:
            if hasattr(cls, name):
                setattr(cls, name, timer(f"{cls.__name__}.{name}", getattr(cls, name)))
    # the executors look run_chunk up in their own module
    _executors.run_chunk = timer("run_chunk (workers)", _worker.run_chunk)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--backend", default="threads", choices=["threads", "sequential"])
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="20,000 rows")
    a = p.parse_args()
    rows = 20_000 if a.quick else a.rows
    c.header(f"profile: {rows:,} rows, {a.backend}, workers={a.workers}, "
             f"chunk_size={a.chunk_size or 'auto'}")
    instrument()
    df = c.make_frame(rows)
    with tempfile.TemporaryDirectory(prefix="bk-profile-") as tmp:
        t0 = time.perf_counter()
        batch = bk.Batch("profile", store=Path(tmp) / "store.duckdb")
        batch.add(df, key="id")
        t1 = time.perf_counter()
        report = batch.run(c.derive, workers=a.workers, backend=a.backend,
                           chunk_size=a.chunk_size, progress=False)
        t2 = time.perf_counter()
        batch.export(Path(tmp) / "out.parquet")
        batch.close()
        t3 = time.perf_counter()
    print(f"add {t1 - t0:.2f} s, run {t2 - t1:.2f} s, export {t3 - t2:.2f} s; "
          f"{report.processed:,} rows; "
          f"{calls.get('Store.checkpoint', 0)} checkpoints\n")
    rows_out = [[k, calls[k], total[k], total[k] / calls[k] * 1e3]
                for k in sorted(total, key=lambda k: -total[k])]
    print(c.table(["function", "calls", "seconds", "ms per call"], rows_out))
    c.footer()


if __name__ == "__main__":
    main()
