"""Local simulated web services for tests, benchmarks and the demo (loopback only).

``SimService`` is a small HTTP/1.1 JSON API modelled on the lead-enrichment
scenario (company search, AI extraction, contact search, batched e-mail
verification). It runs in a daemon thread of the calling process, bound to
127.0.0.1 on a free port, and can misbehave on purpose: latency, a server-side
rate limit answered with 429 + ``Retry-After``, a share of transient 503s, a share of
429s that throttle even under the limit, 404s for unknown inputs, 413 for oversized
batches. Every answer is computed from the
input, so tests can assert values.

=========================  =================================================
endpoint                   answer
=========================  =================================================
``GET /search?q=NAME``     ``{"company", "domain", "industry", "snippet"}``
``POST /extract``          body ``{"text"}`` → ``{"size", "industry",
                           "revenue", "tech_stack", "tokens"}``
``GET /contacts?domain=D`` ``{"domain", "contacts": [{"name", "email"}, ...]}``
``POST /verify``           body ``{"emails": [...]}`` (≤ ``batch_max``) →
                           ``{"results": [{"email", "valid"}, ...]}``
``GET /health``            ``{"ok": true}`` (no latency, no limit, not counted)
``GET /stats``             ``SimService.stats()`` as JSON, for a server run in
                           another process (not counted); ``DELETE /stats``
                           resets them
=========================  =================================================

Errors are JSON ``{"error": ..., "status": ...}``. Request headers are never
echoed (an ``Authorization`` header cannot leak through an answer).

Two servers answer alike (same endpoints, limits, failures and counters):
``server="threads"`` (the default) is the stdlib ``ThreadingHTTPServer``, a thread per
connection; ``server="asyncio"`` (``_simaio.py``) serves every connection from one
event loop and costs ~3x less CPU per request, so a benchmark at thousands of calls per
second measures the client, not the server. Run one in its own process (for benchmarks:
the server then does not share the client's GIL)::

    python -m batchkit._simservice --latency 0.02 --server asyncio  # prints the URL
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Generator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._errors import ConfigError
from ._simdata import (  # noqa: F401 - re-exported: tests and the demo import them from here
    _DOMAIN_SUFFIX,
    _unit,
    contacts_result,
    domain_of,
    extract_result,
    search_result,
    verify_result,
)

__all__ = ["ENDPOINTS", "SERVERS", "SimService", "parse_rate"]

#: the endpoints that take latency, rate limits and failures (health and stats do not)
ENDPOINTS = ("/search", "/extract", "/contacts", "/verify")
#: how a SimService serves: a thread per connection (stdlib), or one asyncio event loop
SERVERS = ("threads", "asyncio")

_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
            "h": 3600.0, "hr": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+?)s?\s*$", re.IGNORECASE)


def parse_rate(value: str | float | int) -> tuple[int, float]:
    """A rate as ``(calls, period_seconds)``: "100/min", "10/s", "5/h" or calls per second.

    A number below 1, or not whole, becomes one call per ``1 / rate`` seconds. A bad
    value raises ``ConfigError`` (a ``ValueError``).

    Example:
        >>> parse_rate("100/min"), parse_rate("10/s"), parse_rate(4), parse_rate(0.5)
        ((100, 60.0), (10, 1.0), (4, 1.0), (1, 2.0))
    """
    if isinstance(value, bool):
        raise ConfigError(f"a rate must be like '100/min' or a number per second, got {value!r}")
    if isinstance(value, (int, float)):
        rate = float(value)
        if not rate > 0 or math.isinf(rate):
            raise ConfigError(f"a rate must be > 0 calls per second, got {value!r}")
        return (int(rate), 1.0) if rate.is_integer() else (1, 1.0 / rate)
    m = _RATE.match(str(value))
    if not m or m.group(2).lower() not in _PERIODS or not float(m.group(1)).is_integer() \
            or float(m.group(1)) < 1:
        raise ConfigError(f"a rate must be like '100/min', '10/s' or '5/h' (whole calls per "
                         f"second, minute or hour), or a number per second; got {value!r}")
    return int(float(m.group(1))), _PERIODS[m.group(2).lower()]


class _Window:
    """A sliding-window log: at most ``calls`` accepted requests in any ``period`` seconds."""

    def __init__(self, calls: int, period: float) -> None:
        self.calls = calls
        self.period = period
        self.times: deque[float] = deque()

    def admit(self, now: float) -> float | None:
        """Record a request at ``now`` and return None, or return seconds until one is allowed."""
        while self.times and self.times[0] <= now - self.period:
            self.times.popleft()
        if len(self.times) < self.calls:
            self.times.append(now)
            return None
        return self.times[0] + self.period - now


def _per_endpoint(name: str, value: Any) -> dict[str, Any]:
    """A setting for every endpoint: one value for all, or a mapping endpoint → value."""
    if isinstance(value, Mapping):
        unknown = set(value) - set(ENDPOINTS)
        if unknown:
            raise ConfigError(f"{name}: unknown endpoints {sorted(unknown)}; "
                             f"use some of {list(ENDPOINTS)}")
        return {e: value.get(e) for e in ENDPOINTS}
    return dict.fromkeys(ENDPOINTS, value)


def _check_latency(value: Any) -> tuple[float, float]:
    if value is None:
        return (0.0, 0.0)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        lo = hi = float(value)
    else:
        raise ConfigError(f"latency must be seconds or a (low, high) pair, got {value!r}")
    if not 0 <= lo <= hi:
        raise ConfigError(f"latency must satisfy 0 <= low <= high, got {value!r}")
    return lo, hi


def _window_of(value: Any) -> tuple[int, float]:
    """A rate limit as ``(calls, period)``: a ``parse_rate`` value or a ``(calls, seconds)`` pair.

    The pair gives any window, e.g. ``(100, 6.0)`` for 100 calls/min run ten times faster.
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(f"a rate limit pair must be (calls, seconds), got {value!r}")
        calls, period = value
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1 or isinstance(
                period, bool) or not isinstance(period, (int, float)) or not 0 < period < math.inf:
            raise ConfigError(f"a rate limit pair must be (whole calls >= 1, seconds > 0), "
                              f"got {value!r}")
        return calls, float(period)
    return parse_rate(value)


