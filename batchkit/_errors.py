"""The one exception tree of batchkit.

::

    BatchkitError                      every error batchkit raises
    ├── ConfigError (ValueError)       a bad argument or input; raised before any work starts
    │   └── SchemaError                a frame that does not fit the batch (columns, types, keys)
    ├── StoreError                     the DuckDB store cannot be used
    │   ├── StoreInUseError            another process holds the store
    │   └── StoreVersionError          the store was written by a newer batchkit
    ├── Transient                      raise it in your function: retry this row with backoff
    │   └── ItemTimeout (TimeoutError) a row ran longer than the run's ``timeout``
    └── Permanent                      raise it in your function: fail this row now

Errors of single rows are never raised out of ``Batch.run``: they are stored as
data (``Batch.failed()``). Only configuration and store errors are raised.
"""

from __future__ import annotations

__all__ = [
    "BatchkitError",
    "ConfigError",
    "ItemTimeout",
    "Permanent",
    "SchemaError",
    "StoreError",
    "StoreInUseError",
    "StoreVersionError",
    "Transient",
]


class BatchkitError(Exception):
    """Base class of every exception batchkit raises.

    Example:
        >>> issubclass(ConfigError, BatchkitError)
        True
    """


class ConfigError(BatchkitError, ValueError):
    """A bad argument or input, raised before any work starts.

    The message names the offending value, what is allowed and what to do next.

    Example:
        >>> raise ConfigError("workers must be a positive integer, got 0")
        Traceback (most recent call last):
        ...
        batchkit._errors.ConfigError: workers must be a positive integer, got 0
    """


class SchemaError(ConfigError):
    """A frame that does not fit its batch: missing or reserved columns, bad keys, other types.

    Example:
        >>> issubclass(SchemaError, ValueError)
        True
    """


class StoreError(BatchkitError):
    """The DuckDB store cannot be opened or used.

    Example:
        >>> issubclass(StoreInUseError, StoreError)
        True
    """


class StoreInUseError(StoreError):
    """Another process holds the store (DuckDB allows one writing process per file).

    Attributes:
        path: the store file.
        pid: the process holding it, when DuckDB says.

    Example:
        >>> str(StoreInUseError("a.duckdb", pid=42)).startswith("store is in use by PID 42")
        True
    """

    def __init__(self, path: str, pid: int | None = None) -> None:
        self.path = path
        self.pid = pid
        who = f"PID {pid}" if pid is not None else "another process"
        super().__init__(
            f"store is in use by {who}: {path!r}. DuckDB lets one process open a store "
            "for writing. Wait for that run to finish (or stop it), or watch it with "
            "`batchkit status` once it has finished; use another store path for a separate batch."
        )


class StoreVersionError(StoreError):
    """The store was written by a newer batchkit whose schema this version cannot read.

    Example:
        >>> "Upgrade batchkit" in str(StoreVersionError("a.duckdb", found=9, supported=1))
        True
    """

    def __init__(self, path: str, *, found: int, supported: int) -> None:
        self.path = path
        self.found = found
        self.supported = supported
        super().__init__(
            f"store {path!r} has schema version {found}, written by a newer batchkit; this "
            f"batchkit reads versions up to {supported}. Upgrade batchkit "
            "(pip install -U batchkit) to open it."
        )


class Transient(BatchkitError):
    """Raise inside your function to mark a row's error as transient: it is retried.

    Args:
        message: what went wrong.
        retry_after: seconds to wait at least before the next attempt (like HTTP Retry-After).

    Example:
        >>> def enrich(row):
        ...     raise Transient("search API busy", retry_after=2.0)
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Permanent(BatchkitError):
    """Raise inside your function to fail a row at once, without retries.

    Example:
        >>> def enrich(row):
        ...     raise Permanent(f"no such company: {row['company']}")
    """


class ItemTimeout(Transient, TimeoutError):
    """A row ran longer than the run's ``timeout`` (stored as that row's error; transient).

    On the processes backend the row is interrupted; on the threads backend its
    thread is abandoned (Python cannot stop a thread) and its late result ignored.

    Example:
        >>> issubclass(ItemTimeout, TimeoutError)
        True
    """
