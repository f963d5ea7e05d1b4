"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
"""JSON documents; JSONB on PostgreSQL. Python ``None`` is stored as SQL NULL."""

UUID_TYPE = sa.Uuid(as_uuid=True)


def literal_text(length: int) -> sa.types.TypeEngine[str]:
    """A string column compared byte by byte (code point order) on both backends.

    Range scans for prefixes (``key >= 'ab' AND key < 'ac'``) rely on this order; PostgreSQL's
    default locale collation would break them, SQLite's BINARY already has it.
    """
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


SEQ_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""An auto-increment key: SQLite only auto-increments ``INTEGER PRIMARY KEY``."""

TIMESTAMP_TYPE = sa.DateTime(timezone=True)
