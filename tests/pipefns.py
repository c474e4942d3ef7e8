"""Module-level step functions for tests/test_pipeline.py (importable by worker processes).

Every function reads the SimService base URL from the row's ``api`` column, so the
same steps run on threads and in loky worker processes. Factories build *fresh*
``Step`` objects: a step keeps per-process state (memo, in-run cache) under a token
made when the step is built, and loky workers live across runs, so a fresh step per
run is what proves that a value came from the store and not from a worker's memory.
"""

from __future__ import annotations

import os
import time
from typing import Any

import batchkit as bk


def append_line(path: str, line: str) -> None:
    """Append one line to a side file (O_APPEND: safe across processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_lines(path: str) -> list[str]:
    """The lines of a side file (none if it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


# -- the lead-enrichment calls ---------------------------------------------------------


def search_fn(row: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """GET /search?q=company: the company's domain, industry and a snippet."""
    r = ctx.http.get(row["api"] + "/search", params={"q": row["company"]})
    r.raise_for_status()
    j = r.json()
    return {"domain": j["domain"], "industry": j["industry"], "snippet": j["snippet"]}


def extract_fn(row: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """POST /extract of the snippet: size and revenue; counts the answer's tokens."""
    r = ctx.http.post(row["api"] + "/extract", json={"text": row["snippet"]})
    r.raise_for_status()
    j = r.json()
    ctx.cost(tokens=j["tokens"])
    return {"size": j["size"], "revenue": j["revenue"]}


async def extract_async(row: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """``extract_fn`` as an async step over ``ctx.ahttp``."""
    r = await ctx.ahttp.post(row["api"] + "/extract", json={"text": row["snippet"]})
    r.raise_for_status()
    j = r.json()
    ctx.cost(tokens=j["tokens"])
    return {"size": j["size"], "revenue": j["revenue"]}


def contacts_fn(row: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """GET /contacts for the CRM's ``website`` (404 when it is not a known domain)."""
    r = ctx.http.get(row["api"] + "/contacts", params={"domain": row["website"]})
    r.raise_for_status()
    people = r.json()["contacts"]
    return {"n_contacts": len(people), "first_email": people[0]["email"]}


def make_pipeline(*, cache: bool = True, extract_cache: bool | None = None,
                  contacts_version: str = "1", async_extract: bool = False) -> bk.Pipeline:
    """search -> extract -> contacts, fresh steps (see the module docstring)."""
    return bk.pipeline(
        bk.step("search", cache=cache)(search_fn),
        bk.step("extract", cache=cache if extract_cache is None else extract_cache)(
            extract_async if async_extract else extract_fn),
        bk.step("contacts", cache=cache, version=contacts_version)(contacts_fn),
    )


# -- ctx.memo ----------------------------------------------------------------------------


def _research(row: dict[str, Any]) -> str:
    append_line(row["log"], f"memo {row['industry']}")
    time.sleep(0.02)  # a slow shared computation: other threads ask for it meanwhile
    return f"notes on {row['industry']}"


def industry_brief(row: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Log the call, then take the industry's notes from ``ctx.memo`` (logged when computed)."""
    append_line(row["log"], f"call {row['company']}")
    return {"brief": ctx.memo(("industry", row["industry"]), lambda: _research(row))}


def make_memo_pipeline() -> bk.Pipeline:
    """One uncached step using ``ctx.memo``; a fresh step each call."""
    return bk.pipeline(bk.step("industry_brief", cache=False)(industry_brief))
