"""Pooled HTTP clients (batchkit._http) and secrets kept out of stored HTTP errors."""

from __future__ import annotations

import asyncio
import importlib.util
import pickle
import socket
import threading
from typing import Any

import httpfns
import httpx
import polars as pl
import pytest

import batchkit as bk
from batchkit._http import (
    DEFAULT_TIMEOUT,
    USER_AGENT,
    ClientFactory,
    ClientPool,
    async_client_class,
    make_async_client,
    make_client,
)
from batchkit._simservice import domain_of
from batchkit.testing import SimService

SECRET = "sk-live-SECRET-0123456789"
NO_RETRY = bk.RetryPolicy(retries=0, backoff=0)


def _capture() -> tuple[list[httpx.Request], httpx.MockTransport]:
    """A transport that records requests and answers 200 (or 302 for /redirect)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/redirect":
            return httpx.Response(302, headers={"Location": "/elsewhere"})
        return httpx.Response(200, json={"ok": True})

    return seen, httpx.MockTransport(handle)


def _companies(url: str, names: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"company": names, "url": [url] * len(names)})


# -- defaults -------------------------------------------------------------------------------


def test_make_client_defaults():
    """Timeouts connect 5 s / read 30 s, no pool timeout, no redirects, batchkit User-Agent."""
    with make_client() as c:
        assert c.timeout.connect == 5.0 and c.timeout.read == 30.0
        assert c.timeout.pool is None
        assert c.follow_redirects is False
        assert c.headers["user-agent"] == USER_AGENT == f"batchkit/{bk.__version__}"
    assert make_client().timeout == DEFAULT_TIMEOUT


def test_client_sends_user_agent_and_headers_and_does_not_follow_redirects():
    """Requests carry the User-Agent and user headers; a 302 is returned, not followed."""
    seen, transport = _capture()
    with make_client(headers={"X-Team": "data"}, transport=transport) as c:
        assert c.get("http://api.test/redirect").status_code == 302
    assert len(seen) == 1
    assert seen[0].headers["user-agent"].startswith("batchkit/")
    assert seen[0].headers["x-team"] == "data"


def test_user_headers_win_over_the_user_agent_default():
    """A User-Agent the user passes replaces batchkit's."""
    with make_client(headers={"User-Agent": "mine/1"}) as c:
        assert c.headers["user-agent"] == "mine/1"


def test_base_url_and_auth_reach_the_server():
    """base_url prefixes relative paths; auth and a Bearer header authenticate."""
    with SimService(api_key=SECRET) as s:
        with make_client(base_url=s.url, headers={"Authorization": f"Bearer {SECRET}"}) as c:
            assert c.get("/search", params={"q": "Acme"}).json()["domain"] == "acme.example"
        with make_client(base_url=s.url) as c:
            assert c.get("/search", params={"q": "Acme"}).status_code == 401
    seen, transport = _capture()
    with make_client(auth=("user", "pw"), transport=transport) as c:
        c.get("http://api.test/x")
    assert seen[0].headers["authorization"].startswith("Basic ")


def test_timeout_number_applies_to_every_phase():
    """timeout=2 sets connect, read, write and pool timeouts to 2 s."""
    with make_client(timeout=2) as c:
        assert (c.timeout.connect, c.timeout.read, c.timeout.write, c.timeout.pool) == \
            (2.0, 2.0, 2.0, 2.0)


def test_read_timeout_raises_a_transient_error():
    """A read slower than the timeout raises httpx.ReadTimeout, classified transient."""
    with SimService(latency=0.5) as s, make_client(base_url=s.url, timeout=0.1) as c, \
            pytest.raises(httpx.ReadTimeout) as info:
        c.get("/search", params={"q": "slow"})
    assert bk.classify(info.value).transient


