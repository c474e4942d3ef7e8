"""End-to-end overhead of batchkit against a plain Python loop.

The job: N rows (int id, str name, float x), a trivial function returning two
derived fields, then a Parquet file of the enriched rows.

* plain loop: ``[f(r) for r in df.iter_rows(named=True)]`` + ``pl.from_dicts`` +
  ``hstack`` + ``write_parquet`` (no durability).
* batchkit: ``Batch(...)`` on a store file in a temp folder + ``add`` + ``run`` (every
  chunk checkpointed) + ``export`` to Parquet, per backend.

Every measurement is repeated (interleaved, so drifting load hits all of them alike);
the table shows the median of each phase and the best and median totals. Target
(issue 2): threads at most 2.5x the plain loop.

    python benchmarks/overhead.py                 # 1,000,000 rows, 3 repeats
    python benchmarks/overhead.py --quick         # 20,000 rows, 1 repeat (smoke)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common as c
import cloudpickle
import polars as pl

import batchkit as bk

TARGET = 2.5


def plain_loop(df: pl.DataFrame, out: Path) -> dict[str, float]:
    """The baseline: loop, frame the results, write Parquet. Returns phase seconds."""
    t0 = time.perf_counter()
    rows = [c.derive(r) for r in df.iter_rows(named=True)]
    t1 = time.perf_counter()
    full = df.hstack(pl.from_dicts(rows))
    t2 = time.perf_counter()
    full.write_parquet(out)
    t3 = time.perf_counter()
    return {"add": 0.0, "run": t1 - t0, "frame": t2 - t1, "export": t3 - t2, "total": t3 - t0}


def batchkit_job(df: pl.DataFrame, folder: Path, backend: str, workers: int,
                 chunk_size: int | None) -> dict[str, float]:
    """The same job through batchkit. Returns phase seconds."""
    t0 = time.perf_counter()
    batch = bk.Batch("overhead", store=folder / "store.duckdb")
    batch.add(df, key="id")
    t1 = time.perf_counter()
    report = batch.run(c.derive, workers=workers, backend=backend, chunk_size=chunk_size,
                       progress=False)
    t2 = time.perf_counter()
    n = batch.export(folder / "out.parquet")
    batch.close()
    t3 = time.perf_counter()
    if report.outcome != "completed" or n != df.height:
        raise SystemExit(f"{backend}: the run did not finish every row: {report}")
    return {"add": t1 - t0, "run": t2 - t1, "frame": 0.0, "export": t3 - t2, "total": t3 - t0}


def same_output(a: Path, b: Path) -> bool:
    """Whether two Parquet outputs hold the same rows (order aside)."""
    x = pl.read_parquet(a).sort("id")
    y = pl.read_parquet(b).select(x.columns).sort("id")
    return x.equals(y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=None, help="rows (default 1,000,000)")
    p.add_argument("--repeat", type=int, default=None, help="repeats per job (default 3)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk-size", type=int, default=None, help="default: automatic")
    p.add_argument("--backends", default="threads,sequential,processes",
                   help="comma-separated; the first is the one judged against the target")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="experiment: sys.setswitchinterval(S) before the jobs (default 0.005)")
    p.add_argument("--quick", action="store_true", help="20,000 rows, 1 repeat")
    a = p.parse_args()
    if a.switch_interval:
        sys.setswitchinterval(a.switch_interval)
    rows = a.rows or (20_000 if a.quick else 1_000_000)
    repeat = a.repeat or (1 if a.quick else 3)
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    # the processes backend pickles the function: send _common by value, not by name
    cloudpickle.register_pickle_by_value(c)

    with c.Tee("overhead-quick" if a.quick else "overhead"):
        c.header(f"overhead: {rows:,} rows, trivial function, add + run + export Parquet")
        df = c.make_frame(rows)
        print(f"input: {df.height:,} rows, {df.estimated_size() / c.MIB:.1f} MiB; "
              f"workers={a.workers}, chunk_size={a.chunk_size or 'auto'}, repeats={repeat}, "
              f"switch interval {sys.getswitchinterval() * 1e3:g} ms")
        jobs = ["plain loop", *backends]
        times: dict[str, list[dict[str, float]]] = {j: [] for j in jobs}
        checked = False
        with tempfile.TemporaryDirectory(prefix="bk-overhead-") as tmp:
            for rep in range(repeat):
                for job in jobs:
                    folder = Path(tmp) / f"{job.replace(' ', '_')}-{rep}"
                    folder.mkdir()
                    gc.collect()
                    if job == "plain loop":
                        t = plain_loop(df, folder / "out.parquet")
                    else:
                        t = batchkit_job(df, folder, job, a.workers, a.chunk_size)
                    times[job].append(t)
                    print(f"  repeat {rep + 1}/{repeat} {job:<11} {t['total']:6.2f} s",
                          file=sys.stderr)
                if not checked:
                    base = Path(tmp) / "plain_loop-0" / "out.parquet"
                    for job in backends:
                        if not same_output(base, Path(tmp) / f"{job}-0" / "out.parquet"):
                            raise SystemExit(f"{job}: output differs from the plain loop's")
                    checked = True

        base_best, base_med = c.best_median([t["total"] for t in times["plain loop"]])
        rows_out = []
        for job in jobs:
            ts = times[job]
            best, med = c.best_median([t["total"] for t in ts])
            ph = {k: statistics.median(t[k] for t in ts) for k in ("add", "run", "frame",
                                                                   "export")}
            rows_out.append([
                job, ph["add"], ph["run"] + ph["frame"], ph["export"], best, med,
                best / base_best, med / base_med, rows / best / 1e3,
            ])
        print()
        print(c.table(["job", "add s", "run s", "export s", "total best s", "total median s",
                       "x loop best", "x loop median", "k rows/s best"], rows_out))
        print("\nphases are medians over the repeats; plain loop: 'run' = the loop plus "
              "pl.from_dicts + hstack, 'export' = write_parquet. Outputs compared equal.")
        judged = backends[0] if backends else None
        if judged:
            best = min(t["total"] for t in times[judged]) / base_best
            med = statistics.median(t["total"] for t in times[judged]) / base_med
            verdict = "meets" if med <= TARGET else "MISSES"
            print(f"\n{judged}: {best:.2f}x (best) / {med:.2f}x (median) the plain loop; "
                  f"target <= {TARGET}x: {verdict} the target")
        c.footer()


if __name__ == "__main__":
    main()