class _Reply(Exception):
    """Raised inside a handler to answer with an error status."""

    def __init__(self, status: int, message: str, *,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


_COUNTERS = ("requests", "ok", "400", "401", "404", "405", "413", "429", "500", "503", "items",
             "max_in_flight", "throttled")


class SimService:
    """A simulated JSON API on 127.0.0.1 for tests and benchmarks (see the module docstring).

    Args:
        latency: seconds each answer takes, a ``(low, high)`` pair drawn uniformly
            (deterministic per request from ``seed``), or a mapping endpoint → either.
            404, 503 and 400 answers take the latency too; 429, 401 and 405 are immediate.
        rate_limit: ``"100/min"``, ``"10/s"``, a number per second, a ``(calls, seconds)``
            pair (any window: ``(100, 6.0)``), or a mapping endpoint → rate; each endpoint
            counts its own. A strict sliding window: no ``period``-long
            window holds more accepted requests than the limit; refused requests get 429
            with ``Retry-After`` (whole seconds until a slot frees) and do not count. A
            client pacing exactly at the limit can be refused now and then (its requests
            arrive with jitter): pace a little under it, or retry on 429.
        transient_share: share of requests answered 503 (0 to 1, or a mapping). Which ones
            is decided by a hash of ``seed``, the endpoint, the input and how many times that
            input was asked before, so a retry of the same input can succeed and a rerun
            with the same seed fails the same attempts.
        throttle_share: share of requests answered 429 with ``Retry-After:
            throttle_retry_after`` although under the rate limit (a provider shedding
            load), decided like ``transient_share``; 0 to 1, or a mapping. They are
            refused before the rate limit counts them, and counted as ``"429"`` and as
            ``"throttled"``.
        throttle_retry_after: seconds those 429s ask to wait (may be fractional).
        known: the companies ``/search`` knows: a set of names or a predicate; others get
            404. ``None`` knows every company.
        batch_max: most e-mails ``/verify`` takes in one call (more get 413).
        api_key: if set, every endpoint but ``/health`` wants ``Authorization: Bearer KEY``
            or ``X-Api-Key: KEY`` and answers 401 otherwise.
        seed: seeds the transient failures and latency draws.
        port: 0 for a free port.
        server: ``"threads"`` (stdlib ``ThreadingHTTPServer``, a thread per connection)
            or ``"asyncio"`` (one event loop in a daemon thread; ~3x less CPU per request,
            for benchmarks at thousands of calls per second). Both answer alike.

    Example:
        >>> import httpx
        >>> with SimService(known={"Acme"}) as svc:
        ...     r = httpx.get(svc.url + "/search", params={"q": "Acme"})
        ...     miss = httpx.get(svc.url + "/search", params={"q": "Nope"})
        ...     r.json()["domain"], miss.status_code, svc.stats()["/search"]["404"]
        ('acme.example', 404, 1)
    """

    def __init__(self, *, latency: Any = 0.0, rate_limit: Any = None,
                 transient_share: Any = 0.0,
                 known: Collection[str] | Callable[[str], bool] | None = None,
                 batch_max: int = 100, api_key: str | None = None, seed: int = 0,
                 port: int = 0, throttle_share: Any = 0.0,
                 throttle_retry_after: float = 1.0, server: str = "threads") -> None:
        if server not in SERVERS:
            raise ConfigError(f"server must be one of {list(SERVERS)}, got {server!r}")
        self._latency = {e: _check_latency(v)
                         for e, v in _per_endpoint("latency", latency).items()}
        self._limits: dict[str, _Window | None] = {
            e: (_Window(*_window_of(v)) if v is not None else None)
            for e, v in _per_endpoint("rate_limit", rate_limit).items()}
        shares = _per_endpoint("transient_share", transient_share)
        for v in shares.values():
            if v is not None and not 0 <= float(v) <= 1:
                raise ConfigError(f"transient_share must be between 0 and 1, got {v!r}")
        self._shares = {e: float(v or 0.0) for e, v in shares.items()}
        throttles = _per_endpoint("throttle_share", throttle_share)
        for v in throttles.values():
            if v is not None and not 0 <= float(v) <= 1:
                raise ConfigError(f"throttle_share must be between 0 and 1, got {v!r}")
        self._throttles = {e: float(v or 0.0) for e, v in throttles.items()}
        if isinstance(throttle_retry_after, bool) or not isinstance(
                throttle_retry_after, (int, float)) or not 0 < throttle_retry_after < math.inf:
            raise ConfigError(f"throttle_retry_after must be seconds > 0, "
                              f"got {throttle_retry_after!r}")
        self._throttle_after = float(throttle_retry_after)
        if isinstance(batch_max, bool) or not isinstance(batch_max, int) or batch_max < 1:
            raise ConfigError(f"batch_max must be a positive whole number, got {batch_max!r}")
        self.batch_max = batch_max
        if known is None or callable(known):
            self._known: Callable[[str], bool] | None = known  # type: ignore[assignment]
        else:
            names = frozenset(known)
            self._known = names.__contains__
        self._api_key = api_key
        self.seed = seed
        self._lock = threading.Lock()
        self._asked: dict[tuple[str, str], int] = {}
        self._stats: dict[str, dict[str, int]] = {}
        self._in_flight: dict[str, int] = {}
        self._connections = 0
        self._log: deque[tuple[float, str, int]] = deque(maxlen=1_000_000)
        self.reset_stats()
        self.server = server
        self._server: _Server | Any
        if server == "asyncio":
            from ._simaio import AsyncServer

            self._server = AsyncServer(self, port)
        else:
            self._server = _Server(("127.0.0.1", port), _Handler)
            self._server.service = self
            self._server.start()
        self._closed = False

    # -- public --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_address[1])

    def stats(self) -> dict[str, Any]:
        """Counters per endpoint, plus ``connections`` (TCP connections accepted) and
        ``open_connections`` (kept alive right now).

        Each endpoint has ``requests`` (all), ``ok`` (200), one count per error status
        (``"400"``, ``"401"``, ``"404"``, ``"405"``, ``"413"``, ``"429"``, ``"500"``,
        ``"503"``),
        ``items`` (e-mails verified, ``/verify`` only), ``max_in_flight`` (most
        requests it was answering at once) and ``throttled`` (the 429s of
        ``throttle_share``; the other 429s refused calls over the rate limit). A
        snapshot: a new dict each call.

        Example:
            >>> with SimService() as svc:
            ...     svc.stats()["/search"]["requests"]
            0
        """
        with self._lock:
            out: dict[str, Any] = {e: dict(c) for e, c in self._stats.items()}
            out["connections"] = self._connections
        out["open_connections"] = len(self._server.open_sockets())  # kept alive right now
        return out

    def requests_log(self, endpoint: str | None = None) -> list[tuple[float, str, int]]:
        """``(arrival time, endpoint, status)`` of every answered request, by arrival.

        Arrival times are ``time.monotonic()`` of this process, the same instants the
        rate limit counts, so a client's rate can be checked from the server's side.

        Example:
            >>> with SimService() as svc:
            ...     svc.requests_log("/search")
            []
        """
        with self._lock:
            log = [r for r in self._log if endpoint is None or r[1] == endpoint]
        return sorted(log, key=lambda r: r[0])

    def reset_stats(self) -> None:
        """Zero every counter and the request log (rate-limit windows and retries stay).

        Example:
            >>> with SimService() as svc:
            ...     svc.reset_stats()
        """
        with self._lock:
            self._stats = {e: dict.fromkeys(_COUNTERS, 0) for e in ENDPOINTS}
            self._connections = 0
            self._log.clear()

    def close(self) -> None:
        """Stop serving and drop open connections. Calling it again does nothing.

        Example:
            >>> svc = SimService(); svc.close(); svc.close()
        """
        if self._closed:
            return
        self._closed = True
        self._server.stop()

    def __enter__(self) -> SimService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.url
        return f"SimService({state})"

    # -- called by the handler -------------------------------------------------------------

    def _begin(self, endpoint: str) -> float:
        now = time.monotonic()
        with self._lock:
            c = self._stats[endpoint]
            c["requests"] += 1
            n = self._in_flight.get(endpoint, 0) + 1
            self._in_flight[endpoint] = n
            if n > c["max_in_flight"]:
                c["max_in_flight"] = n
        return now

    def _end(self, endpoint: str, arrived: float, status: int, items: int = 0) -> None:
        with self._lock:
            c = self._stats[endpoint]
            self._in_flight[endpoint] -= 1
            c["ok" if status == 200 else str(status)] += 1
            c["items"] += items
            self._log.append((arrived, endpoint, status))

    def _admit(self, endpoint: str, now: float) -> None:
        window = self._limits[endpoint]
        if window is None:
            return
        with self._lock:
            wait = window.admit(now)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise _Reply(429, f"rate limit of {window.calls} calls per {window.period:g}s "
                              f"exceeded; retry after {seconds}s", retry_after=seconds)

    def _authorize(self, headers: Any) -> None:
        """``headers``: a case-insensitive message, or a mapping with lower-case names."""
        if self._api_key is None:
            return
        given = headers.get("x-api-key")
        auth = headers.get("authorization") or ""
        if auth[:7].lower() == "bearer ":
            given = given or auth[7:].strip()
        if given != self._api_key:
            # never say what was sent: only that it was wrong or missing
            raise _Reply(401, "missing or invalid API key: send 'Authorization: Bearer KEY' "
                              "or 'X-Api-Key: KEY'")

    def _throttle(self, endpoint: str, subject: str) -> None:
        share = self._throttles[endpoint]
        if share <= 0:
            return
        with self._lock:
            n = self._asked.get(("429:" + endpoint, subject), 0)
            self._asked[("429:" + endpoint, subject)] = n + 1
        if _unit(self.seed, "429", endpoint, subject, n) < share:
            with self._lock:
                self._stats[endpoint]["throttled"] += 1
            wait = self._throttle_after
            raise _Reply(429, f"too many requests right now (load shedding); retry after "
                              f"{wait:g}s", retry_after=wait)

    def _fail_transiently(self, endpoint: str, subject: str) -> bool:
        share = self._shares[endpoint]
        if share <= 0:
            return False
        with self._lock:
            n = self._asked.get((endpoint, subject), 0)
            self._asked[(endpoint, subject)] = n + 1
        return _unit(self.seed, "503", endpoint, subject, n) < share

    def _delay(self, endpoint: str, subject: str) -> float:
        lo, hi = self._latency[endpoint]
        if hi == lo:
            return lo
        with self._lock:
            n = self._asked.get(("latency:" + endpoint, subject), 0)
            self._asked[("latency:" + endpoint, subject)] = n + 1
        return lo + (hi - lo) * _unit(self.seed, "latency", endpoint, subject, n)

    def _is_known(self, company: str) -> bool:
        return self._known is None or bool(self._known(company))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # kept-alive connections must not hold close() up
    request_queue_size = 1024  # the default listen backlog of 5 drops bursts of connects
    service: SimService

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def track(self, sock: socket.socket, *, add: bool) -> None:
        with self._open_lock:
            if add:
                self._open.add(sock)
            else:
                self._open.discard(sock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="batchkit-simservice", daemon=True)
        self._thread.start()

    def open_sockets(self) -> list[socket.socket]:
        """The accepted connections open right now."""
        with self._open_lock:
            return list(self._open)

    def stop(self) -> None:
        """Stop accepting, close the listening socket and drop open connections."""
        self.shutdown()
        self.server_close()
        with self._open_lock:
            socks, self._open = list(self._open), set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # else every kept-alive answer waits ~40 ms (FACTS)
    server: _Server
    server_version = "batchkit-simservice"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)
        svc = self.server.service
        with svc._lock:
            svc._connections += 1

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        return None  # quiet: tests and benchmarks make thousands of requests

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._serve("POST")

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib name
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        answer = respond(self.server.service, method, self.path, self.headers,
                         self._read_body())
        try:
            while True:
                time.sleep(next(answer))
        except StopIteration as done:
            status, payload, extra = done.value
        self._send(status, payload, extra)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client went away


