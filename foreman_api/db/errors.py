"""Driver-neutral database errors the storage layer and the error handlers rely on."""

from __future__ import annotations


class DatabaseError(Exception):
    """A database failure that is not the caller's fault (a bug unless a subclass says so)."""


class IntegrityViolation(DatabaseError):
    """A constraint refused the write (e.g. a unique index); nothing was written."""


class Unreachable(DatabaseError):
    """The database cannot take the request now (down, restarting, locked, overloaded).

    ``outcome_unknown``: the connection was lost while COMMIT was in flight, so the
    transaction may have committed. Otherwise nothing was written.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown
