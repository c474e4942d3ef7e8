"""Row functions for the command-line tests (module level, so worker processes can use them).

The tests pass them by file path (``.../tests/clifns.py:double``), which is also how a
user points ``batchkit run`` at a script that is not on ``sys.path``.
"""

from __future__ import annotations

import batchkit as bk


def double(row):
    """``n`` doubled, and a label."""
    return {"double": row["n"] * 2, "label": f"n{row['n']}"}


def fail_odd(row):
    """Odd ``n`` fail permanently; even ones are tagged ``first``."""
    if row["n"] % 2:
        raise bk.Permanent(f"odd number {row['n']}")
    return {"tag": "first"}


def tag_second(row):
    """Every row is tagged ``second`` (used to re-run failed rows)."""
    return {"tag": "second"}


def interrupt_at_3(row):
    """Acts like Ctrl-C pressed while row ``n == 3`` runs."""
    if row["n"] == 3:
        raise KeyboardInterrupt
    return {"ok": True}
