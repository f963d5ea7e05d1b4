"""The request path's database access: async, no ORM layer between a route and its rows.

Statements are still written with SQLAlchemy Core (one SQL source for both backends), but
each is compiled once per shape (:mod:`.statements`) and executed straight on the driver:
asyncpg on PostgreSQL, the standard library's ``sqlite3`` on SQLite
(:mod:`.postgres`, :mod:`.sqlite`). Rows come back as plain dicts.
"""

from foreman_api.db.base import Database, Session
from foreman_api.db.connect import open_database
from foreman_api.db.errors import DatabaseError, IntegrityViolation, Unreachable

__all__ = [
    "Database",
    "DatabaseError",
    "IntegrityViolation",
    "Session",
    "Unreachable",
    "open_database",
]
