"""Module-level row functions that call SimService over a pooled client (for worker processes).

Owned by tests/test_http.py; the pool lives at module level so each worker process
makes its own client once and reuses it across rows.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from batchkit._http import ClientPool

POOL = ClientPool(concurrency=4)


def search(row: dict[str, Any]) -> dict[str, Any]:
    """GET /search for ``row["company"]`` at ``row["url"]``; also who ran it on which client."""
    client = POOL.client()
    r = client.get(row["url"] + "/search", params={"q": row["company"]})
    r.raise_for_status()
    return {"domain": r.json()["domain"], "pid": os.getpid(), "client": id(client),
            "thread": threading.get_ident()}