def test_concurrency_caps_connections_and_calls_in_flight():
    """A client of concurrency=4 shared by 16 threads holds at most 4 connections."""
    with SimService(latency=0.05) as s, make_client(base_url=s.url, concurrency=4) as c:
        def call(i: int) -> None:
            for j in range(3):
                assert c.get("/search", params={"q": f"{i}-{j}"}).status_code == 200

        threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        st = s.stats()
    assert st["/search"]["ok"] == 48
    assert st["/search"]["max_in_flight"] == 4
    assert st["connections"] == 4


def test_async_client_defaults_and_concurrency():
    """make_async_client gives a pooled AsyncClient that runs calls concurrently."""
    async def main(url: str) -> list[int]:
        async with make_async_client(base_url=url, concurrency=8) as c:
            assert c.timeout.connect == 5.0
            assert c.headers["user-agent"] == USER_AGENT
            rs = await asyncio.gather(*(c.get("/search", params={"q": str(i)})
                                        for i in range(16)))
            return [r.status_code for r in rs]

    with SimService(latency=0.05) as s:
        assert asyncio.run(main(s.url)) == [200] * 16
        st = s.stats()
    assert st["/search"]["max_in_flight"] == 8
    assert st["connections"] == 8


# -- the async client class (the fast-http extra) -------------------------------------------------

FAST_HTTP = importlib.util.find_spec("httpx_aiohttp") is not None


def test_async_clients_are_aiohttp_backed_exactly_when_fast_http_is_installed():
    """Without async_factory, async clients are httpx_aiohttp's HttpxAiohttpClient when it
    is importable, else httpx.AsyncClient: an httpx.AsyncClient either way."""
    cls = async_client_class()
    assert issubclass(cls, httpx.AsyncClient)
    assert (cls.__name__ == "HttpxAiohttpClient") is FAST_HTTP
    assert (cls is httpx.AsyncClient) is not FAST_HTTP
    client = ClientFactory(concurrency=3).async_client()
    assert type(client) is cls
    asyncio.run(client.aclose())
    assert client.is_closed


