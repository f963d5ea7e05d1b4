"""Engine creation for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

WRITE_OPTION = "foreman_write"
"""Execution option marking a connection whose transaction will write."""

PING_AFTER_IDLE_SECONDS = 1.0
"""A pooled connection idle for longer than this is pinged before use (see _ping_if_idle)."""
_CHECKED_IN_AT = "foreman_checked_in_at"


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that will write: takes SQLite's write lock up front, commits on exit."""
    with engine.connect() as conn:
        conn = conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            yield conn


@contextmanager
def single_read(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for ONE read statement, which is atomic by itself.

    On PostgreSQL it runs in autocommit mode: no ``BEGIN`` before the statement and no
    ``ROLLBACK`` when the connection returns to the pool, two round trips saved. SQLite
    (local, no round trips) uses the usual deferred transaction.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


@contextmanager
def read_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A read-only transaction: one consistent snapshot for a page and its total.

    PostgreSQL's default READ COMMITTED takes a snapshot per statement, so reads that belong
    together run under REPEATABLE READ (psycopg puts it in the BEGIN: no extra round trip).
    SQLite transactions are snapshots already.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` and ``postgres://`` URLs."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Key patterns and prefixes are matched literally and case-sensitively, as on PostgreSQL.
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Writers take the write lock at BEGIN, so two writers never deadlock upgrading a read
    # lock; readers use a deferred BEGIN and run concurrently under WAL.
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def _sqlite_autocommit_off(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is off; _sqlite_begin issues BEGIN itself.
    dbapi_connection.isolation_level = None


def _remember_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info[_CHECKED_IN_AT] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Check a connection that sat idle in the pool before handing it out.

    Replaces ``pool_pre_ping``, which costs a ``SELECT 1`` round trip on every checkout:
    under load connections come back within milliseconds and are not pinged; one idle for
    longer than PING_AFTER_IDLE_SECONDS (when a database restart may have killed it) is.
    A failed ping discards the connection and the pool retries with a fresh one. A
    connection that dies while busy fails its statement, and SQLAlchemy then invalidates
    the whole pool, as it does with ``pool_pre_ping``.
    """
    checked_in = record.info.get(_CHECKED_IN_AT)
    if checked_in is None or time.monotonic() - checked_in < PING_AFTER_IDLE_SECONDS:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()  # leave no transaction open (autocommit is off)
    except Exception as exc:
        raise sa.exc.DisconnectionError(f"stale pooled connection: {exc}") from exc


def create_engine(url: str, *, pool_size: int = 20) -> sa.Engine:
    """An engine with the pragmas and pool this service relies on."""
    url = normalise_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        sa.event.listen(engine, "connect", _sqlite_autocommit_off)
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    engine = sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size)
    sa.event.listen(engine.pool, "checkin", _remember_checkin)
    sa.event.listen(engine.pool, "checkout", _ping_if_idle)
    return engine
