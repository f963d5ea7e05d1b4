"""Pages of run data entries as the response's JSON array, written by the database.

Decoding a page's rows into Python (UUIDs, timestamps, three JSON documents each) and
encoding them again is most of a listing's CPU, so both backends write the JSON:

* **PostgreSQL**: one row, ``json_agg`` of ``json_build_object`` in page order, timestamps
  by ``to_char`` (:func:`postgres_page`).
* **SQLite**: each row's ``json_object`` in page order; Python joins them
  (:func:`sqlite_entries`, :func:`sqlite_page`). Rows, not ``json_group_array``: SQLite
  promises no order for an aggregate's input before 3.44.

SQLite copies a stored JSON document's text as it is: numbers and string escapes as
``json.dumps`` wrote them when the entry was stored, while the row path
(:class:`~foreman_api.http.wire.RowEncoder`) writes what orjson writes for the decoded
values. So each row says whether it must be re-encoded (``reencode``), and a page is

* **written as SQLite wrote it** when no row must: its documents hold no ``\\u`` escape and
  no float in exponent form, and no ``value`` is a top-level float. Both writers then give
  the same bytes: integers (of any size) are written alike, and ``repr`` and orjson agree
  on every float without an exponent;
* **re-encoded** by orjson (parsed and written again, in C) when some row holds the same
  values written differently (``"\\u00e9"`` for ``"é"``, ``1e-05`` for ``0.00001``) or a
  ``value`` that SQLite holds as REAL (its JSON column has NUMERIC affinity: ``1.5`` is a
  REAL, which ``json_object`` writes with 15 digits): each REAL is put back from the float
  the driver read. That is the row path's bytes, unless the page may hold an integer
  beyond 64 bits (19 digits in a row), which orjson would read as a float and the row path
  writes with ``json.dumps``: then, and for text orjson refuses (an unpaired surrogate
  escape), the page is **read as rows** instead.

Stored forms this relies on: UUIDs as 32 lowercase hex digits (``sa.Uuid`` on SQLite) and
times as ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC (``sa.DateTime``), written as the API writes
them (:func:`~foreman_api.schemas.format_timestamp` truncates to milliseconds).
``tests/test_run_data_json.py`` compares pages of awkward values byte for byte with the
row path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from foreman_api.db.base import Row
from foreman_api.schemas import RunData
from foreman_api.storage import json_pages
from foreman_api.storage.tables import run_data as RD

WIRE_FIELDS = json_pages.wire_fields(RunData)
"""(JSON name, column) of each field of an entry in a response."""
_TIMES = json_pages.time_fields(RunData)
_UUIDS = ("id", "run_id", "task_id")
_DOCUMENTS = ("value", "tags", "metadata")


# ---- PostgreSQL ------------------------------------------------------------------------


def postgres_page(
    counted_page: sa.Select[Any], sort: Sequence[sa.Column[Any]], descending: bool
) -> sa.Select[Any]:
    """``counted_page`` (entry columns and ``total``) as one row: ``data``, the entries as
    the response's JSON array in page order (sorted by the ``sort`` columns), and ``total``;
    both NULL for an empty page (:func:`.json_pages.postgres_page`)."""
    return json_pages.postgres_page(
        counted_page, fields=WIRE_FIELDS, times=_TIMES, order=sort, descending=descending
    )


# ---- SQLite ----------------------------------------------------------------------------


def _sql(value: str | int) -> sa.ColumnElement[Any]:
    """A constant written into the statement's text: the page statement binds only the
    query's own values (it has dozens of constants; binding each costs on every call)."""
    if isinstance(value, int):
        return sa.literal_column(str(value), sa.Integer)
    return sa.literal_column("'" + value.replace("'", "''") + "'", sa.Text)


def _text(name: str) -> sa.ColumnElement[str]:
    """Column ``name`` as SQLite holds it (no JSON, UUID or time conversion)."""
    return sa.type_coerce(RD.c[name], sa.Text)


_UUID_GROUPS = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
"""(start, length) of each dash-separated group of a UUID's 32 hex digits."""


