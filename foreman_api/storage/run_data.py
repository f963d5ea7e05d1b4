"""SQL for run data: entries of a run's key-value store, their tags, and the filters.

``run_data.seq`` is insertion order; "latest" means highest ``seq``. ``is_latest`` marks
exactly one entry per (run, key), kept in the write transaction: an insert clears the
previous latest of its key, deleting the latest promotes the newest remaining entry. On
PostgreSQL a transaction-scoped advisory lock on (run, key) serialises writers of one key
(without it two concurrent first inserts of a key would both be latest); SQLite's
``BEGIN IMMEDIATE`` already serialises every writer.

``run_data_tags`` holds one row per (entry, tag) and is the tag index; the entry's ``tags``
JSON column is what responses carry.

Errors: :class:`RunNotFound`, :class:`EntryNotFound`, :class:`TaskNotInRun` (all
:class:`RunDataError`); the routes translate them into HTTP errors.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from foreman_api.clock import utcnow
from foreman_api.domain.run_data_query import (
    LIKE_ESCAPE,
    RunDataQuery,
    SortBy,
    SortOrder,
    TagMode,
    TextRange,
)
from foreman_api.storage.engine import single_read, write_transaction
from foreman_api.storage.tables import run_data, run_data_tags, runs, tasks

RD = run_data
TAGS = run_data_tags
_COLUMNS = [c for c in RD.c if c.name not in ("seq", "is_latest")]
_RETURNED = [RD.c.seq, *_COLUMNS]
_BOUND = [c.name for c in _COLUMNS]


class RunDataError(Exception):
    """Base of the run data storage errors."""


class RunNotFound(RunDataError):
    """No such run in the caller's organisation."""


class EntryNotFound(RunDataError):
    """No such entry in this run."""


class TaskNotInRun(RunDataError):
    """The ``taskId`` is not a task of this run."""


@dataclass(frozen=True, slots=True)
class RunDataRecord:
    id: uuid.UUID
    run_id: uuid.UUID
    task_id: uuid.UUID | None
    org_id: str
    key: str
    value: Any
    tags: list[str]
    metadata: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RecordPage:
    records: list[RunDataRecord]
    total: int


