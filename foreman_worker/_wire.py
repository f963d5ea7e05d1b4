"""A lean HTTP/1.1 transport for the sync client: :mod:`http.client` with kept-alive connections.

Per call, ``httpx.Client`` spends about three times the CPU of the exchange itself (request
and URL objects, header merging, event hooks, its pool), and a worker makes two calls per
task. :class:`Wire` sends the same requests over plain :mod:`http.client` connections and
hands back an ``httpx.Response``, raising the same ``httpx`` exceptions for the same
failures, so reading an answer and deciding on a retry stay in one place
(:mod:`foreman_worker._responses`).

The distinction callers rely on is kept exactly: a failure to *connect* is
``httpx.ConnectError``/``ConnectTimeout`` (the request surely was not sent, so even a
create may be retried); a failure after sending is a read error, a timeout or a
``RemoteProtocolError``. An idle connection the server has closed is noticed *before* a
request is written to it (as httpcore does) and replaced by a new one, so a create is never
lost to a stale keep-alive connection.

Only plain ``http://`` URLs with no proxy configured take this path; the client keeps httpx
for ``https://``, proxies and custom transports.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import select
import socket
import threading
import urllib.parse
import urllib.request
from typing import Any

import httpx

_JSON_HEADERS = {"Content-Type": "application/json"}


def lean_wire_fits(base_url: str) -> bool:
    """Whether :class:`Wire` can carry this client's calls (plain HTTP, no proxy)."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme != "http" or not parsed.hostname:
        return False
    proxies = urllib.request.getproxies()
    if not (proxies.get("http") or proxies.get("all")):
        return True
    return bool(urllib.request.proxy_bypass(parsed.hostname))


class Wire:
    """Sends requests to one ``http://host:port`` over a small pool of kept-alive connections.

    Thread-safe: each request takes an idle connection (or opens one) and puts it back
    after the whole answer is read.
    """

    def __init__(self, base_url: str, *, timeout: float, headers: dict[str, str]) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 80
        self._prefix = parsed.path.rstrip("/")
        self._timeout = timeout
        self._headers = headers
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def send(
        self,
        method: str,
        path: str,
        *,
        params: tuple[tuple[str, str], ...] = (),
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Sent:
        """Write one request; its answer is read by :meth:`receive` (or dropped by
        :meth:`Sent.abandon`). Raises ``httpx`` connect and write errors."""
        target = self._prefix + path
        if params:
            target = f"{target}?{urllib.parse.urlencode(params)}"
        all_headers = dict(self._headers)
        if headers:
            all_headers.update(headers)
        body: bytes | None = None
        if json is not None:
            body = jsonlib.dumps(
                json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            all_headers.update(_JSON_HEADERS)
        elif method in ("POST", "PUT", "PATCH"):
            all_headers["Content-Length"] = "0"
        connection = self._connection()
        try:
            connection.request(method, target, body=body, headers=all_headers)
        except TimeoutError as exc:
            connection.close()
            raise httpx.WriteTimeout(f"timed out sending {method} {path}") from exc
        except OSError as exc:
            connection.close()
            raise httpx.WriteError(f"{type(exc).__name__}: {exc}") from exc
        return Sent(connection, f"{method} {path}")

    def receive(self, sent: Sent) -> httpx.Response:
        """Read the whole answer to a sent request; raise ``httpx`` read errors on failure."""
        connection = sent.connection
        try:
            answer = connection.getresponse()
            content = answer.read()
        except TimeoutError as exc:
            connection.close()
            raise httpx.ReadTimeout(f"timed out waiting for the answer to {sent.label}") from exc
        except (http.client.RemoteDisconnected, http.client.IncompleteRead) as exc:
            connection.close()
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
        except http.client.HTTPException as exc:
            connection.close()
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            connection.close()
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc
        response = httpx.Response(
            answer.status, headers=answer.getheaders(), content=content, extensions={}
        )
        if answer.will_close:
            connection.close()
        else:
            self._put_back(connection)
        return response

    def close(self) -> None:
        """Close every idle connection; later requests open new ones."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # ---- connections ---------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect()
            if _still_open(connection):
                return connection
            connection.close()  # the server closed it while idle: never write to it

    def _connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            connection.connect()
        except TimeoutError as exc:
            where = f"{self._host}:{self._port}"
            raise httpx.ConnectTimeout(f"timed out connecting to {where}") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        if connection.sock is not None:
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _put_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append(connection)


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """False when an idle connection has something to read: the server's close (EOF) or
    bytes no request asked for. Either way it must not carry another request."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class Sent:
    """A request written to a connection whose answer has not been read yet."""

    __slots__ = ("connection", "label")

    def __init__(self, connection: http.client.HTTPConnection, label: str) -> None:
        self.connection = connection
        self.label = label

    def abandon(self) -> None:
        """Drop the answer unread: the connection is closed, never reused."""
        self.connection.close()
