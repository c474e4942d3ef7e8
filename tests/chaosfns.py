"""Row functions and the child-process driver script of the chaos tests.

The row functions are module-level (or module-level classes) so loky worker processes
can import them. Every execution of a logged row appends one line to a side file with
a single ``O_APPEND`` write, so the log survives ``kill -9`` of any process::

    key,attempt,pid,ppid,epoch_seconds

Run as a script, this module is the driver of a child process the tests kill::

    python chaosfns.py STORE SIDEFILE --backend threads --rows 3000 --sleep 0.004 ...
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

BATCH = "chaos"


def log_line(path: str, text: str) -> None:
    """Append one line to ``path`` in a single write (atomic for a short line)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def read_log(path: str | Path) -> list[tuple[str, int, int, int, float]]:
    """The side file as (key, attempt, pid, ppid, time) tuples, in write order."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        key, attempt, pid, ppid, t = line.split(",")
        out.append((key, int(attempt), int(pid), int(ppid), float(t)))
    return out


class LoggedRow:
    """Logs each execution's start to a side file, sleeps a little, returns ``n`` squared."""

    def __init__(self, log: str, sleep: float) -> None:
        self.log = log
        self.sleep = sleep
        self.__name__ = "logged_row"

    def __call__(self, row: dict[str, Any], ctx: Any) -> dict[str, Any]:
        log_line(self.log, f"{ctx.key},{ctx.attempt},{os.getpid()},{os.getppid()},"
                           f"{time.time():.6f}\n")
        time.sleep(self.sleep)
        return {"sq": row["n"] * row["n"]}


def square(row: dict[str, Any]) -> dict[str, Any]:
    """A healthy row: ``n`` squared."""
    return {"sq": row["n"] * row["n"]}


def is_poison(row: dict[str, Any]) -> bool:
    """Row 137 is the poison row."""
    return row["n"] == 137


class Hang:
    """Row ``n == hang_at`` hangs for ``seconds``; the others are squared.

    ``how``: ``"sleep"`` (``time.sleep``: a signal interrupts it) or ``"csleep"`` (libc
    ``sleep`` with SIGALRM blocked: stuck in C, deaf to the soft timeout, like a C
    extension that never returns to Python).
    """

    def __init__(self, hang_at: int, seconds: float, how: str = "sleep") -> None:
        self.hang_at = hang_at
        self.seconds = seconds
        self.how = how
        self.__name__ = "hang"

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["n"] == self.hang_at:
            if self.how == "csleep":
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
                ctypes.CDLL(None).sleep(int(self.seconds))
            else:
                time.sleep(self.seconds)
        return square(row)


def main(argv: list[str]) -> int:
    """Drive one run of the chaos batch in this process (the tests kill it)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("sidefile")
    parser.add_argument("--backend", default="threads")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--sleep", type=float, default=0.004)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--chunk-size", type=int, default=10)
    parser.add_argument("--retries", type=int, default=50)
    args = parser.parse_args(argv)

    import polars as pl

    import batchkit as bk

    batch = bk.Batch(BATCH, store=args.store)
    batch.add(pl.DataFrame({"n": list(range(args.rows))}), key="n")
    report = batch.run(LoggedRow(args.sidefile, args.sleep), workers=args.workers,
                       chunk_size=args.chunk_size, backend=args.backend,
                       retries=bk.RetryPolicy(retries=args.retries, backoff=0),
                       progress=False)
    batch.close()
    print(report.outcome, flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import chaosfns  # the functions must live in an importable module for loky workers

    sys.exit(chaosfns.main(sys.argv[1:]))