def test_http2_or_an_own_transport_keeps_the_plain_httpx_async_client():
    """http2=True (aiohttp speaks HTTP/1.1 only) or a transport of one's own gives a plain
    httpx.AsyncClient that uses that transport."""
    assert async_client_class({"http2": True}) is httpx.AsyncClient
    seen, transport = _capture()

    async def main() -> int:
        async with make_async_client(transport=transport) as c:
            assert type(c) is httpx.AsyncClient
            return (await c.get("http://api.test/x")).status_code

    assert asyncio.run(main()) == 200
    assert seen[0].headers["user-agent"] == USER_AGENT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_default_async_client_keeps_httpx_semantics_on_a_real_server():
    """Whichever class: headers, base URL and params reach the server, status errors are
    httpx.HTTPStatusError (429 transient with Retry-After), a read timeout is
    httpx.TimeoutException and a refused connection an httpx.TransportError, both
    transient."""
    async def main(url: str, slow_url: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with make_async_client(base_url=url, headers={"X-Api-Key": SECRET}) as c:
            ok = await c.get("/search", params={"q": "Acme Corp"})
            assert ok.json()["domain"] == domain_of("Acme Corp")
            out["ok"] = ok.status_code
            limited = await c.get("/search", params={"q": "again"})
            try:
                limited.raise_for_status()
            except httpx.HTTPStatusError as exc:
                out["429"] = exc
        async with make_async_client(base_url=slow_url, timeout=0.1) as c:
            try:
                await c.get("/search", params={"q": "slow"})
            except httpx.TimeoutException as exc:
                out["timeout"] = exc
        async with make_async_client(timeout=2) as c:
            try:
                await c.get(f"http://127.0.0.1:{_free_port()}/health")
            except httpx.TransportError as exc:
                out["refused"] = exc
        return out

    with SimService(api_key=SECRET, rate_limit="1/min", server="asyncio") as s, \
            SimService(latency=0.5, server="asyncio") as slow:
        out = asyncio.run(main(s.url, slow.url))
        assert s.stats()["/search"]["401"] == 0  # the API key header got through
    assert out["ok"] == 200
    assert set(out) == {"ok", "429", "timeout", "refused"}
    info = bk.classify(out["429"])
    assert info.transient and 1 <= (info.retry_after or 0) <= 60
    assert bk.classify(out["timeout"]).transient
    assert bk.classify(out["refused"]).transient


# -- factory override --------------------------------------------------------------------------


def test_user_factory_receives_batchkit_kwargs():
    """A factory taking keywords gets batchkit's client arguments and makes the client."""
    got: dict = {}

    def factory(**kwargs):
        got.update(kwargs)
        return httpx.Client(**kwargs)

    with make_client(concurrency=7, base_url="http://api.test", factory=factory) as c:
        assert isinstance(c, httpx.Client)
    assert got["limits"].max_connections == 7
    assert got["limits"].max_keepalive_connections == 7
    assert str(got["base_url"]) == "http://api.test"
    assert got["follow_redirects"] is False


def test_zero_argument_factory_builds_the_client_itself():
    """A factory without parameters is called as is (it configures everything)."""
    mine = httpx.Client(headers={"X-Own": "1"})
    pool = ClientPool(factory=lambda: mine)
    assert pool.client() is mine
    pool.close()
    assert mine.is_closed


def test_async_factory_override():
    """ClientFactory(async_factory=...) makes the async clients."""
    made = []

    def afactory(**kwargs):
        made.append(kwargs)
        return httpx.AsyncClient(**kwargs)

    async def main() -> None:
        pool = ClientPool(ClientFactory(async_factory=afactory, concurrency=3))
        pool.async_client()
        await pool.aclose()

    asyncio.run(main())
    assert len(made) == 1 and made[0]["limits"].max_connections == 3


def test_fork_factory_gets_its_own_timeout_and_limits(monkeypatch):
    """A client class from an httpx-compatible fork gets Timeout/Limits of its own package."""
    import types

    fork = types.ModuleType("forkhttp")

    class Timeout:
        def __init__(self, **kw):
            self.kw = kw

    class Limits:
        def __init__(self, **kw):
            self.kw = kw

    class AsyncClient:
        def __init__(self, **kw):
            self.kw = kw

    for cls in (Timeout, Limits, AsyncClient):
        cls.__module__ = "forkhttp"
        setattr(fork, cls.__name__, cls)
    monkeypatch.setitem(__import__("sys").modules, "forkhttp", fork)
    client = ClientFactory(async_factory=AsyncClient, concurrency=7, timeout=4).async_client()
    assert isinstance(client, AsyncClient)
    assert isinstance(client.kw["timeout"], Timeout) and isinstance(client.kw["limits"], Limits)
    assert client.kw["timeout"].kw == {"connect": 4.0, "read": 4.0, "write": 4.0, "pool": 4.0}
    assert client.kw["limits"].kw["max_connections"] == 7
    assert client.kw["headers"]["User-Agent"].startswith("batchkit/")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"concurrency": 0}, "concurrency"), ({"concurrency": True}, "concurrency"),
     ({"timeout": -1}, "timeout"), ({"timeout": "5"}, "timeout"),
     ({"factory": "httpx.Client"}, "factory"), ({"options": {"limits": None}}, "limits")],
)
def test_bad_factory_settings_raise_config_errors(kwargs, match):
    """Bad client settings raise ConfigError (a ValueError) naming the setting."""
    with pytest.raises(bk.ConfigError, match=match):
        ClientFactory(**kwargs)


def test_bad_pool_arguments_raise_config_errors():
    """ClientPool rejects a bad scope, unknown arguments and a factory plus arguments."""
    with pytest.raises(bk.ConfigError, match="scope"):
        ClientPool(scope="worker")
    with pytest.raises(bk.ConfigError, match="concurency"):
        ClientPool(concurency=4)
    with pytest.raises(bk.ConfigError, match="not both"):
        ClientPool(ClientFactory(), concurrency=3)


