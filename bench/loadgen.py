"""A minimal, cheap HTTP/1.1 keep-alive load generator for loopback benchmarks.

N connections each run a loop: ask their producer for the next request's bytes, write them,
read the status line, the headers and a ``Content-Length`` (or chunked) body, and record the
latency with ``time.perf_counter``. Producers are plain callables, one per connection, handed
the previous response so they can vary ids or chain requests (claim, then complete).

It deliberately avoids an HTTP library: on a 2-core machine the client must leave the CPU to
the server it measures. Only loopback targets are accepted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Producer = Callable[[int, bytes], bytes | None]
"""``producer(previous_status, previous_body)`` returns the next request's bytes, or None to
stop this connection. The first call gets ``(0, b"")``."""


def ensure_loopback(host: str) -> None:
    """Refuse any target that is not this machine's loopback interface."""
    for info in socket.getaddrinfo(host, None):
        address = ipaddress.ip_address(info[4][0])
        if not address.is_loopback:
            raise ValueError(f"refusing non-loopback target {host!r} ({address})")


def build_request(
    method: str,
    path: str,
    *,
    host: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> bytes:
    """Serialise one HTTP/1.1 request; ``body`` is sent as JSON when not None."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    payload = b""
    if body is not None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines.append("Content-Type: application/json")
    if payload or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(payload)}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@dataclass
class ConnectionLog:
    """Per-request start times and latencies (seconds), in the order sent on one connection."""

    starts: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


@dataclass
class LoadResult:
    connections: list[ConnectionLog]
    measure_start: float
    measure_end: float
    errors: list[str] = field(default_factory=list)

    def measured(self) -> tuple[list[float], dict[int, int]]:
        """Latencies of requests started inside the measured window, and status counts."""
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        for log in self.connections:
            for start, latency, status in zip(log.starts, log.latencies, log.statuses, strict=True):
                if start >= self.measure_start:
                    latencies.append(latency)
                    statuses[status] = statuses.get(status, 0) + 1
        return latencies, statuses

    @property
    def elapsed(self) -> float:
        return max(self.measure_end - self.measure_start, 1e-9)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


class ProtocolError(Exception):
    """The server answered something this client does not parse."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server will close the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    first_end = head.index(b"\r\n")
    status_line = head[:first_end]
    try:
        status = int(status_line.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise ProtocolError(f"bad status line {status_line!r}") from None
    length = -1
    chunked = False
    close = False
    for line in head[first_end + 2 : -4].split(b"\r\n"):
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value)
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif lowered == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, b"".join(parts), close
    if length < 0:
        if status in (204, 304) or 100 <= status < 200:
            return status, b"", close
        return status, await reader.read(), True
    body = await reader.readexactly(length) if length else b""
    return status, body, close


async def run_load(
    host: str,
    port: int,
    producers: Sequence[Producer],
    *,
    duration: float,
    warmup: float = 1.0,
    max_requests: int | None = None,
) -> LoadResult:
    """Drive one connection per producer for ``warmup + duration`` seconds.

    Stops early when every producer returned None or ``max_requests`` were sent (warm-up
    included). Requests started before the warm-up ends are not measured.
    """
    ensure_loopback(host)
    logs = [ConnectionLog() for _ in producers]
    errors: list[str] = []
    began = time.perf_counter()
    measure_start = began + warmup
    deadline = measure_start + duration
    budget = [max_requests if max_requests is not None else -1]
    finished: list[float] = []

    async def connection(producer: Producer, log: ConnectionLog) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        status, body = 0, b""
        perf = time.perf_counter
        try:
            while True:
                now = perf()
                if now >= deadline or budget[0] == 0:
                    break
                request = producer(status, body)
                if request is None:
                    break
                if budget[0] > 0:
                    budget[0] -= 1
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                assert reader is not None
                start = perf()
                writer.write(request)
                status, body, close = await _read_response(reader)
                end = perf()
                log.starts.append(start)
                log.latencies.append(end - start)
                log.statuses.append(status)
                if close:
                    writer.close()
                    writer = reader = None
        except (OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
            errors.append(f"{exc.__class__.__name__}: {exc}")
        finally:
            finished.append(perf())
            if writer is not None:
                writer.close()

    await asyncio.gather(*(connection(p, log) for p, log in zip(producers, logs, strict=True)))
    measure_end = min(max(finished, default=deadline), deadline + 60)
    return LoadResult(logs, measure_start, max(measure_end, measure_start), errors)


def run(
    host: str,
    port: int,
    producers: Sequence[Producer],
    *,
    duration: float,
    warmup: float = 1.0,
    max_requests: int | None = None,
) -> LoadResult:
    """Synchronous wrapper: uses uvloop when installed (cheaper per request)."""
    coro = run_load(
        host, port, producers, duration=duration, warmup=warmup, max_requests=max_requests
    )
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
