"""What every backend offers the storage layer: statements, and transactions of them."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

from sqlalchemy.sql import Executable

Row = dict[str, Any]
Params = Mapping[str, Any]
Isolation = Literal["read committed", "repeatable read"]


class Session(Protocol):
    """Statements on one connection (inside a transaction when opened by ``transaction``).

    Within a transaction await nothing but these methods: on SQLite the transaction holds
    the process's only write connection, and it must not yield to other requests.
    """

    dialect: str

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        """The first row the statement returns, or None."""
        ...

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        """Every row the statement returns."""
        ...

    async def scalar(self, statement: Executable, params: Params | None = None) -> Any:
        """The first column of the first row (None without rows)."""
        ...

    async def run(self, statement: Executable, params: Params | None = None) -> int:
        """Execute for its effect; the number of rows it changed."""
        ...


class Database(Session, Protocol):
    """A connection pool: single statements run on any connection, without a transaction
    (each is atomic by itself); related ones share a :meth:`transaction`."""

    def transaction(
        self, *, write: bool = False, isolation: Isolation = "read committed"
    ) -> AbstractAsyncContextManager[Session]:
        """A transaction committed when the block exits normally, rolled back otherwise.

        ``write`` takes SQLite's write lock at the start (no lock upgrade deadlocks);
        ``isolation="repeatable read"`` gives several reads one snapshot on PostgreSQL
        (SQLite transactions are snapshots already).
        """
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...

    def terminate(self) -> None:
        """Close every connection at once, without the event loop (it may be gone)."""
        ...
