"""SQL for run data: entries of a run's key-value store, their tags, and the filters.

``run_data.seq`` is insertion order; "latest" means highest ``seq``. ``run_data_latest``
holds one row per (run, key) that has entries: the seq of its latest. A write inserts the
entry and upserts that row (``seq`` raised, never lowered), on PostgreSQL in one statement;
deleting the latest entry points the row at the newest remaining one, or removes it.

**Writers of one key** are ordered by the ``run_data_latest`` row itself. On PostgreSQL two
concurrent upserts of a key meet on it (the second waits and then keeps the higher seq),
and a delete locks it (``FOR UPDATE``) before it reads or deletes entries, so a write
waiting on it is taken into account when the delete has committed. SQLite's
``BEGIN IMMEDIATE`` already serialises every writer.

``run_data_tags`` holds one row per (entry, tag) and is the tag index; the entry's ``tags``
JSON column is what responses carry.

Everything runs on the request path's :class:`~foreman_api.db.Database`; every statement
is built once per shape (module constants, ``lru_cache``'d builders) with bound
parameters, so a request compiles nothing. Rows are dicts of the entry's columns.

Errors: :class:`RunNotFound`, :class:`EntryNotFound`, :class:`TaskNotInRun` (all
:class:`RunDataError`); the routes translate them into HTTP errors.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from foreman_api.clock import utcnow
from foreman_api.db import Database, Session
from foreman_api.db.base import Row
from foreman_api.domain.errors import NotFound, invalid_field
from foreman_api.domain.run_data_query import (
    LIKE_ESCAPE,
    LikePattern,
    RunDataQuery,
    TextRange,
)
from foreman_api.storage.json_pages import RecordPage
from foreman_api.storage.run_data_json import (
    RUN_ID_TEXT,
    postgres_page,
    sqlite_entries,
    sqlite_page,
)
from foreman_api.storage.runs import run_not_found
from foreman_api.storage.tables import run_data, run_data_latest, run_data_tags, runs, tasks

RD = run_data
TAGS = run_data_tags
LATEST = run_data_latest
_COLUMNS = [c for c in RD.c if c.name != "seq"]
_RETURNED = [RD.c.seq, *_COLUMNS]
_BOUND = [c.name for c in _COLUMNS]


def _param(name: str, column: sa.ColumnElement[Any]) -> sa.BindParameter[Any]:
    """A parameter compared with (or stored in) ``column``: bound as its type."""
    return sa.bindparam(name, type_=column.type)


_RUN_ID = _param("p_run_id", RD.c.run_id)


# ---- checks -----------------------------------------------------------------------------


_RUN_ORG = (
    sa.select(runs.c.org_id).where(runs.c.id == _param("p_run_id", runs.c.id)).scalar_subquery()
)
"""The organisation of run ``p_run_id`` (NULL when there is no such run)."""


@cache
def _checks(*, task: bool) -> sa.Select[Any]:
    """The run's organisation (``org_id``); with ``task``, whether task ``p_task_id`` is
    of the run (``task_found``): one round trip."""
    checks: list[Any] = [_RUN_ORG.label("org_id")]
    if task:
        found = (
            sa.select(sa.func.count())
            .where(tasks.c.id == _param("p_task_id", tasks.c.id), tasks.c.run_id == _RUN_ID)
            .scalar_subquery()
        )
        checks.append(found.label("task_found"))
    return sa.select(*checks)


async def _check(
    session: Session, *, org_id: str, run_id: uuid.UUID, task_id: uuid.UUID | None = None
) -> None:
    """``404`` unless the run is ``org_id``'s; ``400`` (field ``taskId``) unless it has the
    task, when one is given."""
    params: dict[str, Any] = {"p_run_id": run_id}
    if task_id is not None:
        params["p_task_id"] = task_id
    found = await session.one(_checks(task=task_id is not None), params)
    if found is None or found["org_id"] != org_id:
        raise run_not_found(run_id)
    if task_id is not None and not found["task_found"]:
        raise invalid_field("taskId", f"task {task_id} is not a task of run {run_id}")


# ---- writes -----------------------------------------------------------------------------


async def create_entry(
    db: Database,
    *,
    org_id: str,
    run_id: uuid.UUID,
    key: str,
    value: Any,
    task_id: uuid.UUID | None,
    tags: list[str],
    metadata: dict[str, Any] | None,
) -> Row:
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
        "created_at": now,
        "updated_at": now,
    }
    if db.dialect == "postgresql":
        # One statement, no transaction around it: it writes only if the checks pass.
        row = await db.one(_INSERT_ENTRY_POSTGRES, {**entry, "tag_list": tags})
        if row is None:
            await _check(db, org_id=org_id, run_id=run_id, task_id=task_id)
            raise RuntimeError("the entry was not inserted, though its run and task check out")
        return row
    async with db.transaction(write=True) as tx:
        await _check(tx, org_id=org_id, run_id=run_id, task_id=task_id)
        row = await tx.one(_INSERT, entry)
        if row is None:
            raise RuntimeError("INSERT … RETURNING returned no row")
        await tx.run(_UPSERT_LATEST_SQLITE, {"run_id": run_id, "key": key, "seq": row["seq"]})
        if tags:
            await _add_tags(tx, seq=row["seq"], run_id=run_id, tags=tags)
    return row


_NEWEST_OF_KEY = (
    sa.select(sa.func.max(RD.c.seq))
    .where(RD.c.run_id == _RUN_ID, RD.c.key == _param("p_key", RD.c.key))
    .scalar_subquery()
)
"""The highest seq of (run, key): one step down ``ix_run_data_run_key_seq``."""
_NEWEST = sa.select(_NEWEST_OF_KEY)
_INSERT = RD.insert().returning(*_RETURNED)
_UPSERT_LATEST_SQLITE = (
    sqlite.insert(LATEST)
    .values(
        run_id=_param("run_id", LATEST.c.run_id),
        key=_param("key", LATEST.c.key),
        seq=_param("seq", LATEST.c.seq),
    )
    .on_conflict_do_update(
        index_elements=[LATEST.c.run_id, LATEST.c.key],
        set_={"seq": sqlite.insert(LATEST).excluded.seq},
    )
)
"""SQLite: make entry ``seq`` the latest of its key (writers are serialised)."""


_INSERT_ENTRY_POSTGRES = (
    sa.text(
        """
        WITH inserted AS (
            INSERT INTO run_data (id, run_id, task_id, org_id, key, value, tags, metadata,
                                  created_at, updated_at)
            SELECT :id, :run_id, :task_id, :org_id, :key, :value, :tags, :metadata,
                   :created_at, :updated_at
            WHERE EXISTS (SELECT 1 FROM runs WHERE runs.id = :run_id AND runs.org_id = :org_id)
              AND (:task_id IS NULL OR EXISTS (
                  SELECT 1 FROM tasks WHERE tasks.id = :task_id AND tasks.run_id = :run_id))
            RETURNING seq, id, run_id, task_id, org_id, key, value, tags, metadata,
                      created_at, updated_at
        ),
        latest AS (
            INSERT INTO run_data_latest (run_id, key, seq)
            SELECT run_id, key, seq FROM inserted
            ON CONFLICT (run_id, key) DO UPDATE SET seq = EXCLUDED.seq
            WHERE run_data_latest.seq < EXCLUDED.seq
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
"""PostgreSQL: check the run's organisation (and that the task is the run's), insert the
entry, make it its key's latest and insert its tag rows, in ONE statement.

Nothing is written when a check fails (no row comes back). The upsert of the key's
``run_data_latest`` row only ever raises its seq: of two concurrent writers of a key, the
second waits for the first's row lock, then compares with the committed seq. Plain SQL
with an array parameter: one statement whatever the number of tags.
"""


@lru_cache(maxsize=128)
def _insert_tags(count: int) -> sa.Insert:
    """Insert ``count`` tag rows of entry ``p_seq``: tags ``p_tag_0`` … (one statement)."""
    seq, run_id = _param("p_seq", TAGS.c.run_data_seq), _param("p_run_id", TAGS.c.run_id)
    return TAGS.insert().values(
        [
            {"run_data_seq": seq, "tag": _param(f"p_tag_{i}", TAGS.c.tag), "run_id": run_id}
            for i in range(count)
        ]
    )


@lru_cache(maxsize=128)
def _delete_tags(count: int) -> sa.Delete:
    """Delete the tag rows ``p_tag_0`` … of entry ``p_seq``."""
    return TAGS.delete().where(
        TAGS.c.run_data_seq == _param("p_seq", TAGS.c.run_data_seq),
        TAGS.c.tag.in_([_param(f"p_tag_{i}", TAGS.c.tag) for i in range(count)]),
    )


def _tag_params(tags: Sequence[str], **params: Any) -> dict[str, Any]:
    return {**params, **{f"p_tag_{i}": tag for i, tag in enumerate(tags)}}


async def _add_tags(tx: Session, *, seq: int, run_id: uuid.UUID, tags: Sequence[str]) -> None:
    await tx.run(_insert_tags(len(tags)), _tag_params(tags, p_seq=seq, p_run_id=run_id))


_ENTRY_FOR_UPDATE = (
    sa.select(RD.c.seq, RD.c.tags)
    .where(RD.c.id == _param("p_entry_id", RD.c.id), RD.c.run_id == _RUN_ID)
    .with_for_update()
)
_SET_TAGS = (
    RD.update()
    .where(RD.c.seq == _param("p_seq", RD.c.seq))
    .values(tags=_param("p_tags", RD.c.tags), updated_at=_param("p_now", RD.c.updated_at))
    .returning(*_COLUMNS)
)


async def update_tags(
    db: Database,
    *,
    org_id: str,
    run_id: uuid.UUID,
    entry_id: uuid.UUID,
    add: list[str],
    remove: list[str],
) -> Row:
    """Remove then add tags (existing order kept, new ones appended); bumps ``updatedAt``."""
    async with db.transaction(write=True) as tx:
        await _check(tx, org_id=org_id, run_id=run_id)
        current = await tx.one(_ENTRY_FOR_UPDATE, {"p_entry_id": entry_id, "p_run_id": run_id})
        if current is None:
            raise NotFound(f"run data entry {entry_id} not found in run {run_id}")
        seq = current["seq"]
        old = list(current["tags"])
        dropped = set(remove)
        kept = [tag for tag in old if tag not in dropped]
        added = [tag for tag in dict.fromkeys(add) if tag not in kept]
        new = kept + added
        row = await tx.one(_SET_TAGS, {"p_seq": seq, "p_tags": new, "p_now": utcnow()})
        gone = [tag for tag in old if tag not in new]
        if gone:
            await tx.run(_delete_tags(len(gone)), _tag_params(gone, p_seq=seq))
        fresh = [tag for tag in new if tag not in old]
        if fresh:
            await _add_tags(tx, seq=seq, run_id=run_id, tags=fresh)
    if row is None:
        raise RuntimeError("UPDATE … RETURNING returned no row")
    return row


_LATEST_OF_KEY = (
    LATEST.c.run_id == _param("p_run_id", LATEST.c.run_id),
    LATEST.c.key == _param("p_key", LATEST.c.key),
)
_LOCK_LATEST = sa.select(LATEST.c.seq).where(*_LATEST_OF_KEY).with_for_update()
"""The key's latest seq, its row locked: writers of the key wait (no-op on SQLite)."""
_DELETE_LATEST = LATEST.delete().where(*_LATEST_OF_KEY)
_SET_LATEST = LATEST.update().where(*_LATEST_OF_KEY).values(seq=_param("p_seq", LATEST.c.seq))
_OF_KEY = (RD.c.run_id == _RUN_ID, RD.c.key == _param("p_key", RD.c.key))
_DELETE_KEY_TAGS = TAGS.delete().where(
    TAGS.c.run_data_seq.in_(sa.select(RD.c.seq).where(*_OF_KEY)),
    TAGS.c.run_id == _param("p_run_id", TAGS.c.run_id),
)
_DELETE_KEY = RD.delete().where(*_OF_KEY)
_KEY_OF_ENTRY = sa.select(RD.c.key).where(
    RD.c.id == _param("p_entry_id", RD.c.id),
    RD.c.run_id == _RUN_ID,
    _param("p_org_id", runs.c.org_id) == _RUN_ORG,
)
_DELETE_ENTRY = RD.delete().where(RD.c.id == _param("p_entry_id", RD.c.id)).returning(RD.c.seq)
_DELETE_ENTRY_TAGS = TAGS.delete().where(
    TAGS.c.run_data_seq == _param("p_seq", TAGS.c.run_data_seq)
)


async def delete_by_key(db: Database, *, org_id: str, run_id: uuid.UUID, key: str) -> int:
    """Delete every entry of ``key`` and their tags; returns how many entries."""
    by_key = {"p_run_id": run_id, "p_key": key}
    async with db.transaction(write=True) as tx:
        await _check(tx, org_id=org_id, run_id=run_id)
        await tx.run(_LOCK_LATEST, by_key)  # first: a concurrent write is then seen or waits
        await tx.run(_DELETE_KEY_TAGS, by_key)
        deleted = await tx.run(_DELETE_KEY, by_key)
        await tx.run(_DELETE_LATEST, by_key)
        return deleted


async def delete_by_id(db: Database, *, org_id: str, run_id: uuid.UUID, entry_id: uuid.UUID) -> int:
    """Delete one entry (0 or 1) and its tags; if it was its key's latest, the newest
    remaining is."""
    async with db.transaction(write=True) as tx:
        params = {"p_entry_id": entry_id, "p_run_id": run_id, "p_org_id": org_id}
        key = await tx.scalar(_KEY_OF_ENTRY, params)
        if key is None:
            await _check(tx, org_id=org_id, run_id=run_id)
            return 0
        by_key = {"p_run_id": run_id, "p_key": key}
        latest = await tx.scalar(_LOCK_LATEST, by_key)
        seq = await tx.scalar(_DELETE_ENTRY, {"p_entry_id": entry_id})
        if seq is None:
            return 0  # deleted meanwhile by another writer
        await tx.run(_DELETE_ENTRY_TAGS, {"p_seq": seq})
        if seq == latest:
            newest = await tx.scalar(_NEWEST, by_key)
            if newest is None:
                await tx.run(_DELETE_LATEST, by_key)
            else:
                await tx.run(_SET_LATEST, {**by_key, "p_seq": newest})
        return 1


# ---- reads ------------------------------------------------------------------------------
#
# A query's statements are built once per *shape*: the query with each filter value
# replaced by the name of the parameter that carries it (:func:`_shape`). Queries that
# differ only in their values share the statements, and their compiled forms.


def _shape(query: RunDataQuery) -> tuple[RunDataQuery, dict[str, Any]]:
    """The query with its values replaced by parameter names, and those parameters."""
    params: dict[str, Any] = {}

    def bind(value: str) -> str:
        name = f"p_{len(params)}"
        params[name] = value
        return name

    def bind_range(text_range: TextRange) -> TextRange:
        low = bind(text_range.low)
        return TextRange(low=low, high=None if text_range.high is None else bind(text_range.high))

    if not query.filters_keys:  # e.g. keyPattern=*: the key filters do not apply
        query = replace(query, keys=(), key_prefixes=(), key_patterns=())
    shape = replace(
        query,
        keys=tuple(bind(key) for key in query.keys),
        key_prefixes=tuple(bind_range(r) for r in query.key_prefixes),
        key_patterns=tuple(
            LikePattern(
                like=bind(pattern.like),
                prefix=None if pattern.prefix is None else bind_range(pattern.prefix),
            )
            for pattern in query.key_patterns
        ),
        tags=tuple(bind(tag) for tag in query.tags),
        tag_prefixes=tuple(bind_range(r) for r in query.tag_prefixes),
        limit=0,
        offset=0,
    )
    params["p_limit"] = query.limit
    params["p_offset"] = query.offset
    return shape, params


def _in_range(column: sa.ColumnElement[str], text_range: TextRange) -> ColumnElement[bool]:
    low = column >= _param(text_range.low, column)
    if text_range.high is None:
        return low
    return sa.and_(low, column < _param(text_range.high, column))


def _key_condition(
    shape: RunDataQuery, key: sa.ColumnElement[str] = RD.c.key
) -> ColumnElement[bool] | None:
    """The key filters on ``key`` (an entry's, or a ``run_data_latest`` row's)."""
    if not shape.filters_keys:
        return None
    terms: list[ColumnElement[bool]] = []
    if shape.keys:
        terms.append(key.in_([_param(name, key) for name in shape.keys]))
    terms.extend(_in_range(key, r) for r in shape.key_prefixes)
    for pattern in shape.key_patterns:
        like = key.like(_param(pattern.like, key), escape=LIKE_ESCAPE)
        terms.append(
            like if pattern.prefix is None else sa.and_(_in_range(key, pattern.prefix), like)
        )
    return sa.or_(*terms)


def _tagged(*conditions: ColumnElement[bool]) -> sa.Select[Any]:
    return sa.select(TAGS.c.run_data_seq).where(
        TAGS.c.run_id == _param("p_run_id", TAGS.c.run_id), *conditions
    )


def _tag_conditions(shape: RunDataQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    every = shape.tag_mode == "all"
    if shape.tags:
        tagged = _tagged(TAGS.c.tag.in_([_param(name, TAGS.c.tag) for name in shape.tags]))
        if every and len(shape.tags) > 1:
            tagged = tagged.group_by(TAGS.c.run_data_seq).having(sa.func.count() == len(shape.tags))
        conditions.append(RD.c.seq.in_(tagged))
    if shape.tag_prefixes and every:
        conditions.extend(
            RD.c.seq.in_(_tagged(_in_range(TAGS.c.tag, r))) for r in shape.tag_prefixes
        )
    elif shape.tag_prefixes:
        ranges = [_in_range(TAGS.c.tag, r) for r in shape.tag_prefixes]
        conditions.append(RD.c.seq.in_(_tagged(sa.or_(*ranges))))
    return conditions


def _matching(shape: RunDataQuery, dialect: str) -> list[ColumnElement[bool]]:
    """WHERE terms selecting the entries to return (before paging)."""
    where: list[ColumnElement[bool]] = [RD.c.run_id == _RUN_ID]
    key_condition = _key_condition(shape)
    if key_condition is not None:
        where.append(key_condition)
    tag_conditions = _tag_conditions(shape)
    where.extend(tag_conditions)
    if shape.include_all:
        return where
    if not tag_conditions:
        # Key filters select all entries of a key or none: its latest is the one that
        # run_data_latest names, found there by the same key filters.
        latest = sa.select(LATEST.c.seq).where(
            LATEST.c.run_id == _param("p_run_id", LATEST.c.run_id),
            *[c for c in [_key_condition(shape, LATEST.c.key)] if c is not None],
        )
        if dialect == "postgresql":
            # = ANY(ARRAY(…)): the latest seqs are read first, then their entries by primary
            # key. Given IN (…), PostgreSQL may merge-join them with run_data's whole
            # primary key read in page order, betting on the LIMIT to stop it early.
            return [RD.c.seq == sa.any_(sa.func.array(latest.scalar_subquery()))]
        return [RD.c.seq.in_(latest)]
    # Tag filters select some entries of a key: keep the newest matching one per key.
    latest = sa.select(sa.func.max(RD.c.seq)).where(*where).group_by(RD.c.key)
    return [RD.c.run_id == _RUN_ID, RD.c.seq.in_(latest)]


def _sort_columns(shape: RunDataQuery) -> list[sa.Column[Any]]:
    # createdAt sorts by seq: insertion order, the exact form of creation time.
    return {
        "createdAt": [RD.c.seq],
        "updatedAt": [RD.c.updated_at, RD.c.seq],
        "key": [RD.c.key, RD.c.seq],
    }[shape.sort_by]


def _order_by(shape: RunDataQuery) -> list[sa.UnaryExpression[Any]]:
    columns = _sort_columns(shape)
    if shape.sort_order == "desc":
        return [c.desc() for c in columns]
    return [c.asc() for c in columns]


@dataclass(frozen=True, slots=True)
class _Statements:
    page: sa.Select[Any]
    """One page of the matching entries."""
    count: sa.Select[Any]
    """How many entries match."""
    counted_page: sa.Select[Any]
    """The page of the caller's organisation, each row with the ``total`` matching."""
    json_page: sa.Select[Any]
    """``counted_page`` as JSON: on PostgreSQL one row, ``data`` (the entries as the
    response's JSON array) and ``total``, both NULL for an empty page; on SQLite one row
    per entry (:func:`~foreman_api.storage.run_data_json.sqlite_entries`)."""
    owner_and_count: sa.Select[Any]
    """The run's organisation (``org_id``) and the ``total`` matching."""


@lru_cache(maxsize=256)
def _statements(shape: RunDataQuery, dialect: str) -> _Statements:
    where = _matching(shape, dialect)
    page = (
        sa.select(*_COLUMNS)
        .where(*where)
        .order_by(*_order_by(shape))
        .limit(sa.bindparam("p_limit", type_=sa.Integer))
        .offset(sa.bindparam("p_offset", type_=sa.Integer))
    )
    count = sa.select(sa.func.count()).select_from(RD).where(*where)
    total = count.scalar_subquery().label("total")
    # The count is an uncorrelated subquery: evaluated once, from the page's snapshot.
    counted_page = page.add_columns(total).where(RD.c.org_id == _param("p_org_id", RD.c.org_id))
    if dialect == "postgresql":
        json_page = postgres_page(counted_page, _sort_columns(shape), shape.sort_order == "desc")
    else:
        json_page = sqlite_entries(counted_page, total)
    return _Statements(
        page=page,
        count=count,
        counted_page=counted_page,
        json_page=json_page,
        owner_and_count=sa.select(_RUN_ORG.label("org_id"), total),
    )


def query_statements(
    query: RunDataQuery, *, run_id: uuid.UUID, dialect: str
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The page and the count statements of a query on ``dialect``, their parameters bound
    (for EXPLAIN in tests): the statements :func:`list_entries` runs are built from these."""
    shape, params = _shape(query)
    statements = _statements(shape, dialect)
    params["p_run_id"] = run_id
    return statements.page.params(params), statements.count.params(params)


async def list_entries(
    db: Database, *, org_id: str, run_id: uuid.UUID, query: RunDataQuery, as_json: bool = True
) -> RecordPage:
    """One page of matching entries and the total; with ``as_json``, the entries as the
    response's JSON array written by the database (:mod:`.run_data_json`) where it can.

    Usually one statement: the page carries the total (a subquery of the same snapshot),
    and rows of this organisation prove the run is its own. Only an empty page needs a
    second look, to tell an unknown run (``404``) from a page past the end; on SQLite, so
    does a page whose JSON SQLite would not write exactly (read again as rows).
    """
    shape, params = _shape(query)
    statements = _statements(shape, db.dialect)
    params["p_run_id"] = run_id
    params["p_org_id"] = org_id
    as_rows = not as_json
    if as_json and db.dialect == "postgresql":
        built = await db.one(statements.json_page, params)
        if built is not None and built["data"] is not None:
            return RecordPage([], int(built["total"]), built["data"])
    elif as_json:
        entries = await db.all(statements.json_page, {**params, RUN_ID_TEXT: str(run_id)})
        if entries:
            data = sqlite_page(entries)
            if data is not None:
                return RecordPage([], int(entries[0]["total"]), data)
            as_rows = True  # a page that SQLite's JSON would not write exactly
    if as_rows:
        rows = await db.all(statements.counted_page, params)
        if rows:
            return RecordPage(rows, int(rows[0]["total"]))
    # One statement again: the owner and the count come from one snapshot.
    found = await db.one(statements.owner_and_count, params)
    if found is None or found["org_id"] != org_id:
        raise run_not_found(run_id)
    return RecordPage(rows=[], total=int(found["total"]))
