"""Pooled HTTP clients: one per worker, made with sensible defaults, reused across rows.

A new ``httpx.Client`` per request is ~17x slower than a pooled one (FACTS.md: TLS
context set-up alone takes ~14 ms per client), so a row function should reuse one
client. ``ClientPool`` holds one per worker (per thread by default, or per process),
created on first use and closed by ``close()``.

Defaults: connect timeout 5 s, read and write 30 s, no pool timeout (the pool's
connection limit works as a concurrency limit: waiting callers are bounded by the
read timeouts of the callers ahead of them), ``max_connections`` and
``max_keepalive_connections`` both ``concurrency``, no redirects followed, a
``User-Agent: batchkit/<version>`` header, and one TLS context shared by every client
of the process (``httpx.Client()`` alone builds its own, 14-65 ms each).

Async clients: with the ``fast-http`` extra installed (``pip install
'batchkit[fast-http]'``, which brings ``httpx-aiohttp`` and ``aiohttp``), an async client
is ``httpx_aiohttp.HttpxAiohttpClient``: a subclass of ``httpx.AsyncClient`` (the same
API, the same exceptions) that sends through aiohttp's connection pool instead of
httpcore's. httpcore's async pool re-checks every connection on each request, so with
64-256 calls in flight ``httpx.AsyncClient`` spent 6-19 ms of CPU per call here against
~0.6 ms through aiohttp (benchmarks/http_io.py). Without the extra, or when a client
asks for ``http2`` or its own ``transport``, it is a plain ``httpx.AsyncClient``;
``async_factory`` overrides both.

Example:
    >>> from batchkit.testing import SimService
    >>> pool = ClientPool(concurrency=8)
    >>> with SimService() as svc:
    ...     pool.client().get(svc.url + "/health").json()
    {'ok': True}
    >>> pool.close()
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx

from ._errors import ConfigError

__all__ = ["DEFAULT_TIMEOUT", "USER_AGENT", "ClientFactory", "ClientPool", "async_client_class",
           "make_async_client", "make_client"]

try:
    USER_AGENT = f"batchkit/{version('batchkit')}"
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    USER_AGENT = "batchkit/0.0.0"

#: connect 5 s, read and write 30 s, no limit on waiting for a pooled connection
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=None)

_SCOPES = ("thread", "process")


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One default TLS context per process, shared by every client batchkit makes.

    ``httpx.Client()`` builds a fresh context each time (~14-65 ms, loading the CA
    bundle); sharing one makes a client cost ~0.3 ms, so one client per thread is cheap.
    """
    return httpx.create_ssl_context()


@functools.lru_cache(maxsize=1)
def _aiohttp_client() -> type[httpx.AsyncClient] | None:
    try:
        from httpx_aiohttp import HttpxAiohttpClient
    except ImportError:
        return None
    if not issubclass(HttpxAiohttpClient, httpx.AsyncClient):  # pragma: no cover - defensive
        return None
    return HttpxAiohttpClient  # type: ignore[no-any-return]


def async_client_class(options: Mapping[str, Any] | None = None) -> type[httpx.AsyncClient]:
    """The class batchkit makes async clients with (when no ``async_factory`` is given).

    ``httpx_aiohttp.HttpxAiohttpClient`` (an ``httpx.AsyncClient`` sending through
    aiohttp) if the ``fast-http`` extra is installed and ``options`` ask for neither
    ``http2`` (aiohttp speaks HTTP/1.1 only) nor a ``transport`` of their own; else
    ``httpx.AsyncClient``. Either way the client has httpx's API and exceptions.

    Example:
        >>> issubclass(async_client_class(), httpx.AsyncClient)
        True
        >>> async_client_class({"http2": True}) is httpx.AsyncClient
        True
    """
    options = options or {}
    if options.get("http2") or options.get("transport") is not None:
        return httpx.AsyncClient
    return _aiohttp_client() or httpx.AsyncClient


