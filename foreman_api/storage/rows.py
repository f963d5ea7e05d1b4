"""Database rows to wire models, and SQL fragments shared by the run and task modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from foreman_api.domain.paging import SortOrder, TimeSortBy
from foreman_api.schemas import Task
from foreman_api.storage.types import TIMESTAMP_TYPE


def task_from_row(row: Mapping[Any, Any]) -> Task:
    return Task.model_validate(row if isinstance(row, dict) else dict(row))


def sort_column(sort_by: TimeSortBy) -> str:
    """The column a ``createdAt``/``updatedAt`` sort orders by."""
    return "created_at" if sort_by == "createdAt" else "updated_at"


def stable_order(
    table: sa.Table, sort_by: TimeSortBy, sort_order: SortOrder
) -> list[sa.UnaryExpression[Any]]:
    """ORDER BY the ``createdAt``/``updatedAt`` column, ties broken by id, for stable pages."""
    column = table.c[sort_column(sort_by)]
    if sort_order == "desc":
        return [column.desc(), table.c.id.desc()]
    return [column.asc(), table.c.id.asc()]


def elapsed_ms_sql(
    dialect: str, *, start: sa.ColumnElement[Any], end: datetime | sa.ColumnElement[Any]
) -> sa.ColumnElement[int]:
    """Whole milliseconds from the ``start`` column to ``end``, computed by the database.

    Lets a transition set ``duration_ms`` in the same ``UPDATE`` that sets ``completed_at``,
    without first reading ``started_at``. NULL when ``start`` is NULL. Both instants are
    millisecond-truncated, so the result is exact (rounding only absorbs float noise).
    ``end`` is a time or an expression such as a bound parameter of TIMESTAMP_TYPE;
    ``dialect`` is the connection's dialect name.
    """
    end_param = end if isinstance(end, sa.ColumnElement) else sa.literal(end, TIMESTAMP_TYPE)
    if dialect == "postgresql":
        seconds = sa.extract("epoch", end_param - start)
        return sa.cast(sa.func.round(seconds * 1000), sa.BigInteger)
    days = sa.func.julianday(end_param) - sa.func.julianday(start)
    return sa.cast(sa.func.round(days * 86_400_000.0), sa.BigInteger)


NARROW_COLUMNS = frozenset({"run_id", "parent_task_id"})
"""Filters whose own index finds few rows (one run's, one parent's)."""


Conditions = Callable[[sa.FromClause], list[sa.ColumnElement[bool]]]
"""More conditions on a table (or an alias of it) for :func:`paged_statements`."""


def paged_statements(
    table: sa.Table,
    columns: tuple[str, ...],
    sort_by: TimeSortBy,
    sort_order: SortOrder,
    extra: Conditions | None = None,
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """A page of ``table`` where each named column equals its ``p_<column>`` parameter
    (and the ``extra`` conditions hold), ordered stably, with ``p_limit``/``p_offset``;
    each row also carries ``total``, the count of every matching row (one statement, one
    snapshot). Also that count alone, for a page that came back empty.
    """

    narrowed = any(column in NARROW_COLUMNS for column in columns)

    def matching(source: sa.FromClause) -> list[sa.ColumnElement[bool]]:
        terms = []
        for column in columns:
            value: sa.ColumnElement[Any] = source.c[column]
            if column == "org_id" and narrowed:
                # Beside a run (or parent) filter, the organisation is checked on rows
                # the narrower index found: as an expression no index serves. Without
                # statistics (SQLite never gathers its own) the planner may otherwise
                # count through the organisation's index: every task it has.
                value = value.concat(sa.literal_column("''"))
            terms.append(value == sa.bindparam(f"p_{column}"))
        return terms + (extra(source) if extra is not None else [])

    counted = table.alias("counted")
    count = sa.select(sa.func.count()).select_from(counted).where(*matching(counted))
    page = (
        sa.select(table, count.scalar_subquery().label("total"))
        .where(*matching(table))
        .order_by(*stable_order(table, sort_by, sort_order))
        .limit(sa.bindparam("p_limit", type_=sa.Integer))
        .offset(sa.bindparam("p_offset", type_=sa.Integer))
    )
    return page, count