def _record(row: sa.RowMapping) -> RunDataRecord:
    return RunDataRecord(
        id=row["id"],
        run_id=row["run_id"],
        task_id=row["task_id"],
        org_id=row["org_id"],
        key=row["key"],
        value=row["value"],
        tags=list(row["tags"]),
        metadata=row["metadata"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


# ---- locks and checks -------------------------------------------------------------------


def _key_lock_id(run_id: uuid.UUID, key: str) -> int:
    """A stable signed 64-bit id for the advisory lock of one (run, key)."""
    digest = hashlib.blake2b(run_id.bytes + key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_key(conn: sa.Connection, run_id: uuid.UUID, key: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_key_lock_id(run_id, key))))


def _run_org(run_id: uuid.UUID) -> sa.ScalarSelect[Any]:
    return sa.select(runs.c.org_id).where(runs.c.id == run_id).scalar_subquery()


def _require_run(conn: sa.Connection, *, org_id: str, run_id: uuid.UUID) -> None:
    if conn.execute(sa.select(_run_org(run_id))).scalar() != org_id:
        raise RunNotFound(run_id)


# ---- writes -----------------------------------------------------------------------------


def create_entry(
    engine: sa.Engine,
    *,
    org_id: str,
    run_id: uuid.UUID,
    key: str,
    value: Any,
    task_id: uuid.UUID | None,
    tags: list[str],
    metadata: dict[str, Any] | None,
) -> RunDataRecord:
    """Insert an entry as the latest of its key. Tags are deduplicated, order kept."""
    tags = list(dict.fromkeys(tags))
    now = utcnow()
    entry = {
        "id": uuid.uuid4(),
        "run_id": run_id,
        "task_id": task_id,
        "org_id": org_id,
        "key": key,
        "value": value,
        "tags": tags,
        "metadata": metadata,
        "is_latest": True,
        "created_at": now,
        "updated_at": now,
    }
    with write_transaction(engine) as conn:
        postgres = conn.dialect.name == "postgresql"
        checks: list[Any] = [_run_org(run_id)]
        if task_id is not None:
            checks.append(
                sa.select(sa.func.count())
                .where(tasks.c.id == task_id, tasks.c.run_id == run_id)
                .scalar_subquery()
            )
        if postgres:
            # The key's lock rides along with the checks: one round trip. Taken even when a
            # check fails, it only delays other writers of the same (run, key) until this
            # transaction ends.
            checks.append(sa.func.pg_advisory_xact_lock(_key_lock_id(run_id, key)))
        found = conn.execute(sa.select(*checks)).one()
        if found[0] != org_id:
            raise RunNotFound(run_id)
        if task_id is not None and not found[1]:
            raise TaskNotInRun(task_id)
        if postgres:
            row = conn.execute(_INSERT_LATEST, {**entry, "tag_list": tags}).mappings().one()
        else:
            conn.execute(_clear_latest(run_id, key))
            row = conn.execute(RD.insert().values(entry).returning(*_RETURNED)).mappings().one()
            if tags:
                conn.execute(
                    TAGS.insert(),
                    [{"run_data_seq": row["seq"], "tag": tag, "run_id": run_id} for tag in tags],
                )
    return _record(row)


def _clear_latest(run_id: uuid.UUID, key: str) -> sa.Update:
    """Unmark the current latest entry of (run, key)."""
    return (
        RD.update()
        .where(RD.c.run_id == run_id, RD.c.key == key, RD.c.is_latest == sa.true())
        .values(is_latest=False)
    )


_INSERT_LATEST = (
    sa.text(
        """
        WITH cleared AS (
            UPDATE run_data SET is_latest = false
            WHERE run_id = :run_id AND key = :key AND is_latest
        ),
        inserted AS (
            INSERT INTO run_data (id, run_id, task_id, org_id, key, value, tags, metadata,
                                  is_latest, created_at, updated_at)
            VALUES (:id, :run_id, :task_id, :org_id, :key, :value, :tags, :metadata,
                    true, :created_at, :updated_at)
            RETURNING seq, id, run_id, task_id, org_id, key, value, tags, metadata,
                      created_at, updated_at
        ),
        tagged AS (
            INSERT INTO run_data_tags (run_data_seq, tag, run_id)
            SELECT inserted.seq, new_tag, inserted.run_id
            FROM inserted CROSS JOIN unnest(CAST(:tag_list AS text[])) AS new_tag
        )
        SELECT * FROM inserted
        """
    )
    .bindparams(
        *(sa.bindparam(name, type_=RD.c[name].type) for name in _BOUND),
        sa.bindparam("tag_list", type_=postgresql.ARRAY(sa.Text)),
    )
    .columns(*_RETURNED)
)
"""PostgreSQL: clear the key's latest, insert the entry and its tag rows, in ONE statement.

Run once the key's advisory lock is held, so its snapshot (taken when the statement
starts) sees every earlier writer of the key committed. The data-modifying CTEs share that
snapshot: the UPDATE cannot see the row being inserted, and the tag rows' foreign key is
checked at the end of the statement, once the entry exists. Plain SQL so that its compiled
form is cached whatever the number of tags.
"""


def update_tags(
    engine: sa.Engine,
    *,
    org_id: str,
    run_id: uuid.UUID,
    entry_id: uuid.UUID,
    add: list[str],
    remove: list[str],
) -> RunDataRecord:
    """Remove then add tags (existing order kept, new ones appended); bumps ``updatedAt``."""
    with write_transaction(engine) as conn:
        _require_run(conn, org_id=org_id, run_id=run_id)
        current = (
            conn.execute(
                sa.select(RD.c.seq, RD.c.tags)
                .where(RD.c.id == entry_id, RD.c.run_id == run_id)
                .with_for_update()
            )
            .mappings()
            .first()
        )
        if current is None:
            raise EntryNotFound(entry_id)
        seq = current["seq"]
        old = list(current["tags"])
        dropped = set(remove)
        kept = [tag for tag in old if tag not in dropped]
        added = [tag for tag in dict.fromkeys(add) if tag not in kept]
        new = kept + added
        row = (
            conn.execute(
                RD.update()
                .where(RD.c.seq == seq)
                .values(tags=new, updated_at=utcnow())
                .returning(*_COLUMNS)
            )
            .mappings()
            .one()
        )
        gone = [tag for tag in old if tag not in new]
        if gone:
            conn.execute(TAGS.delete().where(TAGS.c.run_data_seq == seq, TAGS.c.tag.in_(gone)))
        fresh = [tag for tag in new if tag not in old]
        if fresh:
            conn.execute(
                TAGS.insert(),
                [{"run_data_seq": seq, "tag": tag, "run_id": run_id} for tag in fresh],
            )
    return _record(row)


def delete_by_key(engine: sa.Engine, *, org_id: str, run_id: uuid.UUID, key: str) -> int:
    """Delete every entry of ``key``; returns how many. Tag rows cascade."""
    with write_transaction(engine) as conn:
        _require_run(conn, org_id=org_id, run_id=run_id)
        _lock_key(conn, run_id, key)
        result = conn.execute(RD.delete().where(RD.c.run_id == run_id, RD.c.key == key))
        return result.rowcount


def delete_by_id(engine: sa.Engine, *, org_id: str, run_id: uuid.UUID, entry_id: uuid.UUID) -> int:
    """Delete one entry (0 or 1); if it was its key's latest, promote the newest remaining."""
    with write_transaction(engine) as conn:
        key = conn.execute(
            sa.select(RD.c.key).where(
                RD.c.id == entry_id, RD.c.run_id == run_id, _run_org(run_id) == org_id
            )
        ).scalar()
        if key is None:
            _require_run(conn, org_id=org_id, run_id=run_id)
            return 0
        _lock_key(conn, run_id, key)
        was_latest = conn.execute(
            RD.delete().where(RD.c.id == entry_id).returning(RD.c.is_latest)
        ).scalar()
        if was_latest is None:
            return 0  # deleted meanwhile by another writer
        if was_latest:
            newest = (
                sa.select(sa.func.max(RD.c.seq))
                .where(RD.c.run_id == run_id, RD.c.key == key)
                .scalar_subquery()
            )
            conn.execute(RD.update().where(RD.c.seq == newest).values(is_latest=True))
        return 1


# ---- reads ------------------------------------------------------------------------------


def _in_range(column: sa.ColumnElement[str], text_range: TextRange) -> ColumnElement[bool]:
    if text_range.high is None:
        return column >= text_range.low
    return sa.and_(column >= text_range.low, column < text_range.high)


def _key_condition(query: RunDataQuery) -> ColumnElement[bool] | None:
    if not query.filters_keys:
        return None
    terms: list[ColumnElement[bool]] = []
    if query.keys:
        terms.append(RD.c.key.in_(query.keys))
    terms.extend(_in_range(RD.c.key, r) for r in query.key_prefixes)
    for pattern in query.key_patterns:
        like = RD.c.key.like(pattern.like, escape=LIKE_ESCAPE)
        terms.append(
            like if pattern.prefix is None else sa.and_(_in_range(RD.c.key, pattern.prefix), like)
        )
    return sa.or_(*terms)


def _tagged(run_id: uuid.UUID, *conditions: ColumnElement[bool]) -> sa.Select[Any]:
    return sa.select(TAGS.c.run_data_seq).where(TAGS.c.run_id == run_id, *conditions)


def _tag_conditions(query: RunDataQuery, run_id: uuid.UUID) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    every = query.tag_mode == TagMode.ALL
    if query.tags:
        tagged = _tagged(run_id, TAGS.c.tag.in_(query.tags))
        if every and len(query.tags) > 1:
            tagged = tagged.group_by(TAGS.c.run_data_seq).having(sa.func.count() == len(query.tags))
        conditions.append(RD.c.seq.in_(tagged))
    if query.tag_prefixes and every:
        conditions.extend(
            RD.c.seq.in_(_tagged(run_id, _in_range(TAGS.c.tag, r))) for r in query.tag_prefixes
        )
    elif query.tag_prefixes:
        ranges = [_in_range(TAGS.c.tag, r) for r in query.tag_prefixes]
        conditions.append(RD.c.seq.in_(_tagged(run_id, sa.or_(*ranges))))
    return conditions


def _matching(query: RunDataQuery, run_id: uuid.UUID) -> list[ColumnElement[bool]]:
    """WHERE terms selecting the entries to return (before paging)."""
    where: list[ColumnElement[bool]] = [RD.c.run_id == run_id]
    key_condition = _key_condition(query)
    if key_condition is not None:
        where.append(key_condition)
    tag_conditions = _tag_conditions(query, run_id)
    where.extend(tag_conditions)
    if query.include_all:
        return where
    if not tag_conditions:
        # Key filters select all entries of a key or none: its latest is the is_latest one.
        return [*where, RD.c.is_latest == sa.true()]
    # Tag filters select some entries of a key: keep the newest matching one per key.
    latest = sa.select(sa.func.max(RD.c.seq)).where(*where).group_by(RD.c.key)
    return [RD.c.run_id == run_id, RD.c.seq.in_(latest)]


def _order_by(query: RunDataQuery) -> list[sa.UnaryExpression[Any]]:
    # createdAt sorts by seq: insertion order, the exact form of creation time.
    columns: Sequence[sa.ColumnElement[Any]] = {
        SortBy.CREATED_AT: [RD.c.seq],
        SortBy.UPDATED_AT: [RD.c.updated_at, RD.c.seq],
        SortBy.KEY: [RD.c.key, RD.c.seq],
    }[query.sort_by]
    if query.sort_order == SortOrder.DESC:
        return [c.desc() for c in columns]
    return [c.asc() for c in columns]


def query_statements(
    query: RunDataQuery, *, run_id: uuid.UUID
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The page and the count statements of a query (exposed for EXPLAIN in tests)."""
    where = _matching(query, run_id)
    page = (
        sa.select(*_COLUMNS)
        .where(*where)
        .order_by(*_order_by(query))
        .limit(query.limit)
        .offset(query.offset)
    )
    count = sa.select(sa.func.count()).select_from(RD).where(*where)
    return page, count


def list_entries(
    engine: sa.Engine, *, org_id: str, run_id: uuid.UUID, query: RunDataQuery
) -> RecordPage:
    """One page of matching entries and the total.

    Usually one statement: the page carries the total as a window count, and rows of this
    organisation prove the run is its own. Only an empty page needs a second look, to tell
    an unknown run (``404``) from a page past the end.
    """
    page, count = query_statements(query, run_id=run_id)
    counted = page.add_columns(sa.func.count().over().label("total_matching")).where(
        RD.c.org_id == org_id
    )
    with single_read(engine) as conn:
        rows = conn.execute(counted).mappings().all()
        if rows:
            return RecordPage(
                records=[_record(row) for row in rows], total=int(rows[0]["total_matching"])
            )
        # One statement again: the owner and the count come from one snapshot.
        owner, total = conn.execute(sa.select(_run_org(run_id), count.scalar_subquery())).one()
    if owner != org_id:
        raise RunNotFound(run_id)
    return RecordPage(records=[], total=total)