def _call_factory(factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call a user factory with batchkit's keyword arguments, or with none if it takes none."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some builtins have no signature: pass everything
        return factory(**kwargs)
    if not params:
        return factory()
    return factory(**_for_module(factory, kwargs))


def _for_module(factory: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Rebuild httpx's ``Timeout`` and ``Limits`` with the factory's own package.

    An API-compatible fork (``httpx2.AsyncClient``) has its own classes and refuses
    httpx's; plain functions and httpx's own clients get the arguments unchanged.
    """
    module = sys.modules.get((getattr(factory, "__module__", None) or "").split(".")[0])
    if module is None or module is httpx or not all(
            hasattr(module, n) for n in ("Timeout", "Limits")):
        return kwargs
    out = dict(kwargs)
    t = out.get("timeout")
    if isinstance(t, httpx.Timeout):
        out["timeout"] = module.Timeout(connect=t.connect, read=t.read, write=t.write,
                                        pool=t.pool)
    lim = out.get("limits")
    if isinstance(lim, httpx.Limits):
        out["limits"] = module.Limits(max_connections=lim.max_connections,
                                      max_keepalive_connections=lim.max_keepalive_connections,
                                      keepalive_expiry=lim.keepalive_expiry)
    return out


@dataclass(frozen=True)
class ClientFactory:
    """How to make this run's HTTP clients: pool size, timeouts, base URL, headers, auth.

    Args:
        concurrency: connections a client may hold (``max_connections`` and
            ``max_keepalive_connections``); size it to the calls you want in flight.
        base_url: prefix for relative URLs (``client.get("/search")``).
        headers: extra default headers (they win over the ``User-Agent`` default).
        auth: anything ``httpx`` takes as ``auth`` (a ``(user, password)`` pair, an
            ``httpx.Auth``).
        timeout: seconds for every phase, or an ``httpx.Timeout``; ``DEFAULT_TIMEOUT`` if None.
        factory: your own maker of sync clients, e.g. ``httpx2.Client``; it is called with
            the keyword arguments batchkit would pass to ``httpx.Client`` (see ``kwargs()``),
            or with none if it takes no parameters (then it configures everything itself).
        async_factory: the same for async clients; None picks ``async_client_class()``
            (aiohttp-backed with the ``fast-http`` extra, else ``httpx.AsyncClient``).
        options: more keyword arguments for the client (``verify``, ``transport``,
            ``http2``, ``proxy``, ...).

    Example:
        >>> f = ClientFactory(concurrency=32, base_url="http://127.0.0.1:9")
        >>> with f.client() as c:
        ...     c.headers["user-agent"].startswith("batchkit/"), c.timeout.read
        (True, 30.0)
    """

    concurrency: int = 10
    base_url: str = ""
    headers: Mapping[str, str] | None = None
    auth: Any = None
    timeout: float | httpx.Timeout | None = None
    factory: Callable[..., Any] | None = None
    async_factory: Callable[..., Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = self.concurrency
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ConfigError(f"concurrency must be a whole number >= 1, got {c!r}; it sizes "
                              "the connection pool (calls in flight at once)")
        t = self.timeout
        if t is not None and not isinstance(t, httpx.Timeout) and (
                isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0):
            raise ConfigError(f"timeout must be seconds > 0 or an httpx.Timeout, got {t!r}")
        for name in ("factory", "async_factory"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(f"{name} must be a callable that returns a client, "
                                  f"got {value!r}")
        clash = {"base_url", "headers", "auth", "timeout", "limits"} & set(self.options)
        if clash:
            raise ConfigError(f"pass {sorted(clash)} as ClientFactory arguments, not options")

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments a client is made with (also what ``factory`` receives).

        Example:
            >>> ClientFactory(concurrency=4).kwargs()["limits"].max_connections
            4
        """
        timeout = self.timeout
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        elif not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(float(timeout))
        kwargs: dict[str, Any] = {
            "timeout": timeout,
            "limits": httpx.Limits(max_connections=self.concurrency,
                                   max_keepalive_connections=self.concurrency),
            "headers": {"User-Agent": USER_AGENT, **(self.headers or {})},
            "follow_redirects": False,
        }
        if self.base_url:
            kwargs["base_url"] = self.base_url
        if self.auth is not None:
            kwargs["auth"] = self.auth
        if "verify" not in self.options:
            kwargs["verify"] = _ssl_context()  # shared: a client then costs ~0.3 ms to make
        kwargs.update(self.options)
        return kwargs

    def client(self) -> httpx.Client:
        """A new pooled sync client (the caller closes it).

        Example:
            >>> ClientFactory().client().close()
        """
        if self.factory is not None:
            return _call_factory(self.factory, self.kwargs())  # type: ignore[no-any-return]
        return httpx.Client(**self.kwargs())

    def async_client(self) -> httpx.AsyncClient:
        """A new pooled async client (the caller awaits ``aclose()``): made by
        ``async_factory``, else of ``async_client_class(options)``.

        Example:
            >>> import asyncio
            >>> asyncio.run(ClientFactory().async_client().aclose())
        """
        if self.async_factory is not None:
            return _call_factory(self.async_factory, self.kwargs())  # type: ignore[no-any-return]
        return async_client_class(self.options)(**self.kwargs())


def make_client(*, concurrency: int = 10, base_url: str = "",
                headers: Mapping[str, str] | None = None, auth: Any = None,
                timeout: float | httpx.Timeout | None = None,
                factory: Callable[..., Any] | None = None, **options: Any) -> httpx.Client:
    """A pooled ``httpx.Client`` with batchkit's defaults (see ``ClientFactory``).

    Example:
        >>> with make_client(concurrency=16, headers={"X-Team": "data"}) as c:
        ...     c.headers["x-team"], c.follow_redirects
        ('data', False)
    """
    return ClientFactory(concurrency=concurrency, base_url=base_url, headers=headers,
                         auth=auth, timeout=timeout, factory=factory,
                         options=options).client()


def make_async_client(*, concurrency: int = 10, base_url: str = "",
                      headers: Mapping[str, str] | None = None, auth: Any = None,
                      timeout: float | httpx.Timeout | None = None,
                      factory: Callable[..., Any] | None = None,
                      **options: Any) -> httpx.AsyncClient:
    """A pooled ``httpx.AsyncClient`` with batchkit's defaults (see ``ClientFactory``).

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with make_async_client(concurrency=256) as c:
        ...         return c.timeout.connect
        >>> asyncio.run(main())
        5.0
    """
    return ClientFactory(concurrency=concurrency, base_url=base_url, headers=headers,
                         auth=auth, timeout=timeout, async_factory=factory,
                         options=options).async_client()


class ClientPool:
    """One pooled client per worker: made on first use, reused across rows, closed at the end.

    ``client()`` gives the calling worker's ``httpx.Client``: one per thread by default
    (so one per worker on the threads backend, and one per process on the processes
    backend), or one per process shared by its threads with ``scope="process"``.
    ``async_client()`` gives one ``httpx.AsyncClient`` per event loop. A thread's client
    outlives the thread and passes to a later thread given the same thread id. A pool made at
    module level works in worker processes too: pickling keeps only its settings, and
    each process makes its own clients. After ``close()`` the pool can be used again
    (it makes new clients).

    Why per thread by default: httpcore's connection pool does work proportional to
    connections x requests under one lock on every request, so one client shared by 64
    threads spent 2.5-3 ms of CPU per request here against 1.7 ms with a client per
    thread (benchmarks/http_io.py). Clients share one TLS context, so each costs
    ~0.3 ms to make. Use ``scope="process"`` when the pool's ``concurrency`` must cap
    the connections of all threads together.

    Args:
        factory: a ``ClientFactory``; or a callable that makes sync clients (as
            ``ClientFactory(factory=...)``) with the other ``ClientFactory`` arguments as
            keywords; or None and those keywords.
        scope: ``"thread"`` (default) or ``"process"``.

    Example:
        >>> from batchkit.testing import SimService
        >>> pool = ClientPool(concurrency=4)
        >>> with SimService() as svc, pool:
        ...     a = pool.client(); b = pool.client()
        ...     a is b, a.get(svc.url + "/health").status_code
        (True, 200)
        >>> a.is_closed
        True
    """

    def __init__(self, factory: ClientFactory | Callable[..., Any] | None = None, *,
                 scope: str = "thread", **settings: Any) -> None:
        if scope not in _SCOPES:
            raise ConfigError(f"scope must be one of {list(_SCOPES)}, got {scope!r}")
        if isinstance(factory, ClientFactory):
            if settings:
                raise ConfigError("pass either a ClientFactory or its arguments, not both: "
                                  f"got a ClientFactory and {sorted(settings)}")
        else:
            allowed = set(ClientFactory.__dataclass_fields__) - {"factory"}
            unknown = set(settings) - allowed
            if unknown:
                raise ConfigError(f"unknown ClientPool arguments {sorted(unknown)}; allowed: "
                                  f"{sorted(allowed)} (httpx options go in options={{...}})")
            factory = ClientFactory(factory=factory, **settings)
        self.factory = factory
        self.scope = scope
        self._init()

    def _init(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[int, int], httpx.Client] = {}
        self._async: dict[tuple[int, int], tuple[asyncio.AbstractEventLoop,
                                                 httpx.AsyncClient]] = {}
        self.created = 0

    def _key(self) -> tuple[int, int]:
        return (os.getpid(), threading.get_ident() if self.scope == "thread" else 0)

    def client(self) -> httpx.Client:
        """This worker's sync client, made on first use.

        Example:
            >>> with ClientPool() as pool:
            ...     pool.client() is pool.client()
            True
        """
        key = self._key()
        client = self._clients.get(key)
        if client is None or client.is_closed:
            with self._lock:
                client = self._clients.get(key)
                if client is None or client.is_closed:
                    client = self.factory.client()
                    self._clients[key] = client
                    self.created += 1
        return client

    def async_client(self) -> httpx.AsyncClient:
        """The async client of the running event loop, made on first use (call it in a loop).

        Example:
            >>> import asyncio
            >>> async def main(pool):
            ...     same = pool.async_client() is pool.async_client()
            ...     await pool.aclose()
            ...     return same
            >>> asyncio.run(main(ClientPool()))
            True
        """
        loop = asyncio.get_running_loop()
        key = (os.getpid(), id(loop))
        entry = self._async.get(key)
        if entry is None or entry[0] is not loop or entry[1].is_closed:
            with self._lock:
                entry = self._async.get(key)
                if entry is None or entry[0] is not loop or entry[1].is_closed:
                    entry = (loop, self.factory.async_client())
                    self._async[key] = entry
                    self.created += 1
        return entry[1]

    def close(self) -> None:
        """Close every client this process made. Async clients of a loop that is not running
        are closed on it; of a loop running in another thread, through that loop; of a closed
        loop, dropped (their sockets close with the loop).

        Example:
            >>> pool = ClientPool(); c = pool.client(); pool.close(); c.is_closed
            True
        """
        pid = os.getpid()
        with self._lock:
            clients = [c for k, c in self._clients.items() if k[0] == pid]
            entries = [e for k, e in self._async.items() if k[0] == pid]
            self._clients.clear()
            self._async.clear()
        for c in clients:
            c.close()
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, ac in entries:
            if loop.is_closed() or ac.is_closed:
                continue
            if loop is current:
                loop.create_task(ac.aclose())  # cannot block inside the loop: schedule it
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(ac.aclose(), loop).result(timeout=10)
            elif current is not None:  # this thread runs another loop (Jupyter): not here
                run_off_thread(loop, ac.aclose())
            else:
                loop.run_until_complete(ac.aclose())

    async def aclose(self) -> None:
        """Close every client, awaiting the async clients of the running loop.

        Example:
            >>> import asyncio
            >>> asyncio.run(ClientPool().aclose())
        """
        loop = asyncio.get_running_loop()
        pid = os.getpid()
        with self._lock:
            mine = [k for k, (lp, _) in self._async.items() if k[0] == pid and lp is loop]
            entries = [self._async.pop(k) for k in mine]
        for _, ac in entries:
            await ac.aclose()
        self.close()

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"factory": self.factory, "scope": self.scope}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.factory = state["factory"]
        self.scope = state["scope"]
        self._init()

    def __repr__(self) -> str:
        return (f"ClientPool(scope={self.scope!r}, concurrency={self.factory.concurrency}, "
                f"open={len(self._clients) + len(self._async)})")


def run_off_thread(loop: asyncio.AbstractEventLoop, coro: Any) -> None:
    """Run ``coro`` to the end on the idle ``loop`` from a helper thread.

    ``loop.run_until_complete`` refuses to run in a thread that already runs an event
    loop (a Jupyter kernel's main thread), so closing a worker's loop or its clients
    from there goes through a short-lived thread.
    """
    done = threading.Thread(target=loop.run_until_complete, args=(coro,),
                            name="batchkit-close-loop", daemon=True)
    done.start()
    done.join(timeout=10)
