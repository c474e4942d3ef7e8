"""I/O efficiency: 2,000 HTTP calls of 20 ms against the local simulated API.

Ideal time = items x latency / concurrency (2,000 x 20 ms / 64 = 0.625 s). Each job is
timed from a cold start (clients made, connections opened, every call answered);
"% of ideal" is ideal / measured. Target (issue 3): batchkit >= 85% at 64 concurrent
threads, and its async steps >= 85% at 256 in flight.

Threads, 64 at once:

* baseline: ``ThreadPoolExecutor(64)`` + one shared pooled ``httpx.Client``.
* batchkit: ``Batch`` on a store file, ``run(fn, workers=64, backend="threads")``, ``fn``
  calling through a module-level ``ClientPool`` (a client per worker thread, the
  default; and ``scope="process"``, one shared client like the baseline). Timed:
  ``run`` only; ``add`` is shown apart.
* for reading the figures: the baseline with a client per thread; both the baseline and
  batchkit with a minimal keep-alive HTTP/1.1 client on raw sockets (what the machine,
  the server and the engine allow without an HTTP library's CPU cost); and
  ``httpx.Client`` on a transport that only sleeps the latency (no network, no HTTP
  parsing: the ceiling of any client with httpx's API, whatever its transport).
  ``httpx2``'s Client too if it is importable (``PYTHONPATH`` to an install of it).

Async, 256 in flight (ideal 0.156 s): a raw-asyncio HTTP/1.1 client (the baseline);
``httpx.AsyncClient`` + a semaphore; ``httpx_aiohttp.HttpxAiohttpClient`` (the
``fast-http`` extra: an ``httpx.AsyncClient`` sending through aiohttp) and plain aiohttp
if importable; ``httpx2``'s if importable; the httpx async API on a sleeping transport
(its ceiling); batchkit's async step with ``ctx.ahttp`` as batchkit makes it (aiohttp-backed
with the extra) and forced to ``httpx.AsyncClient``; and batchkit's async step without
HTTP (``asyncio.sleep(latency)``: the engine's own ceiling).

The server (``python -m batchkit._simservice --server asyncio``) runs in its own
process, so it does not share the client's GIL; ``--server threads`` uses the stdlib
threaded server instead, ``--in-process`` a thread of this process.

    python benchmarks/http_io.py                 # 2,000 items, 3 rounds
    python benchmarks/http_io.py --quick         # 400 items, 1 round (smoke)
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import _common as c
import httpx
import polars as pl

import batchkit as bk
from batchkit._http import ClientFactory, ClientPool, _ssl_context, async_client_class
from batchkit.testing import SimService

TARGET = 0.85
LATENCY = 0.02  # seconds per call (set from --latency)
POOL: ClientPool | None = None  # the batchkit jobs' module-level pool (set per job)
RAW: RawHTTP | None = None  # the raw-socket jobs' client (set per job)


class Server:
    """The simulated API, in a child process (default) or a thread of this one."""

    def __init__(self, latency: float, *, in_process: bool, kind: str = "asyncio") -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.svc: SimService | None = None
        if in_process:
            self.svc = SimService(latency=latency, server=kind)
            self.url = self.svc.url
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batchkit._simservice", "--latency", str(latency),
                 "--server", kind], stdout=subprocess.PIPE, text=True)
            assert self.proc.stdout is not None
            self.url = self.proc.stdout.readline().strip()
            if not self.url.startswith("http://127.0.0.1:"):
                raise SystemExit(f"the simulated API did not start: {self.url!r}")

    def reset(self) -> None:
        httpx.delete(self.url + "/stats")

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/stats").json()  # type: ignore[no-any-return]

    def cpu(self) -> float:
        """CPU seconds the server process used so far (0 when in process)."""
        if self.proc is None:
            return 0.0
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.svc is not None:
            self.svc.close()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


class RawHTTP:
    """A minimal keep-alive HTTP/1.1 GET client: one socket per thread, no library."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._local = threading.local()
        self._socks: list[socket.socket] = []

    def get_json(self, path: str) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            sock = socket.create_connection((self.host, self.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks.append(sock)
            conn = self._local.conn = (sock, sock.makefile("rb"))
        sock, f = conn
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        status = f.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"bad answer {status!r}")
        length = 0
        while (line := f.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return json.loads(f.read(length))

    def close(self) -> None:
        for s in self._socks:
            s.close()


# -- the jobs: each returns (seconds, note) ---------------------------------------------------


def _search_path(name: str) -> str:
    return "/search?q=" + quote(name)


class SleepTransport(httpx.BaseTransport):
    """Answers every request like /search after sleeping the latency: no network, no HTTP."""

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        time.sleep(self.latency)
        return httpx.Response(200, json={"domain": request.url.params["q"]})


class AsyncSleepTransport(httpx.AsyncBaseTransport):
    """The async ``SleepTransport``."""

    def __init__(self, latency: float) -> None:
        self.latency = latency

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.latency)
        return httpx.Response(200, json={"domain": request.url.params["q"]})


def threads_baseline(url: str, names: list[str], n: int, *, per_thread: bool = False,
                     module: Any = httpx, transport: Any = None) -> tuple[float, str]:
    """ThreadPoolExecutor + one shared pooled client (or one client per thread).

    The shared client is made before the clock starts (its TLS context alone takes tens
    of ms); per-thread clients share one context made before the clock starts too.
    """
    limits = module.Limits(max_connections=n, max_keepalive_connections=n)
    shared = module.Client(base_url=url, limits=limits, transport=transport)
    ssl_context = httpx.create_ssl_context()
    local = threading.local()
    made: list[Any] = []

    def client() -> Any:
        if not per_thread:
            return shared
        cl = getattr(local, "client", None)
        if cl is None:
            cl = local.client = httpx.Client(base_url=url, verify=ssl_context)
            made.append(cl)
        return cl

    t0 = time.perf_counter()

    def call(name: str) -> str:
        r = client().get("/search", params={"q": name})
        r.raise_for_status()
        return r.json()["domain"]  # type: ignore[no-any-return]

    with cf.ThreadPoolExecutor(n) as pool:
        out = list(pool.map(call, names))
    seconds = time.perf_counter() - t0
    for cl in [shared, *made]:
        cl.close()
    assert len(out) == len(names)
    return seconds, "no server calls" if transport is not None else ""


def raw_threads(url: str, names: list[str], n: int) -> tuple[float, str]:
    """ThreadPoolExecutor + the raw-socket client."""
    t0 = time.perf_counter()
    raw = RawHTTP(url)
    with cf.ThreadPoolExecutor(n) as pool:
        out = list(pool.map(lambda name: raw.get_json(_search_path(name))["domain"], names))
    raw.close()
    assert len(out) == len(names)
    return time.perf_counter() - t0, ""


def search(row: dict[str, Any]) -> dict[str, Any]:
    """The batchkit row function: one GET through the module-level ClientPool."""
    assert POOL is not None
    r = POOL.client().get("/search", params={"q": row["company"]})
    r.raise_for_status()
    return {"domain": r.json()["domain"]}


def search_raw(row: dict[str, Any]) -> dict[str, Any]:
    """The batchkit row function on the raw-socket client."""
    assert RAW is not None
    return {"domain": RAW.get_json(_search_path(row["company"]))["domain"]}


def batchkit_threads(url: str, names: list[str], n: int, *, fn: Callable[..., Any] = search,
                     scope: str = "thread", chunk_size: int | None = None) -> tuple[float, str]:
    """bk.Batch + run(workers=n, backend="threads")."""
    global POOL, RAW
    POOL = ClientPool(concurrency=n, base_url=url, scope=scope)
    RAW = RawHTTP(url)
    with tempfile.TemporaryDirectory() as tmp:
        batch = bk.Batch("http_io", store=Path(tmp) / "store.duckdb")
        t0 = time.perf_counter()
        batch.add(pl.DataFrame({"company": names}), key="company")
        t1 = time.perf_counter()
        report = batch.run(fn, workers=n, backend="threads", chunk_size=chunk_size,
                           progress=False)
        t2 = time.perf_counter()
        done = batch.counts()["done"]
        batch.close()
    POOL.close()
    RAW.close()
    if report.outcome != "completed" or done != len(names):
        raise SystemExit(f"batchkit run did not finish every row: {report}")
    return t2 - t1, f"add {t1 - t0:.2f} s"


async def _search_async(row: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """The batchkit async step: one GET through ``ctx.ahttp``."""
    r = await ctx.ahttp.get("/search", params={"q": row["company"]})
    r.raise_for_status()
    return {"domain": r.json()["domain"]}


async def _sleep_async(row: dict[str, Any]) -> dict[str, Any]:
    """The batchkit async step without HTTP: only the latency (the engine's ceiling)."""
    await asyncio.sleep(LATENCY)
    return {"domain": row["company"]}


def batchkit_async(url: str, names: list[str], n: int, async_factory: Any = None, *,
                   http: bool = True) -> tuple[float, str]:
    """bk.Batch + an async step with ``concurrency=n`` on one worker (one event loop).

    ``async_factory`` (e.g. ``httpx.AsyncClient``) makes ``ctx.ahttp`` through
    ``ClientFactory(async_factory=...)``; None: batchkit's choice
    (``async_client_class()``). ``http=False``: the step only sleeps the latency.
    """
    factory = ClientFactory(concurrency=n, base_url=url, async_factory=async_factory)
    fn = _search_async if http else _sleep_async
    step = bk.step("search", concurrency=n, http=factory, cache=False)(fn)
    with tempfile.TemporaryDirectory() as tmp:
        batch = bk.Batch("http_async", store=Path(tmp) / "store.duckdb")
        batch.add(pl.DataFrame({"company": names}), key="company")
        t0 = time.perf_counter()
        report = batch.run(bk.pipeline(step), workers=1, chunk_size=len(names),
                           backend="threads", progress=False)
        elapsed = time.perf_counter() - t0
        done = batch.counts()["done"]
        batch.close()
    if report.outcome != "completed" or done != len(names):
        raise SystemExit(f"batchkit async run did not finish every row: {report}")
    return elapsed, "one chunk, one event loop"


async def _client_async(module: Any, url: str, names: list[str], n: int,
                        cls: Any = None, transport: Any = None) -> None:
    sem = asyncio.Semaphore(n)
    limits = module.Limits(max_connections=n, max_keepalive_connections=n)
    cls = cls or module.AsyncClient
    async with cls(base_url=url, limits=limits, transport=transport) as client:

        async def call(name: str) -> str:
            async with sem:
                r = await client.get("/search", params={"q": name})
                r.raise_for_status()
                return r.json()["domain"]  # type: ignore[no-any-return]

        out = await asyncio.gather(*(call(name) for name in names))
    assert len(out) == len(names)


def client_async(url: str, names: list[str], n: int, module: Any = httpx, cls: Any = None,
                 transport: Any = None) -> tuple[float, str]:
    """asyncio + an AsyncClient (httpx, a subclass, or an API-compatible fork) + a semaphore."""
    t0 = time.perf_counter()
    asyncio.run(_client_async(module, url, names, n, cls, transport))
    return time.perf_counter() - t0, "no server calls" if transport is not None else ""


async def _aiohttp_async(url: str, names: list[str], n: int) -> None:
    import aiohttp

    sem = asyncio.Semaphore(n)
    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(base_url=url, connector=connector) as session:

        async def call(name: str) -> str:
            async with sem, session.get("/search", params={"q": name}) as r:
                r.raise_for_status()
                return (await r.json())["domain"]  # type: ignore[no-any-return]

        out = await asyncio.gather(*(call(name) for name in names))
    assert len(out) == len(names)


def aiohttp_async(url: str, names: list[str], n: int) -> tuple[float, str]:
    """asyncio + plain aiohttp (not the httpx API): what aiohttp costs by itself."""
    t0 = time.perf_counter()
    asyncio.run(_aiohttp_async(url, names, n))
    return time.perf_counter() - t0, ""


async def _raw_async(url: str, names: list[str], n: int) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    todo = iter(names)
    answered = 0

    async def worker() -> None:
        nonlocal answered
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for name in todo:
                writer.write(f"GET {_search_path(name)} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                             .encode())
                status = await reader.readline()
                if b" 200 " not in status:
                    raise RuntimeError(f"bad answer {status!r}")
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                json.loads(await reader.readexactly(length))
                answered += 1
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(n)))
    assert answered == len(names)


def raw_async(url: str, names: list[str], n: int) -> tuple[float, str]:
    """A hand-written keep-alive HTTP/1.1 client on asyncio streams: the async baseline."""
    t0 = time.perf_counter()
    asyncio.run(_raw_async(url, names, n))
    return time.perf_counter() - t0, ""


# -- main ----------------------------------------------------------------------------------------


@dataclass
class Job:
    name: str
    concurrency: int
    run: Callable[[], tuple[float, str]]
    rounds: int | None = None  # at most this many rounds (None: all)
    served: bool = True  # False: the job makes no calls to the server (a ceiling)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _optional(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        return None


def main() -> None:
    global LATENCY
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=None, help="calls per job (default 2,000)")
    p.add_argument("--latency", type=float, default=0.02, help="seconds per call")
    p.add_argument("--concurrency", type=int, default=64, help="threads jobs (default 64)")
    p.add_argument("--async-concurrency", type=int, default=256)
    p.add_argument("--rounds", type=int, default=None, help="repeats (default 3)")
    p.add_argument("--chunk-sizes", default="",
                   help="also run batchkit with these fixed chunk sizes, e.g. 1,4,16")
    p.add_argument("--no-async", action="store_true", help="skip the async jobs")
    p.add_argument("--no-threads", action="store_true", help="skip the threads jobs")
    p.add_argument("--slow-rounds", type=int, default=1,
                   help="rounds of the slow httpx.AsyncClient jobs (default 1)")
    p.add_argument("--server", choices=("asyncio", "threads"), default="asyncio",
                   help="SimService's server (default asyncio: it costs the least CPU)")
    p.add_argument("--in-process", action="store_true", help="serve from a thread of this "
                   "process (it then shares the GIL with the client)")
    p.add_argument("--quick", action="store_true", help="400 items, 1 round")
    a = p.parse_args()
    LATENCY = a.latency
    items = a.items or (400 if a.quick else 2000)
    rounds = a.rounds or (1 if a.quick else 3)
    names = [f"Company {i}" for i in range(items)]
    _ssl_context()  # the pool's shared TLS context, made once per process: not timed
    server = Server(a.latency, in_process=a.in_process, kind=a.server)
    url, n, k, lat = server.url, a.concurrency, a.async_concurrency, a.latency
    httpx2, aiohttp = _optional("httpx2"), _optional("aiohttp")
    fast = _optional("httpx_aiohttp")
    slow = a.slow_rounds

    jobs = [
        Job("baseline: ThreadPoolExecutor + shared httpx.Client", n,
            lambda: threads_baseline(url, names, n)),
        Job("batchkit threads + ClientPool (client per thread)", n,
            lambda: batchkit_threads(url, names, n)),
        Job("batchkit threads + ClientPool(scope='process')", n,
            lambda: batchkit_threads(url, names, n, scope="process")),
        Job("ThreadPoolExecutor + httpx.Client per thread", n,
            lambda: threads_baseline(url, names, n, per_thread=True)),
        Job("ThreadPoolExecutor + raw sockets", n, lambda: raw_threads(url, names, n)),
        Job("batchkit threads + raw sockets", n,
            lambda: batchkit_threads(url, names, n, fn=search_raw)),
        Job("ThreadPoolExecutor + httpx.Client on a sleeping transport (ceiling)", n,
            lambda: threads_baseline(url, names, n, transport=SleepTransport(lat)),
            served=False),
    ]
    for size in [int(x) for x in a.chunk_sizes.split(",") if x.strip()]:
        jobs.append(Job(f"batchkit threads + ClientPool, chunk_size={size}", n,
                        lambda size=size: batchkit_threads(url, names, n, chunk_size=size)))
        jobs.append(Job(f"batchkit threads + raw sockets, chunk_size={size}", n,
                        lambda size=size: batchkit_threads(url, names, n, fn=search_raw,
                                                           chunk_size=size)))
    if httpx2 is not None:
        jobs.append(Job(f"ThreadPoolExecutor + shared httpx2 {httpx2.__version__} Client", n,
                        lambda: threads_baseline(url, names, n, module=httpx2)))
    if a.no_threads:
        jobs.clear()
    if not a.no_async:
        jobs += [
            Job("async baseline: raw asyncio streams", k, lambda: raw_async(url, names, k)),
            Job("batchkit async step without HTTP (asyncio.sleep)", k,
                lambda: batchkit_async(url, names, k, http=False), served=False),
            Job("async: httpx.AsyncClient on a sleeping transport (ceiling)", k,
                lambda: client_async(url, names, k, transport=AsyncSleepTransport(lat)),
                served=False),
            Job("async: httpx.AsyncClient + semaphore", k,
                lambda: client_async(url, names, k), rounds=slow),
            Job("batchkit async step, ctx.ahttp = httpx.AsyncClient", k,
                lambda: batchkit_async(url, names, k, httpx.AsyncClient), rounds=slow),
        ]
        default = async_client_class()
        if default is not httpx.AsyncClient:
            jobs.append(Job(f"batchkit async step, ctx.ahttp = {default.__name__} (default)",
                            k, lambda: batchkit_async(url, names, k)))
        if fast is not None:
            jobs.append(Job("async: httpx_aiohttp.HttpxAiohttpClient + semaphore", k,
                            lambda: client_async(url, names, k,
                                                 cls=fast.HttpxAiohttpClient)))
        if aiohttp is not None:
            jobs.append(Job(f"async: plain aiohttp {aiohttp.__version__} (not httpx's API)", k,
                            lambda: aiohttp_async(url, names, k)))
        if httpx2 is not None:
            jobs.append(Job(f"async: httpx2 {httpx2.__version__} AsyncClient + semaphore", k,
                            lambda: client_async(url, names, k, httpx2), rounds=slow))

    try:
        _report(a, jobs, server, items, rounds)
    finally:
        server.close()  # never leave the server process behind