Answer = tuple[int, Any, dict[str, str]]  # status, JSON payload, extra headers


def respond(svc: SimService, method: str, target: str, headers: Any,
            body: bytes) -> Generator[float, None, Answer]:
    """Handle one request: yields the seconds to wait (the latency), then returns the answer.

    Both servers drive it (the threaded one with ``time.sleep``, the asyncio one with
    ``loop.call_later``), so they answer alike. ``headers`` is a case-insensitive
    message or a mapping with lower-case names.
    """
    parts = urlsplit(target)
    path = parts.path.rstrip("/") or "/"
    if path == "/health":
        return 200, {"ok": True}, {}
    if path == "/stats" and method in ("GET", "DELETE"):
        if method == "DELETE":
            svc.reset_stats()
            return 200, {"ok": True}, {}
        return 200, svc.stats(), {}
    if path not in ENDPOINTS:
        return 404, {"error": f"no endpoint {path!r}; endpoints: {list(ENDPOINTS)}",
                     "status": 404}, {}
    arrived = svc._begin(path)
    items = 0
    extra: dict[str, str] = {}
    try:
        want = "POST" if path in ("/extract", "/verify") else "GET"
        if method != want:
            raise _Reply(405, f"{path} takes {want}, not {method}")
        svc._authorize(headers)
        subject = _subject(path, parts.query, body)
        svc._throttle(path, subject)
        svc._admit(path, arrived)
        delay = svc._delay(path, subject)
        if delay:
            yield delay
        if svc._fail_transiently(path, subject):
            raise _Reply(503, "service temporarily unavailable; retry")
        answer, items = _answer(svc, path, parts.query, body)
        status = 200
    except _Reply as reply:
        status = reply.status
        answer = {"error": str(reply), "status": reply.status}
        if reply.retry_after:
            extra["Retry-After"] = f"{reply.retry_after:g}"
    except Exception as exc:  # noqa: BLE001 - a bug here must still answer
        status = 500
        answer = {"error": f"internal error: {type(exc).__name__}", "status": 500}
    # count before answering: a client that reads stats() after its answer sees it
    svc._end(path, arrived, status, items)
    return status, answer, extra