def _uuid_text(name: str) -> sa.ColumnElement[str]:
    """``0123…`` (32 hex digits) as ``01234567-89ab-…``; NULL stays NULL."""
    hex_ = _text(name)
    parts = [sa.func.substr(hex_, _sql(start), _sql(length)) for start, length in _UUID_GROUPS]
    dashed: sa.ColumnElement[str] = parts[0]
    for part in parts[1:]:
        dashed = dashed + _sql("-") + part
    return dashed


def _time_text(name: str) -> sa.ColumnElement[str]:
    """``2026-11-26 02:32:49.123456`` as ``2026-11-26T02:32:49.123Z`` (truncated to ms)."""
    stored = _text(name)
    date = sa.func.substr(stored, _sql(1), _sql(10))
    time_ms = sa.func.substr(stored, _sql(12), _sql(12))
    return date + _sql("T") + time_ms + _sql("Z")


RUN_ID_TEXT = "p_run_id_text"
"""The parameter that carries the run's id as the API writes it (``str(uuid)``): every row
of a page is of that run, so it is not formatted from the column row by row."""


def _field(name: str) -> sa.ColumnElement[Any]:
    if name == "run_id":
        return sa.bindparam(RUN_ID_TEXT, type_=sa.Text)
    if name in _UUIDS:
        return _uuid_text(name)
    if name in _TIMES:
        return _time_text(name)
    if name in _DOCUMENTS:
        return sa.func.json(_text(name))  # a JSON argument, not a string, to json_object
    return _text(name)


_EXPONENT = "*[0-9]e[-+][0-9]*"
"""GLOB: a float in exponent form as ``repr`` writes it (``1e-05``, ``2.5e+16``)."""
_LONG_DIGITS = re.compile(r"[0-9]{19}")
"""19 digits in a row, as every integer beyond 64 bits has (UUIDs and times have fewer)."""


def _written_differently(name: str) -> sa.ColumnElement[bool]:
    """Whether a stored JSON document holds a ``\\u`` escape or a float in exponent form
    (NULL for a NULL document). ``instr`` first: it rules most documents out cheaply."""
    document = _text(name)
    exponent = sa.and_(
        sa.or_(_holds(document, "e+"), _holds(document, "e-")),
        document.op("GLOB")(_sql(_EXPONENT)),
    )
    return sa.or_(_holds(document, "\\u"), exponent)


def _holds(text: sa.ColumnElement[str], part: str) -> sa.ColumnElement[bool]:
    return sa.func.instr(text, _sql(part)) > _sql(0)


def _reencode() -> sa.ColumnElement[int]:
    """1 when the row's JSON must be re-encoded (module docstring), else 0."""
    # A test on a NULL document is NULL, which takes no WHEN branch: nothing to re-encode.
    written_differently = sa.or_(_is_real(), *(_written_differently(n) for n in _DOCUMENTS))
    return sa.case((written_differently, _sql(1)), else_=_sql(0))


def _is_real() -> sa.ColumnElement[bool]:
    """Whether SQLite holds the entry's value as REAL (a float at the top level)."""
    return sa.func.typeof(_text("value")) == _sql("real")


def sqlite_entries(counted_page: sa.Select[Any], total: sa.ColumnElement[Any]) -> sa.Select[Any]:
    """``counted_page``'s rows as ``entry`` (the JSON object), ``reencode`` (0 or 1),
    ``real`` (the value when SQLite holds it as REAL, else NULL) and ``total``."""
    fields: list[Any] = []
    for alias, name in WIRE_FIELDS:
        fields.extend([_sql(alias), _field(name)])
    return counted_page.with_only_columns(
        sa.func.json_object(*fields, type_=sa.Text).label("entry"),
        _reencode().label("reencode"),
        sa.case((_is_real(), _text("value"))).label("real"),
        total,
    )


def sqlite_page(rows: Sequence[Row]) -> str | bytes | None:
    """The JSON array of the entries :func:`sqlite_entries` returned, exactly as the row
    path writes it; None when the page must be read as rows (module docstring)."""
    data = "[" + ",".join(row["entry"] for row in rows) + "]"
    if not any(row["reencode"] for row in rows):
        return data
    if _LONG_DIGITS.search(data):
        return None
    try:
        entries = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    for entry, row in zip(entries, rows, strict=True):
        if row["real"] is not None:
            entry["value"] = row["real"]
    return orjson.dumps(entries)
