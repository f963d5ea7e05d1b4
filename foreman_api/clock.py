"""The service's notion of now: timezone-aware UTC, truncated to milliseconds.

Truncating once here means what is stored, compared and returned is the same instant.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def duration_ms(start: datetime | None, end: datetime) -> int | None:
    if start is None:
        return None
    return int((as_utc(end) - as_utc(start)).total_seconds() * 1000)
