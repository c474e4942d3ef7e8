"""Peak memory of the end-to-end overhead job, per input size, each in a fresh process.

Each size runs in its own child process (so peaks do not carry over): build the
input frame, then either the batchkit job (``Batch`` on a store file in a temp
folder, ``add``, ``run`` with threads and workers=2, ``export`` Parquet) or the
plain loop baseline (``iter_rows`` loop, ``pl.from_dicts``, ``hstack``,
``write_parquet``). The child reports its resident set size after imports and after
building the frame, the peak of each phase (sampled every 5 ms with psutil), and
the process peak (``ru_maxrss``).

Growth = process peak - RSS once the input frame is built, i.e. what the job costs
beyond holding its input. Target (issue 2): under ~100 MiB per million rows.

    python benchmarks/memory.py                   # 1,000,000 and 4,000,000 rows
    python benchmarks/memory.py --quick           # 20,000 and 80,000 rows (smoke)
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common as c

TARGET_MIB_PER_M = 100


class Sampler:
    """Samples this process's RSS in a thread; keeps the peak of each named phase."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.phase = "setup"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.005)

    def sample(self) -> int:
        rss = self.proc.memory_info().rss
        if rss > self.peaks.get(self.phase, 0):
            self.peaks[self.phase] = rss
        return rss

    def enter(self, phase: str) -> None:
        self.sample()
        self.phase = phase
        self.sample()

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()


def child(job: str, rows: int) -> None:
    """Run one job at one size; print the measurements as JSON on the last line."""
    import polars as pl

    import batchkit as bk

    gc.collect()
    s = Sampler()
    rss_imports = s.sample()
    df = c.make_frame(rows)
    gc.collect()
    rss_frame = s.sample()
    with tempfile.TemporaryDirectory(prefix="bk-memory-") as tmp:
        if job == "batchkit":
            s.enter("add")
            batch = bk.Batch("memory", store=Path(tmp) / "store.duckdb")
            batch.add(df, key="id")
            s.enter("run")
            report = batch.run(c.derive, workers=2, backend="threads", progress=False)
            s.enter("export")
            n = batch.export(Path(tmp) / "out.parquet")
            batch.close()
            if report.outcome != "completed" or n != rows:
                raise SystemExit(f"the run did not finish every row: {report}")
        else:
            s.enter("run")
            out = df.hstack(pl.from_dicts([c.derive(r) for r in df.iter_rows(named=True)]))
            s.enter("export")
            out.write_parquet(Path(tmp) / "out.parquet")
        s.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"job": job, "rows": rows, "frame_bytes": df.estimated_size(),
                      "rss_imports": rss_imports, "rss_frame": rss_frame, "peak": peak,
                      "phases": s.peaks}))


def measure(job: str, rows: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", job, "--rows", str(rows)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{job} at {rows:,} rows failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=None,
                   help="comma-separated row counts (default 1000000,4000000)")
    p.add_argument("--rows", type=int, default=None, help="a single size (overrides --sizes)")
    p.add_argument("--quick", action="store_true", help="20,000 and 80,000 rows (smoke)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, a.rows)
        return
    if a.rows:
        sizes = [a.rows]
    else:
        sizes = [int(x) for x in (a.sizes or ("20000,80000" if a.quick
                                              else "1000000,4000000")).split(",")]

    with c.Tee("memory-quick" if a.quick else "memory"):
        c.header("memory: peak RSS of the overhead job, one fresh process per size and job")
        results = [measure(job, rows) for rows in sizes for job in ("plain loop", "batchkit")]
        mib = c.MIB
        table = []
        for r in results:
            growth = r["peak"] - r["rss_frame"]
            ph = r["phases"]
            table.append([
                r["job"], r["rows"], r["frame_bytes"] / mib, r["rss_imports"] / mib,
                r["rss_frame"] / mib, ph.get("add", 0) / mib, ph.get("run", 0) / mib,
                ph.get("export", 0) / mib, r["peak"] / mib, growth / mib,
                growth / mib / (r["rows"] / 1e6),
            ])
        print(c.table(["job", "rows", "input frame MiB", "RSS after imports MiB",
                       "RSS with frame MiB", "peak add MiB", "peak run MiB",
                       "peak export MiB", "peak MiB", "growth MiB", "growth MiB per 1M rows"],
                      table))
        print("\n'growth' = process peak (ru_maxrss) - RSS once the input frame is built; "
              "phase peaks are sampled every 5 ms.")
        for r in results:
            if r["job"] == "batchkit":
                per_m = (r["peak"] - r["rss_frame"]) / mib / (r["rows"] / 1e6)
                verdict = "meets" if per_m < TARGET_MIB_PER_M else "MISSES"
                print(f"batchkit at {r['rows']:,} rows: {per_m:.0f} MiB per million rows "
                      f"beyond the input: {verdict} the < ~{TARGET_MIB_PER_M} MiB target")
        c.footer()


if __name__ == "__main__":
    main()