def _report(a: argparse.Namespace, jobs: list[Job], server: Server, items: int,
            rounds: int) -> None:
    n, k = a.concurrency, a.async_concurrency
    suffix = ("" if a.latency == 0.02 else f"_{a.latency * 1000:g}ms") + \
        ("_async" if a.no_threads else "")
    with c.Tee("http_io" + suffix):
        c.header("HTTP I/O efficiency")
        where = "in this process" if a.in_process else "in its own process"
        sniffio = "installed" if _optional("sniffio") else "not installed"
        print(f"{items:,} GETs of {a.latency * 1000:g} ms against the simulated API "
              f"(SimService server={a.server!r}, {where}); httpx {httpx.__version__} "
              f"(sniffio {sniffio}); async clients: {async_client_class().__name__}; "
              f"{rounds} round(s), interleaved")
        print(f"ideal: {items * a.latency / n:.3f} s at {n} concurrent, "
              f"{items * a.latency / k:.3f} s at {k}\n")
        times: dict[str, list[float]] = {j.name: [] for j in jobs}
        notes: dict[str, str] = {}
        cpu: dict[str, list[float]] = {j.name: [] for j in jobs}
        server_cpu: dict[str, list[float]] = {j.name: [] for j in jobs}
        in_flight: dict[str, int] = {}
        for r in range(rounds):
            for job in jobs:
                if job.rounds is not None and r >= job.rounds:
                    continue
                server.reset()
                c0, s0 = _cpu(), server.cpu()
                seconds, note = job.run()
                cpu[job.name].append((_cpu() - c0) / items * 1000)
                server_cpu[job.name].append((server.cpu() - s0) / items * 1000)
                st = server.stats()["/search"]
                if job.served and st["ok"] != items:
                    raise SystemExit(f"{job.name}: {st['ok']} of {items} calls answered 200")
                times[job.name].append(seconds)
                notes[job.name] = note
                in_flight[job.name] = max(in_flight.get(job.name, 0), st["max_in_flight"])
        rows = []
        for job in jobs:
            best, median = c.best_median(times[job.name])
            ideal_s = items * a.latency / job.concurrency
            rows.append([job.name, job.concurrency, in_flight[job.name] if job.served else "-",
                         len(times[job.name]),
                         round(best, 3), round(median, 3), round(100 * ideal_s / median, 1),
                         round(100 * ideal_s / best, 1),
                         round(sorted(cpu[job.name])[len(cpu[job.name]) // 2], 2),
                         round(sorted(server_cpu[job.name])[len(server_cpu[job.name]) // 2], 2),
                         notes[job.name]])
        print(c.table(["job", "in flight", "max at server", "rounds", "best s", "median s",
                       "% ideal (median)", "% ideal (best)", "client CPU ms/call",
                       "server CPU ms/call", "note"], rows))
        by_name = {r[0]: r for r in rows}
        if not a.no_threads:
            base, ours = rows[0], rows[1]
            verdict = "met" if ours[6] >= 100 * TARGET else "missed"
            print(f"\ntarget: batchkit threads >= {TARGET:.0%} of ideal (median): "
                  f"{ours[6]:.1f}% -> {verdict}; baseline (shared httpx.Client) {base[6]:.1f}%")
        if not a.no_async:
            raw = by_name["async baseline: raw asyncio streams"]
            step = [r for r in rows if r[0].startswith("batchkit async step, ctx.ahttp")]
            best = max(step, key=lambda r: r[6])
            verdict = "met" if best[6] >= 100 * TARGET else "missed"
            print(f"target: batchkit async step >= {TARGET:.0%} of ideal (median) at {k} in "
                  f"flight: {best[6]:.1f}% ({best[0]}) -> {verdict}; raw asyncio {raw[6]:.1f}%")
        print("all runs (s): " + "; ".join(
            f"{name}: {', '.join(f'{t:.3f}' for t in ts)}" for name, ts in times.items()))
        c.footer()


if __name__ == "__main__":
    main()
