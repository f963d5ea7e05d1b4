"""Exact fixed-window rate limiting, in Redis (shared by every API process) or in memory.

A window is ``window_seconds`` long and aligned to the epoch, so every process agrees on it.
Within a window the (limit+1)-th request is refused: counting is an atomic increment, never
an estimate. Redis costs one round trip per request (a Lua script: INCR, and PEXPIRE on the
first hit).
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
    def hit(self, bucket: str, limit: RateLimit) -> Decision | None:
        """Count one request in ``bucket``; None when the limit is unlimited."""


def _window(limit: RateLimit, now: float) -> tuple[int, int]:
    """(index of the current window, whole seconds until it resets, at least 1)."""
    index = int(now // limit.window_seconds)
    reset = math.ceil((index + 1) * limit.window_seconds - now)
    return index, max(reset, 1)


def _decide(count: int, limit: int, reset: int) -> Decision:
    return Decision(
        allowed=count <= limit, limit=limit, remaining=max(limit - count, 0), reset_seconds=reset
    )


class MemoryRateLimiter:
    """Counters in this process only: right for one API process, wrong for several."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def hit(self, bucket: str, limit: RateLimit) -> Decision | None:
        if limit.requests is None:
            return None
        index, reset = _window(limit, time.time())
        with self._lock:
            window, count = self._counts.get(bucket, (index, 0))
            count = count + 1 if window == index else 1
            self._counts[bucket] = (index, count)
            if len(self._counts) > 100_000:
                self._counts = {k: v for k, v in self._counts.items() if v[0] == index}
        return _decide(count, limit.requests, reset)


_INCREMENT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""


class RedisRateLimiter:
    """Counters in Redis, shared by every API process that points at it."""

    def __init__(self, client: redis.Redis, *, namespace: str = "foreman:ratelimit") -> None:
        self._client = client
        self._namespace = namespace
        self._script = client.register_script(_INCREMENT)

    def hit(self, bucket: str, limit: RateLimit) -> Decision | None:
        if limit.requests is None:
            return None
        index, reset = _window(limit, time.time())
        key = f"{self._namespace}:{bucket}:{limit.window_seconds}:{index}"
        count = int(self._script(keys=[key], args=[(reset + 1) * 1000]))
        return _decide(count, limit.requests, reset)