def _subject(path: str, query: str, body: bytes) -> str:
    """What a request is about (its input), for deterministic failures and latency."""
    if path in ("/search", "/contacts"):
        return query
    return hashlib.blake2b(body, digest_size=8).hexdigest()


def _param(query: str, name: str) -> str:
    values = parse_qs(query, keep_blank_values=True).get(name)
    if not values or not values[0].strip():
        raise _Reply(400, f"missing query parameter {name!r}")
    return values[0].strip()


def _json_body(body: bytes, field: str) -> Any:
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        raise _Reply(400, "the body must be JSON") from None
    if not isinstance(payload, dict) or field not in payload:
        raise _Reply(400, f"the JSON body must be an object with {field!r}")
    return payload[field]


def _answer(svc: SimService, path: str, query: str, body: bytes) -> tuple[dict[str, Any], int]:
    """The deterministic answer to a valid request, and how many items it covered."""
    if path == "/search":
        company = _param(query, "q")
        if not svc._is_known(company):
            raise _Reply(404, f"no company found for q={company[:80]!r}")
        return search_result(company), 0
    if path == "/extract":
        text = _json_body(body, "text")
        if not isinstance(text, str):
            raise _Reply(400, "'text' must be a string")
        return extract_result(text), 0
    if path == "/contacts":
        domain = _param(query, "domain").lower()
        if not domain.endswith(_DOMAIN_SUFFIX):
            raise _Reply(404, f"no contacts found for domain={domain[:80]!r}")
        return contacts_result(domain), 0
    emails = _json_body(body, "emails")
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
        raise _Reply(400, "'emails' must be a list of strings")
    if len(emails) > svc.batch_max:
        raise _Reply(413, f"too many e-mails in one call: {len(emails)}; "
                          f"send at most {svc.batch_max} per call")
    return verify_result(emails), len(emails)


def main(argv: list[str] | None = None) -> None:
    """Serve a SimService in this process until interrupted (prints its URL first)."""
    p = argparse.ArgumentParser(prog="python -m batchkit._simservice",
                                description="Serve batchkit's simulated API on 127.0.0.1.")
    p.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    p.add_argument("--rate-limit", default=None, help="e.g. 100/min (each endpoint)")
    p.add_argument("--transient-share", type=float, default=0.0)
    p.add_argument("--batch-max", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--server", choices=SERVERS, default="threads",
                   help="threads (stdlib, a thread per connection) or asyncio (one loop)")
    a = p.parse_args(argv)
    with SimService(latency=a.latency, rate_limit=a.rate_limit,
                    transient_share=a.transient_share, batch_max=a.batch_max, seed=a.seed,
                    port=a.port, server=a.server) as svc:
        print(svc.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
