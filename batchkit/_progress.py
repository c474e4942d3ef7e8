"""Progress rendering: a tqdm bar (a notebook widget bar inside Jupyter).

The runner emits events; this observer only renders them and imports tqdm lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TqdmProgress"]


class TqdmProgress:
    """Renders run events as a tqdm bar (``tqdm.auto``: notebook or terminal).

    Example:
        >>> import io
        >>> p = TqdmProgress("demo", file=io.StringIO())
        >>> p("start", {"total": 3}); p("progress", {"done": 2, "failed": 1, "retried": 0})
        >>> p.bar.n
        3
    """

    def __init__(self, batch: str, *, file: Any = None) -> None:
        self.batch = batch
        self.file = file
        self.bar: Any = None
        self.failed = 0
        self.retried = 0

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "start":
            if self.file is not None:
                from tqdm import tqdm
            else:
                from tqdm.auto import tqdm
            self.bar = tqdm(total=data["total"], desc=self.batch, unit="row", file=self.file,
                            dynamic_ncols=True)
        elif kind == "progress" and self.bar is not None:
            self.failed += data["failed"]
            self.retried += data["retried"]
            self.bar.update(data["done"] + data["failed"])
            self.bar.set_postfix(failed=self.failed, retries=self.retried, refresh=False)
        elif kind == "finish" and self.bar is not None:
            self.bar.close()
