"""Crash and resume: kill a run with SIGKILL half way, resume it, count re-executions.

For each chunk setting:

1. an uninterrupted run of N rows in a child process (the baseline: its time);
2. the same run on a fresh store in a child process, killed with SIGKILL once the
   function has started half of the rows (it appends one fixed-size record per
   execution to a side file, unbuffered, so the parent sees progress while the child
   holds the store: DuckDB lets no other process open it);
3. the store read after the kill: rows done, pending, running (in flight);
4. a resume run in a new child process; then the side file tells how many rows the
   resumed run executed and which rows were executed twice.

Expected (issue 2): no row lost, every row done exactly once in the store, and the
re-executed rows a subset of the rows in flight (``running``) at the kill.

    python benchmarks/resume.py                   # 200,000 rows, chunk sizes auto and 1,000
    python benchmarks/resume.py --quick           # 20,000 rows (smoke)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common as c

NAME = "resume"
RECORD = 11  # bytes per side-file record: b"%07d,%02d\n"
_FD: int | None = None


def work(row: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """A fast row function with some work; logs each execution to the side file."""
    assert _FD is not None
    os.write(_FD, b"%07d,%02d\n" % (row["id"], ctx.attempt))
    import hashlib

    digest = hashlib.blake2b(row["name"].encode(), digest_size=8).hexdigest()
    time.sleep(0)
    return {"digest": digest, "y": row["x"] * 2}


def child(a: argparse.Namespace) -> None:
    """Run (or resume) the batch; print the report as JSON on the last line."""
    global _FD
    import batchkit as bk

    _FD = os.open(a.side, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    batch = bk.Batch(NAME, store=a.store)
    report = batch.run(work, workers=a.workers, backend="threads",
                       chunk_size=a.chunk_size, progress=False)
    batch.close()
    print(json.dumps({"processed": report.processed, "reclaimed": report.reclaimed,
                      "elapsed_s": report.elapsed_s, "outcome": report.outcome}))


def spawn(store: Path, side: Path, workers: int, chunk: int | None) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--child", "--store", str(store), "--side", str(side),
           "--workers", str(workers)]
    if chunk:
        cmd += ["--chunk-size", str(chunk)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"child failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def prepare(path: Path, rows: int) -> None:
    import batchkit as bk

    with bk.Batch(NAME, store=path) as batch:
        batch.add(c.make_frame(rows), key="id")


def records(side: Path) -> list[tuple[int, int]]:
    data = side.read_bytes() if side.exists() else b""
    return [(int(line[:7]), int(line[8:10])) for line in data.splitlines()]


def scenario(folder: Path, rows: int, workers: int, chunk: int | None) -> dict[str, Any]:
    import batchkit as bk

    # 1. uninterrupted
    prepare(folder / "full.duckdb", rows)
    t0 = time.perf_counter()
    full = finish(spawn(folder / "full.duckdb", folder / "full.side", workers, chunk))
    full_wall = time.perf_counter() - t0
    if full["processed"] != rows:
        raise SystemExit(f"uninterrupted run processed {full['processed']} of {rows}")

    # 2. killed half way
    store, side = folder / "killed.duckdb", folder / "killed.side"
    prepare(store, rows)
    t0 = time.perf_counter()
    proc = spawn(store, side, workers, chunk)
    half = rows // 2 * RECORD
    while True:
        if side.exists() and side.stat().st_size >= half:
            break
        if proc.poll() is not None:
            raise SystemExit("the run ended before half its rows started; use more --rows")
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.perf_counter() - t0
    started_before = len(records(side))

    # 3. the store after the kill
    with bk.Batch(NAME, store=store) as batch:
        at_kill = batch.counts()
        running_ids = set(batch.store.query(
            f"SELECT _id FROM \"{NAME}\" WHERE _status = 'running'")["_id"].to_list())
        id_to_row = dict(batch.store.query(f'SELECT _id, id FROM "{NAME}"').iter_rows())
    running_rows = {id_to_row[i] for i in running_ids}

    # 4. resume
    t0 = time.perf_counter()
    resumed = finish(spawn(store, side, workers, chunk))
    resume_wall = time.perf_counter() - t0
    log = records(side)
    after = log[started_before:]
    per_row = Counter(r for r, _ in log)
    twice = {r for r, n in per_row.items() if n > 1}
    with bk.Batch(NAME, store=store) as batch:
        final = batch.counts()
        distinct = batch.store.query(
            f'SELECT count(DISTINCT _id) AS n, count(*) AS m FROM "{NAME}__results"').row(0)
    lost = rows - len(per_row)
    ok = (final["done"] == rows and distinct == (rows, rows) and lost == 0
          and twice <= running_rows and max(per_row.values()) <= 2)
    return {
        "chunk": chunk or "auto", "full_s": full_wall, "full_run_s": full["elapsed_s"],
        "killed_at_s": killed_at, "started_before": started_before,
        "done": at_kill["done"], "pending": at_kill["pending"], "running": at_kill["running"],
        "reclaimed": resumed["reclaimed"], "processed": resumed["processed"],
        "executed_after": len(after), "twice": len(twice),
        "twice_subset": twice <= running_rows, "resume_s": resume_wall, "ok": ok,
        "final": final,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=None, help="rows (default 200,000)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunks", default="auto,1000",
                   help="comma-separated chunk sizes ('auto' = automatic sizing)")
    p.add_argument("--quick", action="store_true", help="20,000 rows (smoke)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--side", help=argparse.SUPPRESS)
    p.add_argument("--chunk-size", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return
    rows = a.rows or (20_000 if a.quick else 200_000)
    chunks = [None if x.strip() == "auto" else int(x) for x in a.chunks.split(",")]

    with c.Tee("resume-quick" if a.quick else "resume"):
        c.header(f"resume: {rows:,} rows, threads (workers={a.workers}), SIGKILL half way")
        results = []
        with tempfile.TemporaryDirectory(prefix="bk-resume-") as tmp:
            for chunk in chunks:
                folder = Path(tmp) / str(chunk or "auto")
                folder.mkdir()
                results.append(scenario(folder, rows, a.workers, chunk))
        print(c.table(
            ["chunk size", "uninterrupted s", "killed after s", "started at kill",
             "done at kill", "pending at kill", "running at kill", "executed by resume",
             "resume processed", "executed twice", "resume s"],
            [[r["chunk"], r["full_s"], r["killed_at_s"], r["started_before"], r["done"],
              r["pending"], r["running"], r["executed_after"], r["processed"], r["twice"],
              r["resume_s"]] for r in results]))
        print("\n'started at kill': executions logged by the function before the kill; "
              "'executed by resume': executions logged by the resumed run (side file); "
              "'resume processed': RunReport.processed; 'executed twice': rows logged twice "
              "in all. Times are wall seconds of child processes (Python start included).")
        for r in results:
            print(f"\nchunk {r['chunk']}: after resume {r['final']}; every row done exactly "
                  f"once in the store and none lost: {r['ok']}; re-executed rows "
                  f"({r['twice']:,}) all among the rows in flight at the kill "
                  f"({r['running']:,}): {r['twice_subset']}")
        c.footer()
        if not all(r["ok"] for r in results):
            raise SystemExit("resume check FAILED")


if __name__ == "__main__":
    main()
