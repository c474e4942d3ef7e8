"""Read-only lookups of the step cache from workers, while the driver keeps writing.

Before a chunk is dispatched, the driver serves each row the steps it can skip
(``resolve_prefill``). That covers the unbroken chain of leading steps only: once a
step has to run, the inputs of the steps after it are known only in the worker. So
workers look those steps up in the store's cache themselves:

- **threads / sequential** share the driver's process: :class:`StoreCacheReader`
  reads the cache table on a cursor of its own per worker thread (DuckDB's MVCC lets
  it read committed entries while the driver commits);
- **processes** (and Dask workers on this machine) cannot open the store, which the
  driver holds: :class:`CacheServer` answers their lookups over a loopback socket,
  authenticated with a random key made for the run, and :class:`RemoteCacheReader`
  is the picklable client that travels with each chunk.

A lookup that fails for any reason counts as a miss: the cache saves calls, it never
decides outcomes.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Sequence
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

__all__ = ["CacheServer", "RemoteCacheReader", "StoreCacheReader"]

_SQL = ("SELECT input_hash, output FROM _batchkit_cache WHERE step = ? AND version = ? "
        "AND input_hash IN (SELECT unnest(?::VARCHAR[]))")


class StoreCacheReader:
    """Looks cached step outputs up in the store, on one cursor per calling thread."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._local = threading.local()
        self._cursors: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def lookup(self, step: str, version: str, hashes: Sequence[str]) -> dict[str, bytes]:
        """Pickled outputs of ``step`` for the input hashes found (missing ones absent)."""
        if not hashes or self._closed:
            return {}
        try:
            cur = getattr(self._local, "cursor", None)
            if cur is None:
                with self._store.lock:  # cursor() touches the driver's connection
                    cur = self._store.con.cursor()
                with self._lock:
                    self._cursors.append(cur)
                self._local.cursor = cur
            rows = cur.execute(_SQL, [step, version, list(hashes)]).fetchall()
        except Exception:  # noqa: BLE001 - a failed lookup is a miss
            return {}
        return {h: blob for h, blob in rows}

    def close(self) -> None:
        """Close every cursor (the driver calls it when the run ends)."""
        self._closed = True
        with self._lock:
            cursors, self._cursors = self._cursors, []
        for cur in cursors:
            with contextlib.suppress(Exception):  # closing is best effort
                cur.close()


class RemoteCacheReader:
    """The worker-side client of a :class:`CacheServer`; picklable, connects lazily."""

    def __init__(self, address: tuple[str, int], authkey: bytes) -> None:
        self.address = address
        self.authkey = authkey
        self._conn: Connection | None = None
        self._failed = False

    def __getstate__(self) -> dict[str, Any]:
        return {"address": self.address, "authkey": self.authkey}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["address"], state["authkey"])  # type: ignore[misc]

    def lookup(self, step: str, version: str, hashes: Sequence[str]) -> dict[str, bytes]:
        """Ask the driver for the cached outputs of these input hashes."""
        if not hashes or self._failed:
            return {}
        conn = _connection(self.address, self.authkey)
        if conn is None:
            self._failed = True
            return {}
        try:
            conn.send((step, version, list(hashes)))
            found: dict[str, bytes] = conn.recv()
            return found
        except Exception:  # noqa: BLE001 - the driver went away: a miss
            _drop(self.address)
            return {}


# one connection per driver address and worker process, reused across chunks
_CONNS: dict[tuple[tuple[str, int], bytes], Connection] = {}
_CONNS_LOCK = threading.Lock()


def _connection(address: tuple[str, int], authkey: bytes) -> Connection | None:
    with _CONNS_LOCK:
        conn = _CONNS.get((address, authkey))
        if conn is None:
            try:
                conn = Client(address, authkey=authkey)
            except Exception:  # noqa: BLE001 - unreachable (another machine) or gone
                return None
            for key in list(_CONNS):  # an earlier run's driver: let its server thread end
                with contextlib.suppress(OSError):
                    _CONNS.pop(key).close()
            _CONNS[(address, authkey)] = conn
        return conn


def _drop(address: tuple[str, int]) -> None:
    with _CONNS_LOCK:
        for key in [k for k in _CONNS if k[0] == address]:
            with contextlib.suppress(OSError):
                _CONNS.pop(key).close()


class CacheServer:
    """Answers cache lookups from worker processes for one run, on 127.0.0.1."""

    def __init__(self, store: Any) -> None:
        self._reader = StoreCacheReader(store)
        self._authkey = secrets.token_bytes(16)
        self._listener = Listener(("127.0.0.1", 0), authkey=self._authkey)
        self._conns: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="batchkit-cache",
                                        daemon=True)
        self._thread.start()

    def reader(self) -> RemoteCacheReader:
        """The client to send with each chunk."""
        address = self._listener.address
        assert isinstance(address, tuple)
        return RemoteCacheReader((str(address[0]), int(address[1])), self._authkey)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except Exception:  # noqa: BLE001 - closed, or a client failed the handshake
                if self._closed:
                    return
                continue
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), name="batchkit-cache-conn",
                             daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        try:
            while True:
                step, version, hashes = conn.recv()
                conn.send(self._reader.lookup(step, version, hashes))
        except Exception:  # noqa: BLE001 - the worker closed its end, or we did
            pass
        finally:
            conn.close()

    def close(self) -> None:
        """Stop answering and close every connection and cursor."""
        self._closed = True
        # wake the accept() call: closing the socket alone does not on Linux
        with contextlib.suppress(Exception):  # already gone
            Client(self.reader().address, authkey=self._authkey).close()
        self._thread.join(timeout=2)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()
        self._reader.close()
