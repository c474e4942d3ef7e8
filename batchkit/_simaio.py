"""The asyncio server of ``SimService(server="asyncio")``: one event loop, no thread per call.

The stdlib ``ThreadingHTTPServer`` spends ~0.25 ms of CPU per request here (a thread
per connection, ``email`` header parsing, a ``time.sleep`` per answer) and, at a few
thousand calls per second, becomes what a benchmark measures. This server parses
HTTP/1.1 itself on an ``asyncio.Protocol`` (request line, headers, a ``Content-Length``
body; keep-alive and pipelining, answers in order), waits the latency with
``loop.call_later`` and answers through the same ``respond()`` as the threaded server,
so both answer alike. It runs its loop in a daemon thread of the calling process, bound
to 127.0.0.1.

Not supported (answered with an error, then the connection is closed): chunked request
bodies (411), headers over 64 KiB (431), bodies over 16 MiB (413), malformed request
lines (400). Methods other than GET, POST and DELETE get 501, as from the stdlib server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Generator
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from ._simservice import Answer, respond

if TYPE_CHECKING:
    from ._simservice import SimService

__all__ = ["AsyncServer"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024
_METHODS = ("GET", "POST", "DELETE")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
            429: "Too Many Requests", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


class _Date:
    """The ``Date`` header value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


class AsyncServer:
    """Serve ``service`` on 127.0.0.1:``port`` from an event loop in a daemon thread.

    The same small interface as the threaded server: ``socket`` (the listening socket),
    ``server_address``, ``open_sockets()`` and ``stop()``.
    """

    def __init__(self, service: SimService, port: int = 0) -> None:
        self.service = service
        self.date = _Date()
        self.connections: set[_Connection] = set()
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port))
        self.socket.listen(1024)  # bursts of connects must not be dropped
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, args=(ready,),
                                        name="batchkit-simservice-asyncio", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        if self._failure is not None:
            raise self._failure

    def _serve(self, ready: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            self._listener = loop.run_until_complete(
                loop.create_server(lambda: _Connection(self), sock=self.socket))
        except BaseException as exc:  # noqa: BLE001 - reported to the constructor
            self._failure = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            for conn in list(self.connections):
                conn.abort()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def open_sockets(self) -> list[socket.socket]:
        """The accepted connections open right now."""
        return [c.sock for c in list(self.connections) if c.sock is not None]

    def stop(self) -> None:
        """Stop accepting, drop open connections and end the loop's thread."""
        if self.loop.is_closed():
            return

        def halt() -> None:
            self._listener.close()
            for conn in list(self.connections):
                conn.abort()
            self.loop.stop()

        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self.loop.call_soon_threadsafe(halt)
        self._thread.join(timeout=5)


class _Connection(asyncio.Protocol):
    """One client connection: parse requests, answer them one at a time, in order."""

    def __init__(self, server: AsyncServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None
        self.busy = False  # answering a request (later ones wait in the buffer)
        self.parsing = False  # inside _next(): an answer ready at once must not recurse
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # else every kept-alive answer waits ~40 ms (Nagle + delayed ACK, FACTS.md)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock
        self.server.connections.add(self)
        svc = self.server.service
        with svc._lock:
            svc._connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # -- requests ----------------------------------------------------------------------

    def _next(self) -> None:
        """Start the buffered requests, one at a time, until one has to wait."""
        self.parsing = True
        try:
            while not self.busy and not self.closed:
                request = self._parse()
                if request is None:
                    return
                method, target, headers, body, keep = request
                self.busy = True
                if method not in _METHODS:
                    self._reply((501, {"error": f"unsupported method {method!r}",
                                       "status": 501}, {}), keep)
                else:
                    self._step(respond(self.server.service, method, target, headers, body),
                               keep)
        finally:
            self.parsing = False

    def _parse(self) -> tuple[str, str, dict[str, str], bytes, bool] | None:
        """The next complete request in the buffer, or None (incomplete, or refused)."""
        buf = self.buffer
        while buf[:2] == b"\r\n":  # stray line ends between requests are allowed
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                self._refuse(431, "request headers too large")
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._refuse(400, f"bad request line {lines[0][:80]!r}")
            return None
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                self._refuse(400, "malformed header line")
                return None
            headers[name.lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._refuse(411, "chunked request bodies are not supported; send Content-Length")
            return None
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            self._refuse(400, "bad Content-Length")
            return None
        if length < 0 or length > _MAX_BODY:
            self._refuse(413, f"body of {length} bytes refused (at most {_MAX_BODY})")
            return None
        if len(buf) < end + 4 + length:
            return None  # the body is still on its way
        body = bytes(buf[end + 4:end + 4 + length])
        del buf[:end + 4 + length]
        connection = headers.get("connection", "").lower()
        keep = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        return method, target, headers, body, keep

    def _step(self, answer: Generator[float, None, Answer], keep: bool) -> None:
        self.timer = None
        if self.closed:
            answer.close()
            return
        try:
            delay = next(answer)
        except StopIteration as done:
            self._reply(done.value, keep)
            return
        self.timer = self.server.loop.call_later(delay, self._step, answer, keep)

    def _reply(self, answer: Answer, keep: bool) -> None:
        status, payload, extra = answer
        self._write(status, payload, extra, keep)
        self.busy = False
        if not keep:
            self._close()
        elif not self.parsing and self.buffer:
            self._next()  # requests that arrived while this one waited

    def _refuse(self, status: int, message: str) -> None:
        self.buffer.clear()
        self._write(status, {"error": message, "status": status}, {}, False)
        self._close()

    def _write(self, status: int, payload: Any, extra: dict[str, str], keep: bool) -> None:
        if self.transport is None or self.closed:
            return
        data = json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
                "Server: batchkit-simservice", f"Date: {self.server.date()}",
                "Content-Type: application/json", f"Content-Length: {len(data)}"]
        head += [f"{k}: {v}" for k, v in extra.items()]
        if not keep:
            head.append("Connection: close")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
