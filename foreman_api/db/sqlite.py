"""SQLite through the standard library, run inline on the event loop.

A local statement takes microseconds, less than a hop to a worker thread would, so
statements run on the event loop itself, on two connections per process: one for reads
(WAL lets them run beside another process's writer) and one for writes. A transaction
never yields to the event loop between its statements, so the requests of one process never
interleave inside a transaction; the only wait is for another *process* holding the write
lock, and that wait sleeps asynchronously (``BEGIN IMMEDIATE`` retried until
``lock_timeout``, then :class:`Unreachable`), never blocking the loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import Executable

from foreman_api.db.base import Isolation, Params, Row, Session
from foreman_api.db.errors import DatabaseError, IntegrityViolation, Unreachable
from foreman_api.db.statements import prepare

DIALECT = "sqlite"
# Many things are OperationalError (syntax errors, missing tables too); these mean "the
# file cannot be used right now".
_OUTAGES = (
    "database is locked",
    "database table is locked",
    "unable to open database file",
    "disk i/o error",
)
READ_BUSY_TIMEOUT_MS = 1000
"""How long a read may wait inline for a lock (rare under WAL: a checkpoint, a recovery)."""


def translate(exc: BaseException) -> BaseException:
    """The :mod:`foreman_api.db.errors` exception for a sqlite3 exception (or it, unchanged)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityViolation(str(exc))
    if isinstance(exc, sqlite3.OperationalError) and _is_outage(exc):
        return Unreachable(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, sqlite3.Error):
        return DatabaseError(f"{type(exc).__name__}: {exc}")
    return exc


def _is_outage(exc: sqlite3.Error) -> bool:
    message = str(exc).lower()
    return any(text in message for text in _OUTAGES)


def _connect(path: str, *, busy_timeout_ms: int) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in (
        "journal_mode=WAL",
        "foreign_keys=ON",
        "synchronous=NORMAL",
        f"busy_timeout={busy_timeout_ms}",
        # Key patterns and prefixes are matched literally and case-sensitively, as on PostgreSQL.
        "case_sensitive_like=ON",
    ):
        connection.execute(f"PRAGMA {pragma}")
    return connection


class _Session:
    """Statements on one connection, inline."""

    dialect = DIALECT

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def _execute(self, statement: Executable, params: Params | None) -> Any:
        prepared = prepare(statement, DIALECT, params)
        try:
            cursor = self._connection.execute(prepared.sql, prepared.args(params))
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        return prepared, cursor

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        prepared, cursor = self._execute(statement, params)
        values = cursor.fetchone()
        cursor.close()
        return prepared.row(values) if values is not None else None

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        prepared, cursor = self._execute(statement, params)
        return [prepared.row(values) for values in cursor.fetchall()]

    async def scalar(self, statement: Executable, params: Params | None = None) -> Any:
        row = await self.one(statement, params)
        return next(iter(row.values())) if row else None

    async def run(self, statement: Executable, params: Params | None = None) -> int:
        _, cursor = self._execute(statement, params)
        count: int = cursor.rowcount
        cursor.close()
        return count


class SqliteDatabase:
    """One SQLite file; ``lock_timeout``: how long a write waits for another process."""

    dialect = DIALECT

    def __init__(self, path: str, *, lock_timeout: float = 30.0) -> None:
        self._path = path
        self.lock_timeout = lock_timeout
        self._reader: _Session | None = None
        self._writer: _Session | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = _Session(_connect(self._path, busy_timeout_ms=0))
            self._reader = _Session(_connect(self._path, busy_timeout_ms=READ_BUSY_TIMEOUT_MS))
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def _sessions(self) -> tuple[_Session, _Session]:
        if self._reader is None or self._writer is None:
            raise RuntimeError("SqliteDatabase.open() was not awaited")
        return self._reader, self._writer

    # Single statements: reads on the reader, anything else in a write transaction.

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        if isinstance(statement, sa.Select):
            return await self._sessions()[0].one(statement, params)
        async with self.transaction(write=True) as session:
            return await session.one(statement, params)

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        if isinstance(statement, sa.Select):
            return await self._sessions()[0].all(statement, params)
        async with self.transaction(write=True) as session:
            return await session.all(statement, params)

    async def scalar(self, statement: Executable, params: Params | None = None) -> Any:
        row = await self.one(statement, params)
        return next(iter(row.values())) if row else None

    async def run(self, statement: Executable, params: Params | None = None) -> int:
        async with self.transaction(write=True) as session:
            return await session.run(statement, params)

    @asynccontextmanager
    async def transaction(
        self, *, write: bool = False, isolation: Isolation = "read committed"
    ) -> AsyncIterator[Session]:
        reader, writer = self._sessions()
        if not write:
            _begin(reader, "BEGIN")  # one snapshot for the block's reads
            try:
                yield reader
            finally:
                reader._connection.rollback()
            return
        async with self._write_lock:
            await self._begin_write(writer)
            try:
                yield writer
            except BaseException:
                writer._connection.rollback()
                raise
            try:
                writer._connection.commit()
            except sqlite3.Error as exc:
                writer._connection.rollback()
                raise translate(exc) from exc

    async def _begin_write(self, writer: _Session) -> None:
        """BEGIN IMMEDIATE, waiting (asynchronously) while another process writes."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        while True:
            try:
                writer._connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_outage(exc) or time.monotonic() + delay > deadline:
                    raise translate(exc) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def close(self) -> None:
        self.terminate()

    def terminate(self) -> None:
        for session in (self._reader, self._writer):
            if session is not None:
                session._connection.close()
        self._reader = self._writer = None


def _begin(session: _Session, sql: str) -> None:
    try:
        session._connection.execute(sql)
    except sqlite3.Error as exc:
        raise translate(exc) from exc
