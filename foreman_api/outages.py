"""Database outages told apart from bugs: answered ``503`` + ``Retry-After``, never internals.

A request that fails because the database cannot be reached (connection refused or lost,
the server shutting down or out of connections, no pooled connection free within the pool
timeout, SQLite's file locked past its busy timeout) or because it had to give way
(deadlock, serialisation failure, lock timeout) did not write anything: the transaction
was rolled back. It answers ``503 database_unavailable`` with ``Retry-After``, and sending
the same request again is safe.

One failure is different: a network database lost while COMMIT was in flight may have
committed. That request answers ``504 database_outcome_unknown``: repeat it only if doing
so twice is harmless (reads, fenced or idempotent updates; the SDK retries 504 for those
and not for creates). To tell it apart, :func:`watch_commits` notes which connection is
committing and tags the exception raised by that COMMIT.

Every other database error stays a ``500 internal_error``: a bug, logged with its traceback.
"""

from __future__ import annotations

import sqlite3
from contextvars import ContextVar
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import ExceptionContext

from foreman_api.db.errors import Unreachable
from foreman_api.errors import ApiError, DatabaseOutcomeUnknown, DatabaseUnavailable

RETRY_AFTER_SECONDS: Final = 1

# SQLite reports many things as OperationalError (syntax errors, missing tables too); these
# are the ones that mean "the file cannot be used right now".
_SQLITE_OUTAGES: Final = (
    "database is locked",
    "database table is locked",
    "unable to open database file",
    "disk i/o error",
)
# PostgreSQL SQLSTATE classes (or codes) that mean "not now", not "wrong request":
# 08 connection exception, 40 transaction rollback (deadlock, serialisation), 53
# insufficient resources, 57 operator intervention (shutdown, statement timeout, starting
# up), 58 system error, 55P03 lock not available.
_POSTGRES_TRANSIENT: Final = ("08", "40", "53", "57", "58", "55P03")

_COMMIT_UNKNOWN: Final = "foreman_commit_outcome_unknown"
_committing: ContextVar[sa.Connection | None] = ContextVar("foreman_committing", default=None)


def watch_commits(engine: sa.Engine) -> None:
    """Tag the exception of a COMMIT that failed on a network database (see module doc).

    SQLite needs no tag: a COMMIT on a local file that fails has not committed.
    """
    if engine.dialect.name == "sqlite" or sa.event.contains(engine, "commit", _on_commit):
        return
    sa.event.listen(engine, "commit", _on_commit)
    sa.event.listen(engine, "begin", _on_begin)
    sa.event.listen(engine, "handle_error", _on_error)


def _on_commit(conn: sa.Connection) -> None:
    _committing.set(conn)


def _on_begin(_conn: sa.Connection) -> None:
    _committing.set(None)


def _on_error(context: ExceptionContext) -> None:
    failed = context.sqlalchemy_exception
    if (
        failed is not None
        and context.statement is None
        and context.connection is not None
        and _committing.get() is context.connection
    ):
        setattr(failed, _COMMIT_UNKNOWN, True)


def database_outage(exc: BaseException) -> ApiError | None:
    """The error to answer for ``exc`` if it is a database outage; None for anything else."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if isinstance(exc, Unreachable):  # the request path's driver errors (foreman_api.db)
        return _outage(exc.outcome_unknown, headers)
    if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection free in time
        return DatabaseUnavailable(
            "the database is too busy to take this request; nothing was written, try again shortly",
            headers=headers,
        )
    if not isinstance(exc, sa.exc.DBAPIError) or not _unavailable(exc):
        return None
    return _outage(getattr(exc, _COMMIT_UNKNOWN, False), headers)


def _outage(outcome_unknown: bool, headers: dict[str, str]) -> ApiError:
    if outcome_unknown:
        return DatabaseOutcomeUnknown(
            "the connection to the database was lost while saving; the change may or may "
            "not have been saved",
            headers=headers,
        )
    return DatabaseUnavailable(
        "the database is unavailable; nothing was written, try again shortly", headers=headers
    )


def _unavailable(exc: sa.exc.DBAPIError) -> bool:
    original = exc.orig
    if isinstance(original, sqlite3.Error):
        message = str(original).lower()
        return isinstance(original, sqlite3.OperationalError) and any(
            text in message for text in _SQLITE_OUTAGES
        )
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    sqlstate = getattr(original, "sqlstate", None)
    # No SQLSTATE: the driver's own failure to connect or to talk to the server.
    return not sqlstate or str(sqlstate).startswith(_POSTGRES_TRANSIENT)
