"""Exact fixed-window rate limiting, in Redis (shared by every API process) or in memory.

A bucket's window opens with its first request and lasts ``window_seconds``; within it the
(limit+1)-th request is refused. Counting is an atomic increment, never an estimate. Windows
are anchored per bucket rather than to the epoch, so keys do not all reset at the same
instant and a burst is never split across an arbitrary boundary.

Redis costs one round trip per request: a Lua script that increments the counter, sets the
window's expiry on the first hit, and returns the count with the time left.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import redis

from foreman_api.settings import RateLimit


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_seconds)
        return headers


class RateLimiter(Protocol):
    blocking: bool
    """Whether ``hit`` does I/O (and so must not run on the event loop)."""

    def hit(self, bucket: str, limit: RateLimit) -> Decision | None:
        """Count one request in ``bucket``; None when the limit is unlimited."""


def _decide(count: int, limit: int, reset_seconds: float) -> Decision:
    return Decision(
        allowed=count <= limit,
        limit=limit,
        remaining=max(limit - count, 0),
        # Rounded to the millisecond first: (now + 60) - now can be 60.000000001 in floats.
        reset_seconds=max(math.ceil(round(reset_seconds, 3)), 1),
    )


class MemoryRateLimiter:
    """Counters in this process only: right for one API process, wrong for several."""

    MAX_BUCKETS = 100_000
    blocking = False

    def __init__(self) -> None:
        # bucket -> (window end on the monotonic clock, count)
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def hit(self, bucket: str, limit: RateLimit) -> Decision | None:
        if limit.requests is None:
            return None
        now = time.monotonic()
        key = f"{bucket}:{limit.window_seconds}"
        with self._lock:
            ends, count = self._counts.get(key, (0.0, 0))
            if ends <= now:
                ends, count = now + limit.window_seconds, 0
            count += 1
            self._counts[key] = (ends, count)
            if len(self._counts) > self.MAX_BUCKETS:
                self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
        return _decide(count, limit.requests, ends - now)


_INCREMENT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if count == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class RedisRateLimiter:
    """Counters in Redis, shared by every API process that points at it.

    Keys are ``<namespace>:<bucket>:<window seconds>`` and expire with their window.
    """

    blocking = True

    def __init__(self, client: redis.Redis, *, namespace: str = "foreman:ratelimit") -> None:
        self._client = client
        self._namespace = namespace
        self._script = client.register_script(_INCREMENT)

    @property
    def namespace(self) -> str:
        return self._namespace

    def hit(self, bucket: str, limit: RateLimit) -> Decision | None:
        if limit.requests is None:
            return None
        key = f"{self._namespace}:{bucket}:{limit.window_seconds}"
        count, ttl_ms = self._script(keys=[key], args=[limit.window_seconds * 1000])
        return _decide(int(count), limit.requests, int(ttl_ms) / 1000)
