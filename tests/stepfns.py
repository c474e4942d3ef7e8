"""Module-level steps for tests (importable by worker processes)."""

from __future__ import annotations

import batchkit as bk


@bk.step(cost=0.01)
def plus_one(row):
    """x + 1."""
    return {"y": row["x"] + 1}


@bk.step("times_ten", cost_per_call=0.002)
def times_ten(row, ctx):
    """y * 10, counting two calls."""
    ctx.cost(calls=2, tokens=100)
    return {"z": row["y"] * 10}


pipe = bk.pipeline(plus_one, times_ten)


@bk.step("paced", rate_limit="1000/s")
def paced(row, ctx):
    """Report this process's share of the rate limit and the memo's first computation."""
    first = ctx.memo("shared", lambda: row["x"])
    return {"per_second": ctx._owner._local.limiter.rate.per_second, "first": first}


slow_rate = bk.step("slow_rate", rate_limit="1/s")(lambda row: {})