# -- the pool ------------------------------------------------------------------------------------


def test_pool_makes_one_client_per_process_shared_by_threads():
    """scope="process": every thread gets the same client; it is made once."""
    pool = ClientPool(concurrency=4, scope="process")
    got = []
    threads = [threading.Thread(target=lambda: got.append(pool.client())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in got}) == 1
    assert pool.created == 1
    pool.close()
    assert got[0].is_closed


def test_pool_thread_scope_makes_one_client_per_thread():
    """scope="thread" (the default): each thread gets its own client, reused within it."""
    pool = ClientPool()
    assert pool.scope == "thread"
    got: list[tuple[httpx.Client, httpx.Client]] = []
    alive = threading.Barrier(4)  # all alive at once: a finished thread's id can be reused

    def work() -> None:
        got.append((pool.client(), pool.client()))
        alive.wait()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a is b for a, b in got)
    assert len({id(a) for a, _ in got}) == 4
    assert pool.created == 4
    pool.close()
    assert all(a.is_closed for a, _ in got)


def test_pool_can_be_used_again_after_close():
    """After close(), the next client() makes a fresh client."""
    pool = ClientPool()
    first = pool.client()
    pool.close()
    second = pool.client()
    assert second is not first and not second.is_closed and first.is_closed
    pool.close()


def test_pool_pickles_settings_only():
    """Pickling a pool keeps its settings and drops its clients (each process makes its own)."""
    pool = ClientPool(concurrency=5, base_url="http://api.test", scope="thread")
    pool.client()
    copy = pickle.loads(pickle.dumps(pool))
    assert copy.factory == pool.factory and copy.scope == "thread"
    assert copy.created == 0
    assert "open=0" in repr(copy)
    pool.close()


def test_process_scope_pool_shared_across_rows_in_a_threads_run(tmp_path):
    """In batch.run (threads) with scope="process" every row uses the one pooled client;
    connections stay within its concurrency although there are more workers."""
    pool = ClientPool(concurrency=4, scope="process")

    def search(row):
        r = pool.client().get(row["url"] + "/search", params={"q": row["company"]})
        r.raise_for_status()
        return {"domain": r.json()["domain"], "client": id(pool.client())}

    names = [f"Company {i}" for i in range(60)]
    with SimService(latency=0.01) as s:
        batch = bk.Batch("leads", store=str(tmp_path / "s.duckdb"))
        batch.add(_companies(s.url, names), key="company")
        report = batch.run(search, workers=8, backend="threads", progress=False,
                           retries=NO_RETRY)
        st = s.stats()
        out = batch.results()
        batch.close()
    pool.close()
    assert report.outcome == "completed"
    assert out.height == 60
    assert out["client"].n_unique() == 1
    assert sorted(out["domain"]) == sorted(domain_of(n) for n in names)
    assert pool.created == 1
    assert st["connections"] <= 4
    assert st["/search"]["max_in_flight"] <= 4


def test_thread_scope_pool_makes_one_client_per_worker_thread(tmp_path):
    """In batch.run (threads) the default pool makes one client per worker thread, each
    reused for many rows, each holding one connection."""
    pool = ClientPool()
    names = [f"Company {i}" for i in range(80)]
    with SimService(latency=0.01) as s:
        batch = bk.Batch("leads", store=str(tmp_path / "s.duckdb"))
        batch.add(_companies(s.url, names), key="company")
        report = batch.run(lambda row: _search_with(pool, row), workers=4,
                           backend="threads", chunk_size=5, progress=False, retries=NO_RETRY)
        st = s.stats()
        out = batch.results()
        batch.close()
    pool.close()
    assert report.outcome == "completed" and out.height == 80
    per_thread = out.group_by("thread").agg(pl.col("client").n_unique(), pl.len())
    assert 1 <= per_thread.height <= 4
    assert per_thread["client"].to_list() == [1] * per_thread.height
    assert out["client"].n_unique() == per_thread.height == pool.created
    assert st["connections"] == pool.created


