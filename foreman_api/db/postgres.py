"""PostgreSQL through asyncpg: a connection pool on the event loop, no thread hop.

asyncpg prepares each statement once per connection and speaks the binary protocol; JSON
and JSONB columns are encoded and decoded with orjson. Driver errors are translated to
:mod:`foreman_api.db.errors`: connection failures, server shutdown, overload and transient
conflicts (SQLSTATE classes 08, 40, 53, 57, 58 and 55P03) are :class:`Unreachable`; a
connection lost during COMMIT is :class:`Unreachable` with ``outcome_unknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import orjson
from sqlalchemy.engine import make_url
from sqlalchemy.sql import Executable

from foreman_api.db.base import Isolation, Params, Row, Session
from foreman_api.db.errors import DatabaseError, IntegrityViolation, Unreachable
from foreman_api.db.statements import prepare

DIALECT = "postgresql"
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57", "58", "55P03")
ACQUIRE_TIMEOUT_SECONDS = 10.0
"""How long a request waits for a free pooled connection before it answers 503."""
CONNECT_TIMEOUT_SECONDS = 5.0


_LONG_NUMBER = re.compile(r"\d{19}")


def _decode_json(text: str) -> Any:
    # orjson reads an integer beyond 64 bits as a float; the standard library keeps it exact
    # (19 digits: -9999999999999999999 is one already).
    return json.loads(text) if _LONG_NUMBER.search(text) else orjson.loads(text)


def _encode_json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # integers beyond 64 bits: valid JSON, slower path
        return json.dumps(value, ensure_ascii=False)


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Return a connection to the pool as it is (after asyncpg rolls back any transaction).

    asyncpg's default reset runs ``RESET ALL``, ``UNLISTEN *``, ``pg_advisory_unlock_all()``
    and ``CLOSE ALL``: one more round trip per request, for session state this code never
    creates (no SET, no LISTEN, no advisory locks, no cursors).
    """


async def _setup(connection: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, schema="pg_catalog", encoder=_encode_json, decoder=_decode_json
        )


def translate(exc: BaseException, *, committing: bool = False) -> BaseException:
    """The :mod:`foreman_api.db.errors` exception for a driver exception (or it, unchanged)."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityViolation(str(exc))
    sqlstate = getattr(exc, "sqlstate", None)
    lost = isinstance(
        exc,
        OSError
        | asyncio.TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.ConnectionDoesNotExistError,
    )
    if lost or (sqlstate and str(sqlstate).startswith(_TRANSIENT_SQLSTATES)):
        return Unreachable(f"{type(exc).__name__}: {exc}", outcome_unknown=committing and lost)
    if isinstance(exc, asyncpg.PostgresError):
        return DatabaseError(f"{type(exc).__name__}: {exc}")
    return exc


class _Statements:
    """The statement methods; subclasses say which connection runs them (:meth:`_on`)."""

    dialect = DIALECT

    def _on(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        raise NotImplementedError

    async def _call(self, method: str, statement: Executable, params: Params | None) -> Any:
        prepared = prepare(statement, DIALECT, params)
        args = prepared.args(params)
        try:
            async with self._on() as connection:
                return await getattr(connection, method)(prepared.sql, *args)
        except DatabaseError:
            raise
        except Exception as exc:
            raise translate(exc) from exc

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        record = await self._call("fetchrow", statement, params)
        return dict(record) if record is not None else None

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        return [dict(record) for record in await self._call("fetch", statement, params)]

    async def scalar(self, statement: Executable, params: Params | None = None) -> Any:
        return await self._call("fetchval", statement, params)

    async def run(self, statement: Executable, params: Params | None = None) -> int:
        status = await self._call("execute", statement, params)
        # "UPDATE 3", "INSERT 0 1", "DELETE 0": the count is the last word.
        count = str(status).rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0


class _Connection(_Statements):
    """Statements on one connection: the one a transaction holds."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    @asynccontextmanager
    async def _on(self) -> AsyncIterator[asyncpg.Connection]:
        yield self._connection


class PostgresDatabase(_Statements):
    """A pool of asyncpg connections (opened lazily, up to ``pool_size``)."""

    def __init__(self, url: str, *, pool_size: int = 20) -> None:
        parsed = make_url(url)
        self._connect_args = {
            "host": parsed.host or "127.0.0.1",
            "port": parsed.port or 5432,
            "user": parsed.username,
            "password": parsed.password,
            "database": parsed.database,
            "timeout": CONNECT_TIMEOUT_SECONDS,
        }
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgresDatabase.open() was not awaited")
        return self._pool

    @asynccontextmanager
    async def _on(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for one statement (autocommit: no BEGIN, no ROLLBACK)."""
        try:
            connection = await self.pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS)
        except Exception as exc:
            raise translate(exc) from exc
        try:
            yield connection
        finally:
            await self.pool.release(connection)

    async def open(self) -> None:
        """Create the pool (no connection is made until a request needs one)."""
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    **self._connect_args,
                    min_size=0,
                    max_size=self._pool_size,
                    init=_setup,
                    reset=_keep_session,
                    max_inactive_connection_lifetime=60.0,
                )

    @asynccontextmanager
    async def transaction(
        self, *, write: bool = False, isolation: Isolation = "read committed"
    ) -> AsyncIterator[Session]:
        pool = self.pool
        try:
            connection = await pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS)
        except Exception as exc:
            raise translate(exc) from exc
        try:
            transaction = connection.transaction(
                isolation=isolation.replace(" ", "_"), readonly=not write
            )
            try:
                await transaction.start()
            except Exception as exc:
                raise translate(exc) from exc
            try:
                yield _Connection(connection)
            except BaseException:
                if not connection.is_closed():
                    try:
                        await transaction.rollback()
                    except Exception:  # the connection is gone: nothing to roll back
                        connection.terminate()
                raise
            try:
                await transaction.commit()
            except Exception as exc:
                raise translate(exc, committing=True) from exc
        finally:
            await pool.release(connection)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def terminate(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # When the pool's event loop is already closed (a test client's, between
            # requests), aborting raises; its sockets then close when collected.
            with contextlib.suppress(RuntimeError):
                pool.terminate()
