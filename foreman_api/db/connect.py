"""Open the request path's database for a database URL (the same URLs as the engine's)."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from foreman_api.db.base import Database
from foreman_api.db.postgres import PostgresDatabase
from foreman_api.db.sqlite import SqliteDatabase


async def open_database(
    url: str, *, pool_size: int = 20, sqlite_lock_timeout: float = 30.0
) -> Database:
    """A connected :class:`Database` for ``url`` (``sqlite:///…`` or ``postgresql://…``)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    database: PostgresDatabase | SqliteDatabase
    if parsed.get_backend_name() == "sqlite":
        database = SqliteDatabase(parsed.database or ":memory:", lock_timeout=sqlite_lock_timeout)
    elif parsed.get_backend_name() == "postgresql":
        database = PostgresDatabase(url, pool_size=pool_size)
    else:
        raise ValueError(f"unsupported database URL: {parsed.get_backend_name()}")
    await database.open()
    return database