def _search_with(pool: ClientPool, row: dict) -> dict:
    client = pool.client()
    r = client.get(row["url"] + "/search", params={"q": row["company"]})
    r.raise_for_status()
    return {"domain": r.json()["domain"], "client": id(client),
            "thread": threading.get_ident()}


@pytest.mark.slow
def test_pool_makes_one_client_per_worker_process(tmp_path):
    """With backend="processes" a module-level pool makes one client per worker process."""
    names = [f"Company {i}" for i in range(24)]
    with SimService() as s:
        batch = bk.Batch("leads", store=str(tmp_path / "s.duckdb"))
        batch.add(_companies(s.url, names), key="company")
        report = batch.run(httpfns.search, workers=2, backend="processes", chunk_size=3,
                           progress=False, retries=NO_RETRY)
        out = batch.results()
        batch.close()
    assert report.outcome == "completed" and out.height == 24
    per_pid = out.group_by("pid").agg(pl.col("client").n_unique())
    assert 1 <= per_pid.height <= 2
    assert per_pid["client"].to_list() == [1] * per_pid.height


def test_pool_async_client_per_event_loop():
    """async_client() is one client per running loop, reused; aclose() closes it."""
    async def main(pool: ClientPool, url: str) -> tuple[httpx.AsyncClient, list[int]]:
        c = pool.async_client()
        assert pool.async_client() is c
        rs = await asyncio.gather(*(pool.async_client().get(url + "/search",
                                                            params={"q": str(i)})
                                    for i in range(10)))
        await pool.aclose()
        return c, [r.status_code for r in rs]

    pool = ClientPool(concurrency=4)
    with SimService(latency=0.02) as s:
        c1, codes = asyncio.run(main(pool, s.url))
        c2, _ = asyncio.run(main(pool, s.url))
    assert codes == [200] * 10
    assert c1.is_closed and c2.is_closed and c1 is not c2


def test_pool_close_reaches_a_loop_running_in_another_thread():
    """close() from another thread closes an async client through its running loop."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    pool = ClientPool()
    try:
        async def make() -> httpx.AsyncClient:
            return pool.async_client()

        client = asyncio.run_coroutine_threadsafe(make(), loop).result(timeout=10)
        assert not client.is_closed
        pool.close()
        assert client.is_closed
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(timeout=10)
        loop.close()


def test_pool_close_after_the_loop_closed_drops_the_client():
    """close() after asyncio.run() ended forgets that loop's client without error."""
    pool = ClientPool()

    async def make() -> None:
        pool.async_client()

    asyncio.run(make())
    pool.close()
    assert "open=0" in repr(pool)


# -- errors: classification and secrets ----------------------------------------------------------


def _status_error(svc: SimService, path: str = "/search", **params: str) -> httpx.HTTPStatusError:
    headers = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}
    with make_client(base_url=svc.url, headers=headers) as c:
        r = c.get(path, params={**params, "api_key": SECRET})
    with pytest.raises(httpx.HTTPStatusError) as info:
        r.raise_for_status()
    return info.value


def test_classify_404_with_secrets_is_permanent_and_redacted():
    """A 404 whose request carried Authorization, X-Api-Key and api_key= is stored
    permanent, with no secret in the message."""
    with SimService(known={"Acme"}, api_key=SECRET) as s:
        exc = _status_error(s, q="Nope")
    assert SECRET in str(exc)  # httpx puts the URL, query included, in the message
    info = bk.classify(exc)
    assert info.transient is False
    assert "404" in info.message and "api_key=***" in info.message
    assert SECRET not in info.message


