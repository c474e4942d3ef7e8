"""batchkit: turn a one-row function into a durable, resumable, parallel batch job.

Rows live in Polars frames persisted to DuckDB; per-row status columns are the
checkpoints, so a crash, a Ctrl-C or a closed laptop loses nothing.

Example:
    >>> import polars as pl, batchkit as bk
    >>> batch = bk.Batch("squares", store=":memory:")
    >>> batch.add(pl.DataFrame({"n": [1, 2, 3]}), key="n")
    3
    >>> report = batch.run(lambda row: {"square": row["n"] ** 2}, progress=False)
    >>> batch.counts()
    {'pending': 0, 'running': 0, 'done': 3, 'failed': 0}
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from ._alerts import Alert, Thresholds
from ._batch import DEFAULT_STORE, Batch
from ._clock import Clock, SystemClock
from ._clusters import FailureClusters
from ._errors import (
    BatchkitError,
    ConfigError,
    ItemTimeout,
    Permanent,
    SchemaError,
    StoreError,
    StoreInUseError,
    StoreVersionError,
    Transient,
)
from ._executors import BACKENDS
from ._handle import RunHandle
from ._metrics import Metrics
from ._pipeline import Pipeline, pipeline
from ._plan import Projection, StepProfile, project
from ._policy import RetryPolicy, classify, redact
from ._ratelimit import Limiter, RateLimit
from ._readonly import BatchStatus, ReadOnlyBatch
from ._report import RunReport
from ._steps import Step, StepContext, step
from ._store import STATUS_COLUMNS, STATUSES
from ._worker import ItemContext, current_item

try:
    __version__ = _version("batchkit")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "BACKENDS",
    "DEFAULT_STORE",
    "STATUSES",
    "STATUS_COLUMNS",
    "Alert",
    "Batch",
    "BatchStatus",
    "BatchkitError",
    "Clock",
    "ConfigError",
    "FailureClusters",
    "ItemContext",
    "ItemTimeout",
    "Limiter",
    "Metrics",
    "Permanent",
    "Pipeline",
    "Projection",
    "RateLimit",
    "ReadOnlyBatch",
    "RetryPolicy",
    "RunHandle",
    "RunReport",
    "SchemaError",
    "Step",
    "StepContext",
    "StepProfile",
    "StoreError",
    "StoreInUseError",
    "StoreVersionError",
    "SystemClock",
    "Thresholds",
    "Transient",
    "__version__",
    "classify",
    "current_item",
    "pipeline",
    "project",
    "redact",
    "step",
]
