"""Pages of rows as the response's JSON array, written by PostgreSQL.

Decoding a page's rows into Python (UUIDs, timestamps, JSON documents) and encoding them
again is most of a listing's CPU in the API process, which is what a busy listing is bound
by; PostgreSQL writes the same JSON for a fraction of that. A page statement (rows of the
page, each carrying ``total``) becomes one row: ``data``, ``json_agg`` of
``json_build_object`` in page order, and ``total``.

The objects are the row path's (:class:`~foreman_api.http.wire.RowEncoder`) value for
value: field names by the model's aliases, timestamps by ``to_char`` in the API's form
(``2026-11-26T02:32:49.123Z``, truncated to the millisecond as
:func:`~foreman_api.schemas.format_timestamp` does), UUIDs and status strings as text, JSON
documents as stored. Only the spacing of ``jsonb`` documents differs (``{"a": 1}``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.dialects import postgresql

from foreman_api.db.base import Row
from foreman_api.schemas import allowed_types, wire_name

ISO_UTC_MS: sa.ColumnElement[str] = sa.literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'""")
"""to_char's pattern for the API's timestamps (``2026-11-26T02:32:49.123Z``)."""


@dataclass(frozen=True, slots=True)
class RecordPage:
    """One page of a listing and the total matching."""

    rows: list[Row]
    """The records, as dicts of their columns (none when ``json`` holds them)."""
    total: int
    json: str | bytes | None = None
    """The records as the response's JSON array, written by the database (none when
    ``rows`` holds them)."""


def wire_fields(model: type[BaseModel]) -> list[tuple[str, str]]:
    """(JSON name, column) of each field of ``model`` in a response."""
    return [(wire_name(name, field), name) for name, field in model.model_fields.items()]


def time_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` that hold timestamps."""
    return frozenset(
        name
        for name, field in model.model_fields.items()
        if datetime in allowed_types(field.annotation)
    )


def postgres_page(
    counted_page: sa.Select[Any],
    *,
    fields: Sequence[tuple[str, str]],
    times: Collection[str],
    order: Sequence[sa.Column[Any]],
    descending: bool,
) -> sa.Select[Any]:
    """``counted_page`` (the page's rows with ``total``) as one row: ``data``, the rows as
    JSON objects of ``fields`` (``times`` written as the API writes timestamps) in page
    order (by the ``order`` columns), and ``total``; both NULL for an empty page."""
    keys = [column.label(f"o_{column.name}") for column in order]
    inner = counted_page.add_columns(*keys).subquery("page")
    by = [inner.c[key.name] for key in keys]
    pairs: list[Any] = []
    for alias, name in fields:
        column: Any = inner.c[name]
        if name in times:
            column = sa.func.to_char(sa.func.timezone("UTC", column), ISO_UTC_MS)
        pairs.extend([sa.literal(alias), column])
    record = sa.func.json_build_object(*pairs)
    ordered = [key.desc() if descending else key.asc() for key in by]
    records = sa.func.json_agg(postgresql.aggregate_order_by(record, *ordered))
    data: sa.ColumnElement[Any] = sa.cast(records, sa.Text).label("data")
    return sa.select(data, sa.func.max(inner.c.total).label("total"))