def test_classify_429_is_transient_with_retry_after():
    """A 429 from the service is transient and carries its Retry-After seconds."""
    with SimService(rate_limit="1/min", api_key=SECRET) as s:
        with make_client(base_url=s.url, headers={"X-Api-Key": SECRET}) as c:
            assert c.get("/search", params={"q": "a"}).status_code == 200
        exc = _status_error(s, q="Acme")
    info = bk.classify(exc)
    assert info.transient is True
    assert exc.response.status_code == 429
    assert info.retry_after == float(exc.response.headers["retry-after"])
    assert 1 <= info.retry_after <= 60
    assert SECRET not in info.message


def test_classify_503_is_transient():
    """A 503 from the service is transient."""
    with SimService(transient_share=1.0, api_key=SECRET) as s:
        exc = _status_error(s, q="Acme")
    assert exc.response.status_code == 503
    info = bk.classify(exc)
    assert info.transient and SECRET not in info.message


@pytest.mark.parametrize(
    "template",
    [
        "failed with headers {headers!r}",            # httpx.Headers repr: x-api-key in clear
        "failed with headers {plain!r}",              # a dict of headers: single quotes
        "request {request!r} failed",                 # the URL with api_key=
        "Authorization: Token {secret}",              # a scheme other than Bearer/Basic
        "Authorization: {secret}",                    # a bare credential
        "proxy at http://user:{secret}@proxy.test:8080 refused",  # password in a URL
        "params were authorization=Bearer%20{secret}",  # URL-encoded bearer
    ],
)
def test_redact_masks_secrets_users_put_in_messages(template):
    """Messages users build from requests (headers, URLs, credentials) lose their secret."""
    request = httpx.Request("GET", "http://api.test/v1", params={"api_key": SECRET},
                            headers={"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET})
    text = template.format(headers=request.headers, plain=dict(request.headers),
                           request=request, secret=SECRET)
    assert SECRET in text
    out = bk.redact(text)
    assert SECRET not in out
    assert "***" in out


def test_redact_keeps_ordinary_authorization_wording():
    """Text that merely mentions authorization is left alone."""
    text = "authorization failed for user bob (HTTP 401)"
    assert bk.redact(text) == text


def _leaky(row):
    """Calls the service with secrets in headers and query, and fails in two ways."""
    headers = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}
    with make_client(base_url=row["url"], headers=headers) as c:
        r = c.get("/search", params={"q": row["company"], "api_key": SECRET})
        if row["company"].startswith("Leaky"):
            raise RuntimeError(f"bad answer {r.status_code} to {r.request!r} "
                               f"with {dict(r.request.headers)!r}")
        r.raise_for_status()
        return {"domain": r.json()["domain"]}


def test_stored_errors_of_a_run_hold_no_secret(tmp_path):
    """End to end: failed rows' messages and traces in the store never contain the secret."""
    names = ["Acme", "Nope Inc", "Leaky Ltd"]
    with SimService(known={"Acme", "Leaky Ltd"}, api_key=SECRET) as s:
        batch = bk.Batch("leads", store=str(tmp_path / "s.duckdb"))
        batch.add(_companies(s.url, names), key="company")
        batch.run(_leaky, workers=2, backend="threads", progress=False, retries=NO_RETRY)
        failed = batch.failed()
        items = batch.items()
        batch.close()
    assert sorted(failed["key"].to_list()) == ["Leaky Ltd", "Nope Inc"]
    errors = dict(zip(failed["key"], failed["error_type"]))
    assert errors == {"Nope Inc": "HTTPStatusError", "Leaky Ltd": "RuntimeError"}
    for column in ("error_message", "error_trace"):
        for text in failed[column].to_list():
            assert text and SECRET not in text
    assert "404" in failed.filter(pl.col("key") == "Nope Inc")["error_message"][0]
    for column in items.columns:
        if items[column].dtype == pl.String:
            assert not any(SECRET in v for v in items[column].drop_nulls().to_list()), column
