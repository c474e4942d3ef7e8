"""A second process for the watching tests: runs or holds a batch while a test watches.

Usage (``python tests/livefns.py ...``), every message a JSON line on stdout:

* ``run STORE ROWS SLEEP [--hold]``: add ROWS rows to batch ``live`` and run a step
  that sleeps SLEEP seconds a row, costs $0.002 a row and fails every 7th row
  (those rows have ``country = "BR"``) on 4 threads in chunks of 5 rows (so the
  committed counts move every few rows). Prints ``{"pid"}`` first, then
  ``{"done", "counts", "metrics"}``; with ``--hold`` it keeps the batch (and the
  store) open until a line arrives on stdin, like a notebook after a run.
* ``hold STORE``: add 20 rows to batch ``live`` and hold the store without running
  until a line arrives on stdin.
"""

from __future__ import annotations

import json
import os
import sys
import time

import polars as pl

import batchkit as bk

BATCH = "live"
SLEEP = 0.0


def frame(rows: int) -> pl.DataFrame:
    """``n`` 0..rows-1, and ``country`` "BR" on every 7th row (the ones that fail)."""
    return pl.DataFrame({"n": list(range(rows)),
                         "country": ["BR" if i % 7 == 0 else "DE" for i in range(rows)]})


@bk.step(cost=0.002)
def enrich(row: dict) -> dict:
    """Sleeps SLEEP seconds; every 7th row fails permanently with a numbered message."""
    time.sleep(SLEEP)
    if row["n"] % 7 == 0:
        raise bk.Permanent(f"no company with id {row['n']} in the registry")
    return {"twice": row["n"] * 2}


def say(**message: object) -> None:
    """One JSON line on stdout, flushed."""
    print(json.dumps(message, default=str), flush=True)


def main(argv: list[str]) -> None:
    """Run or hold, as the module docstring says."""
    global SLEEP
    command, store = argv[0], argv[1]
    say(pid=os.getpid())
    batch = bk.Batch(BATCH, store=store)
    if command == "hold":
        batch.add(frame(20), key="n")
        say(holding=True)
        sys.stdin.readline()
        batch.close()
        return
    rows, SLEEP = int(argv[2]), float(argv[3])
    batch.add(frame(rows), key="n")
    pipe = bk.pipeline(enrich)
    batch.run(pipe, workers=4, chunk_size=5, retries=0, progress=False)
    say(done=True, counts=batch.counts(), metrics=batch.metrics().to_dict())
    if "--hold" in argv:
        sys.stdin.readline()
    batch.close()


if __name__ == "__main__":
    main(sys.argv[1:])
