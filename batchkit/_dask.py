"""The Dask backend: chunks run on a Dask cluster, for when one machine is not enough.

Three ways to point a run at a cluster (``backend=`` of ``Batch.run``)::

    batch.run(fn, backend="dask")                      # the default Dask client, if one
                                                       # is open; else a LocalCluster of
                                                       # `workers` one-thread processes,
                                                       # started for the run, closed after
    batch.run(fn, backend="dask://10.0.0.5:8786")      # the scheduler at that address
                                                       # (tcp:// is assumed; tls://... works)

Optional: ``pip install 'batchkit[dask]'``. ``import batchkit`` never imports Dask; a
run asking for it without it installed fails with a ``ConfigError`` before any work.

How the engine's guarantees carry over (the driver, as ever, is the only writer of
the store; workers get plain rows and hand back results):

- **Chunks, not rows**, go to Dask: one task per chunk (``client.submit``), results
  taken as they finish (``distributed.as_completed``), never joblib's Dask backend
  (FACTS: a ``KilledWorker`` makes its ``Parallel`` hang forever).
- **A worker that dies** (segfault, OOM kill, ``os._exit``) fails the chunks it held
  with ``KilledWorker``; the other workers go on. batchkit's own attempts rule: the
  LocalCluster it starts has ``distributed.scheduler.allowed-failures: 0``, so Dask
  does not re-run the chunk itself; the driver re-runs its rows alone, and only the
  row that kills a worker again is charged an attempt (as with ``processes``).
- **Per-row timeout**: Dask runs tasks in non-main threads, where no signal reaches.
  A row past ``timeout`` fails with ``ItemTimeout`` at once and its late result is
  fenced (the chunk goes on in a fresh thread, as with ``threads``); then batchkit
  raises ``ItemTimeout`` inside the abandoned thread (``PyThreadState_SetAsyncExc``),
  which stops Python code right away and a blocking C call (``sleep``, a socket read)
  as soon as it returns. A C call that never returns and holds the GIL cannot be
  stopped (``processes`` kills such a worker).
- **A dead driver's workers start no new work**: Dask forgets the tasks of a client
  that went away (a LocalCluster dies with its driver), and a running chunk checks
  between rows that its task is still wanted, so it stops within about 0.25 s.
- **Rate limits** are split across the cluster's worker processes: each gets
  ``limit / processes`` (``RateLimit.split``), shared by the threads of that process.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from . import _worker
from ._errors import BatchkitError, ConfigError, ItemTimeout
from ._executors import Executor
from ._worker import ChunkResult, ChunkTask, _result, run_chunk

__all__ = ["DaskExecutor", "default_workers", "is_dask", "require_dask", "scheduler_address"]

PIP_INSTALL = "pip install 'batchkit[dask]'"
_PREFIX = "dask://"
_CONNECT_TIMEOUT_S = 10
_SCATTER_BYTES = 4 * 1024 * 1024  # bigger chunk payloads go to a worker, not via the scheduler
_STOP_GRACE_S = 0.2  # an abandoned row is stopped this long after its timeout
_STOP_AGAIN_S = 1.0  # and again every second while it swallows the exception
_LOG = logging.getLogger("batchkit")


def is_dask(backend: str) -> bool:
    """Whether ``backend`` names the Dask backend (``"dask"`` or ``"dask://ADDRESS"``)."""
    return backend == "dask" or backend.startswith(_PREFIX)


def scheduler_address(backend: str) -> str | None:
    """The scheduler address in ``"dask://ADDRESS"`` (``tcp://`` when none is given).

    Example:
        >>> scheduler_address("dask://10.0.0.5:8786"), scheduler_address("dask")
        ('tcp://10.0.0.5:8786', None)
    """
    if not backend.startswith(_PREFIX):
        return None
    address = backend[len(_PREFIX):].strip()
    if not address:
        raise ConfigError(f"backend {backend!r} names no scheduler: write 'dask' (a cluster "
                          "for the run, or the default Dask client) or 'dask://HOST:PORT'")
    return address if "://" in address else f"tcp://{address}"


def require_dask() -> None:
    """Raise ConfigError (saying what to install) unless Dask's distributed is importable."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"backend='dask' needs Dask's distributed scheduler, which is not installed "
            f"({exc}). Install it with: {PIP_INSTALL}") from None


