"""Module-level row functions for tests (importable by loky worker processes).

Shared with other test files: keep names stable and only add to this module.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

import batchkit as bk


def square(row: dict[str, Any]) -> dict[str, Any]:
    """``{"square": n ** 2}``."""
    return {"square": row["n"] ** 2}


def double(row: dict[str, Any]) -> dict[str, Any]:
    """``{"double": n * 2}``."""
    return {"double": row["n"] * 2}


def plus_one(row: dict[str, Any]) -> int:
    """A scalar result: ``n + 1`` (stored under the column ``plus_one``)."""
    return row["n"] + 1


def nothing(row: dict[str, Any]) -> None:
    """No new columns."""
    return None


def fail_odd(row: dict[str, Any]) -> dict[str, Any]:
    """Odd ``n`` raises a permanent ValueError; even ``n`` gives ``{"half": n // 2}``."""
    if row["n"] % 2:
        raise ValueError(f"odd number {row['n']}")
    return {"half": row["n"] // 2}


def always_transient(row: dict[str, Any]) -> dict[str, Any]:
    """Always raises ``bk.Transient``."""
    raise bk.Transient(f"busy for {row['n']}")


def always_permanent(row: dict[str, Any]) -> dict[str, Any]:
    """Always raises ``bk.Permanent``."""
    raise bk.Permanent(f"no such item {row['n']}")


def succeed_on_attempt(row: dict[str, Any]) -> dict[str, Any]:
    """Transient failures until attempt ``row["ok_at"]``; then ``{"attempt": attempt}``."""
    ctx = bk.current_item()
    assert ctx is not None
    if ctx.attempt < row["ok_at"]:
        raise bk.Transient(f"attempt {ctx.attempt} of {row['n']} failed")
    return {"attempt": ctx.attempt}


def sleepy(row: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``row["sleep"]`` seconds, then returns ``{"slept": row["sleep"]}``."""
    time.sleep(row["sleep"])
    return {"slept": row["sleep"]}


def context_of(row: dict[str, Any], ctx: bk.ItemContext) -> dict[str, Any]:
    """Two-argument function: returns what its ItemContext says."""
    return {"batch": ctx.batch, "key": ctx.key, "attempt": ctx.attempt,
            "run_id": ctx.run_id, "idem": ctx.idempotency_key}


def current_context(row: dict[str, Any]) -> dict[str, Any]:
    """One-argument function: returns what ``bk.current_item()`` says."""
    ctx = bk.current_item()
    assert ctx is not None
    return {"batch": ctx.batch, "key": ctx.key, "attempt": ctx.attempt,
            "run_id": ctx.run_id, "idem": ctx.idempotency_key}


def http_status(row: dict[str, Any]) -> dict[str, Any]:
    """Raises ``httpx.HTTPStatusError`` with ``row["status"]`` (and ``row["retry_after"]``).

    Built from httpx Request/Response objects: no network.
    """
    headers = {}
    if row.get("retry_after") is not None:
        headers["Retry-After"] = str(row["retry_after"])
    request = httpx.Request("GET", f"https://api.example.test/items/{row['n']}")
    response = httpx.Response(row["status"], headers=headers, request=request)
    raise httpx.HTTPStatusError(f"HTTP {row['status']}", request=request, response=response)


def pid_of(row: dict[str, Any]) -> dict[str, Any]:
    """``{"pid": os.getpid()}``: which process ran the row."""
    return {"pid": os.getpid()}
