"""The service's notion of now: timezone-aware UTC, truncated to milliseconds.

Truncating once here means what is stored, compared and returned is the same instant.
:func:`reading` lets an in-process test harness (:mod:`foreman_worker.testing`) move the
service's time forward, so that a retry's backoff or a lease can pass without waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime


def _system_now() -> datetime:
    return datetime.now(UTC)


_source: Callable[[], datetime] = _system_now


def utcnow() -> datetime:
    now = _source()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@contextmanager
def reading(source: Callable[[], datetime]) -> Iterator[None]:
    """Take the service's time from ``source`` (aware UTC) while the block runs.

    The time is process-wide: meant for tests that run the API in process.
    """
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def duration_ms(start: datetime | None, end: datetime) -> int | None:
    if start is None:
        return None
    return int((as_utc(end) - as_utc(start)).total_seconds() * 1000)