def default_workers(backend: str) -> int:
    """Workers when none are given: the cluster's threads, or one process per CPU.

    For ``"dask://ADDRESS"`` this connects to the scheduler, so an unreachable address
    fails here, before any work.
    """
    address = scheduler_address(backend)
    if address is not None:
        client = _connect(address)
        try:
            return _threads(client)
        finally:
            client.close()
    client = _default_client()
    if client is not None:
        return _threads(client)
    return os.cpu_count() or 1


def _threads(client: Any) -> int:
    return max(1, sum(client.nthreads().values()))


def _connect(address: str) -> Any:
    from distributed import Client

    try:
        return Client(address, set_as_default=False, timeout=_CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address!r} ({type(exc).__name__}: {exc}). "
            "Is it running (`dask scheduler`) and is the address right?") from None


def _default_client() -> Any:
    """The default Dask client of this process (the last ``Client()`` made), or None."""
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:
        return None
    if getattr(client, "asynchronous", False) or client.status != "running":
        return None
    return client


@dataclass(frozen=True)
class _Unloadable:
    """A worker could not load a chunk task (missing module, other batchkit version)."""

    error: str


class DaskExecutor(Executor):
    """Runs chunks as Dask tasks; a crashing row costs one worker, not the run."""

    name = "dask"
    isolates_crashes = True
    shares_memory = False
    crash_fails_all = False

    def __init__(self, workers: int, *, address: str | None = None) -> None:
        super().__init__(workers)
        import dask
        from distributed import Client, LocalCluster, as_completed

        self._cluster: Any = None
        self._owns_client = True
        if address is not None:
            self._client = _connect(address)
        elif (current := _default_client()) is not None:
            self._client = current
            self._owns_client = False
        else:
            # allowed-failures 0: a task whose worker died fails at once with KilledWorker,
            # so batchkit's attempts (not Dask's retries) decide what runs again; the
            # preload (dask_setup below) keeps a terminal's Ctrl-C to the driver
            with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                                  "distributed.worker.preload": [__name__]}):
                self._cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    dashboard_address=":0", silence_logs=logging.ERROR)
            self._client = Client(self._cluster, set_as_default=False)
        if self._cluster is None:
            self._warn_allowed_failures()
        self.processes = max(1, len(self._client.nthreads()))  # shares of a rate limit
        self._ac = as_completed(loop=self._client.loop, with_results=True, raise_errors=False)
        self._pending: dict[Any, tuple[cf.Future[ChunkResult], pl.DataFrame]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._pump = threading.Thread(target=self._pump_results, name="batchkit-dask",
                                      daemon=True)
        self._pump.start()

    def _warn_allowed_failures(self) -> None:
        try:
            allowed = self._client.run_on_scheduler(_allowed_failures)
        except Exception:  # noqa: BLE001 - a hint only
            return
        if allowed:
            _LOG.warning(
                "the Dask scheduler has allowed-failures=%s: a chunk whose worker dies is "
                "re-run by Dask up to %s more times before batchkit sees the crash. Start "
                "the scheduler with distributed.scheduler.allowed-failures: 0 so only "
                "batchkit's attempts count.", allowed, allowed)

    def submit(self, task: ChunkTask) -> cf.Future[ChunkResult]:
        """Send the chunk to the cluster; the future settles when its task ends."""
        import cloudpickle

        import batchkit

        task.driver_pid = None  # the worker's parent is a nanny: _DriverWatch does this
        task.processes = self.processes
        payload = cloudpickle.dumps(task)
        arg: Any = payload
        if len(payload) > _SCATTER_BYTES:  # straight to a worker, not through the scheduler
            arg = self._client.scatter(payload, hash=False)
        future = self._client.submit(_run_remote, arg, batchkit.__version__, pure=False,
                                     key=f"batchkit-chunk-{os.urandom(8).hex()}")
        result: cf.Future[ChunkResult] = cf.Future()
        with self._lock:
            self._pending[future] = (result, task.frame.select("_id", "_key", "_attempts"))
        self._ac.add(future)
        self._wake.set()
        return result

    def is_crash(self, exc: BaseException) -> bool:
        """Only a dead worker (``KilledWorker``) is a crash; other errors end the run."""
        from distributed.scheduler import KilledWorker

        return isinstance(exc, KilledWorker)

    def _pump_results(self) -> None:
        ac = self._ac
        while True:
            if ac.is_empty():
                if self._closed:
                    return
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                future, value = next(ac)
            except StopIteration:
                continue
            self._settle(future, value)

    def _settle(self, future: Any, value: Any) -> None:
        with self._lock:
            entry = self._pending.pop(future, None)
        if entry is None:
            return
        result, rows = entry
        status = future.status
        if status == "finished" and isinstance(value, ChunkResult):
            outcome: ChunkResult | BaseException = value
        elif status == "finished" and isinstance(value, _Unloadable):
            outcome = ConfigError(
                f"the Dask workers cannot run batchkit's chunks: {value.error}. Every worker "
                "needs batchkit (the same version) and the module of your function installed; "
                "or define the function in your script or notebook so it travels by value.")
        elif status == "error" and isinstance(value, tuple) and len(value) == 3:
            exc = value[1]
            outcome = exc if self.is_crash(exc) else BatchkitError(
                f"a Dask chunk task failed outside batchkit's control "
                f"({type(exc).__name__}: {exc}); finished rows are saved, run again to resume")
        else:  # cancelled (by the run, or the scheduler lost our client): never ran here
            outcome = _not_started(rows)
        if result.done():
            return
        if isinstance(outcome, BaseException):
            result.set_exception(outcome)
        else:
            result.set_result(outcome)

    def shutdown(self, *, kill: bool = False) -> None:
        """Cancel what is left, then close the client and cluster this run opened.

        A cancelled chunk already running stops at its next check between rows.
        """
        if self._closed:
            return
        self._closed = True
        with self._lock:
            left = list(self._pending.items())
            self._pending.clear()
        if left:
            with contextlib.suppress(Exception):  # the cluster may be gone already
                self._client.cancel([f for f, _ in left])
        for _, (result, rows) in left:
            if not result.done():
                result.set_result(_not_started(rows))
        self._wake.set()
        self._pump.join(timeout=2.0)
        if self._owns_client:
            self._client.close(timeout=_CONNECT_TIMEOUT_S)
        if self._cluster is not None:
            self._cluster.close(timeout=_CONNECT_TIMEOUT_S)


def _allowed_failures(dask_scheduler: Any) -> int:
    return int(dask_scheduler.allowed_failures)


def _not_started(rows: pl.DataFrame) -> ChunkResult:
    ids: list[int] = rows["_id"].to_list()
    return _result(ids, rows["_attempts"].to_list(), rows["_key"].to_list(), 0, [], {}, [],
                   [], ids)


# -- on the worker -----------------------------------------------------------------------


def dask_setup(worker: Any) -> None:
    """Preload hook of the workers of batchkit's own LocalCluster: ignore Ctrl-C.

    The workers share the driver's process group, so a terminal's Ctrl-C reaches them
    too; killed by it, they would fail their chunks as crashes while the driver is
    stopping. The driver alone handles Ctrl-C: it cancels their chunks and closes them.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_remote(payload: bytes, version: str) -> ChunkResult | _Unloadable:
    """The Dask task: load the chunk task, guard it, run it (never raises for a row)."""
    import cloudpickle

    import batchkit

    if version != batchkit.__version__:
        return _Unloadable(f"the worker has batchkit {batchkit.__version__}, the driver "
                           f"{version}")
    try:
        task: ChunkTask = cloudpickle.loads(payload)
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which stops the run
        return _Unloadable(f"{type(exc).__name__}: {exc}")
    _worker._PROCESS_SHARE = task.processes
    watch = _DriverWatch.for_this_task()
    if watch is not None:
        if watch.is_set():  # our client is gone: start nothing
            ids: list[int] = task.frame["_id"].to_list()
            return _result(ids, task.frame["_attempts"].to_list(),
                           task.frame["_key"].to_list(), 0, [], {}, [], [], ids)
        task.cancel = watch
    if task.timeout is not None and not hasattr(task.fn, "_run_chunk"):
        task.fn = _StopOverdue(task.fn, task.timeout)
    return run_chunk(task)


class _DriverWatch(threading.Event):
    """Set once this task is no longer wanted: its client went away, or it was cancelled.

    ``run_chunk`` checks it between rows (about every 0.25 s), as it checks the cancel
    event of threads and the parent pid of processes.
    """

    _GONE = ("closing", "closed", "failed")

    def __init__(self, worker: Any, key: Any) -> None:
        super().__init__()
        self._worker = worker
        self._key = key

    @classmethod
    def for_this_task(cls) -> _DriverWatch | None:
        """The watch of the task running in this thread, or None outside a Dask worker."""
        try:
            from distributed import get_worker

            worker = get_worker()
            return cls(worker, worker.get_current_task())
        except Exception:  # noqa: BLE001 - not in a worker: nothing to watch
            return None

    def is_set(self) -> bool:
        """Whether the task was cancelled or the worker lost its scheduler."""
        if super().is_set():
            return True
        try:
            ts = self._worker.state.tasks.get(self._key)
            gone = (ts is None or ts.state == "cancelled"
                    or getattr(self._worker.status, "value", "") in self._GONE)
        except Exception:  # noqa: BLE001 - when unsure, keep working
            return False
        if gone:
            self.set()
        return gone


class _StopOverdue:
    """Wraps the row function so a row abandoned at its timeout is also stopped.

    ``run_chunk`` runs each row in a helper thread (not the main thread: no signals) and
    abandons it after ``timeout``. A row still inside the function ``_STOP_GRACE_S``
    later gets ``ItemTimeout`` raised in its thread; its outcome was already recorded.
    """

    def __init__(self, fn: Callable[..., Any], timeout: float) -> None:
        self.fn = fn
        self.timeout = timeout
        self.__name__ = getattr(fn, "__name__", "row")

    def __call__(self, *args: Any) -> Any:
        ident = threading.get_ident()
        _watch_row(ident, time.monotonic() + self.timeout + _STOP_GRACE_S)
        try:
            return self.fn(*args)
        finally:
            _forget_row(ident)


_OVERDUE: dict[int, float] = {}  # thread id -> when to stop it
_OVERDUE_LOCK = threading.Lock()
_reaper: threading.Thread | None = None


def _watch_row(ident: int, deadline: float) -> None:
    global _reaper
    with _OVERDUE_LOCK:
        _OVERDUE[ident] = deadline
        if _reaper is None:
            _reaper = threading.Thread(target=_reap, name="batchkit-timeouts", daemon=True)
            _reaper.start()


def _forget_row(ident: int) -> None:
    with _OVERDUE_LOCK:
        _OVERDUE.pop(ident, None)


def _reap() -> None:
    """Raise ItemTimeout in rows past their deadline; exit after a second with none."""
    global _reaper
    idle = 0
    while True:
        time.sleep(0.05)
        now = time.monotonic()
        with _OVERDUE_LOCK:
            idle = 0 if _OVERDUE else idle + 1
            if idle >= 20:
                _reaper = None
                return
            for ident, deadline in list(_OVERDUE.items()):
                if now >= deadline:
                    _raise_in(ident, ItemTimeout)
                    _OVERDUE[ident] = now + _STOP_AGAIN_S


def _raise_in(ident: int, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in the thread ``ident`` at its next Python instruction."""
    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    if set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(exc_type)) > 1:
        set_async_exc(ctypes.c_ulong(ident), None)  # never more than one thread
