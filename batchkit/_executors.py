"""Executors: where chunks run. One small interface, several backends.

=============  ===========================  ===============  ====================
backend        runs chunks in               a crashing row   per-row timeout
=============  ===========================  ===============  ====================
sequential     the driver's own thread      kills the run    abandons a thread
threads        a thread pool (I/O work)     kills the run    abandons a thread
processes      loky worker processes (CPU)  fails that row   interrupts the row
dask           a Dask cluster (_dask.py)    fails that row   fails, then stops it
=============  ===========================  ===============  ====================

``sequential`` is the reference the others are tested against. Results come back
unordered (``concurrent.futures`` futures) so each chunk is checkpointed as soon as it
finishes.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ._errors import ConfigError
from ._worker import ChunkResult, ChunkTask, run_chunk

__all__ = ["BACKENDS", "Executor", "make_executor"]


class Executor(ABC):
    """Runs chunk tasks and hands back futures of ``ChunkResult``.

    Capability flags tell the runner what it may rely on.
    """

    name: ClassVar[str]
    #: a worker that dies (segfault, OOM) leaves the driver alive
    isolates_crashes: ClassVar[bool] = False
    #: tasks share the driver's memory (so a cancel event reaches them)
    shares_memory: ClassVar[bool] = True
    #: a dead worker fails every chunk in flight (loky); else only the chunks it held
    crash_fails_all: ClassVar[bool] = True

    def __init__(self, workers: int) -> None:
        self.workers = workers

    @abstractmethod
    def submit(self, task: ChunkTask) -> cf.Future[ChunkResult]:
        """Start a chunk; return its future."""

    def restart(self) -> None:  # noqa: B027 - optional hook
        """Get a working pool after a worker crash."""

    def is_crash(self, exc: BaseException) -> bool:
        """Whether a failed chunk future means a dead worker (else the run stops)."""
        return True

    @abstractmethod
    def shutdown(self, *, kill: bool = False) -> None:
        """Stop the pool; ``kill`` ends running work where the backend can."""


class SequentialExecutor(Executor):
    """Runs each chunk at once in the calling thread: the reference backend."""

    name = "sequential"

    def submit(self, task: ChunkTask) -> cf.Future[ChunkResult]:
        future: cf.Future[ChunkResult] = cf.Future()
        try:
            future.set_result(run_chunk(task))
        except BaseException as exc:  # noqa: BLE001 - surfaces through the future
            future.set_exception(exc)
        return future

    def shutdown(self, *, kill: bool = False) -> None:
        return None


class ThreadExecutor(Executor):
    """A thread pool: for I/O-bound rows (HTTP calls, model APIs)."""

    name = "threads"

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batchkit")

    def submit(self, task: ChunkTask) -> cf.Future[ChunkResult]:
        return self._pool.submit(run_chunk, task)

    def shutdown(self, *, kill: bool = False) -> None:
        # Running threads cannot be stopped; with kill we do not wait for them.
        self._pool.shutdown(wait=not kill, cancel_futures=True)


class ProcessExecutor(Executor):
    """loky worker processes (joblib's): for CPU-bound rows; survives crashing rows."""

    name = "processes"
    isolates_crashes = True
    shares_memory = False

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool: Any = None
        self.restart()

    def restart(self) -> None:
        from joblib.externals.loky import get_reusable_executor

        self._pool = get_reusable_executor(max_workers=self.workers, timeout=60)

    def submit(self, task: ChunkTask) -> cf.Future[ChunkResult]:
        try:
            future: cf.Future[ChunkResult] = self._pool.submit(run_chunk, task)
        except cf.BrokenExecutor as exc:
            # A worker died since the runner last looked: hand the crash back through
            # the future, like the chunks in flight, so the runner isolates suspects.
            future = cf.Future()
            future.set_exception(exc)
        return future

    def shutdown(self, *, kill: bool = False) -> None:
        if self._pool is not None and kill:
            self._pool.shutdown(wait=False, kill_workers=True)
            self._pool = None


BACKENDS: dict[str, type[Executor]] = {
    "sequential": SequentialExecutor,
    "threads": ThreadExecutor,
    "processes": ProcessExecutor,
}


def check_backend(backend: str) -> type[Executor]:
    """The executor class for a backend name, or a ConfigError listing the allowed names.

    ``"dask"`` and ``"dask://ADDRESS"`` need the optional Dask extra (see ``_dask``).
    """
    from . import _dask

    if _dask.is_dask(backend):
        _dask.scheduler_address(backend)  # a bad address fails here
        _dask.require_dask()
        return _dask.DaskExecutor
    if backend not in BACKENDS:
        raise ConfigError(
            f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)} "
            "(threads for I/O-bound rows, processes for CPU-bound rows), or 'dask' / "
            f"'dask://HOST:PORT' for a Dask cluster ({_dask.PIP_INSTALL})"
        )
    return BACKENDS[backend]


def sends_functions(backend: str) -> bool:
    """Whether the backend pickles the row function to other processes."""
    from ._dask import is_dask

    return backend == "processes" or is_dask(backend)


def default_workers(backend: str) -> int:
    """Worker count used when ``workers`` is not given."""
    from . import _dask

    if _dask.is_dask(backend):
        return _dask.default_workers(backend)
    cpus = os.cpu_count() or 1
    if backend == "threads":
        return min(32, cpus * 4)
    if backend == "processes":
        return cpus
    return 1


def make_executor(backend: str, workers: int) -> Executor:
    """Create the executor for ``backend`` with ``workers`` workers."""
    from . import _dask

    if _dask.is_dask(backend):
        return _dask.DaskExecutor(workers, address=_dask.scheduler_address(backend))
    return check_backend(backend)(workers)
