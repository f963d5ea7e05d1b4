"""Run data queries use indexes: the query plans on 20,000 entries show no full scan.

Timing is the benchmark's job (``bench/``); here the plan text is the evidence. On SQLite a
full scan reads ``SCAN run_data`` (an index search reads ``SEARCH run_data USING ...``); on
PostgreSQL it reads ``Seq Scan on run_data``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from foreman_api.domain.run_data_query import RunDataQuery, build_query
from foreman_api.storage.run_data import query_statements
from foreman_api.storage.tables import run_data, run_data_latest, run_data_tags, runs

ENTRIES = 20_000
KEYS = 2_000  # 10 entries per key
TAGS = 5_000  # each entry has one of 5,000 tags (4 entries each) and one of 10 "groups"


class Explain(Executable, ClauseElement):
    """``EXPLAIN QUERY PLAN`` (SQLite) or ``EXPLAIN`` (PostgreSQL) of a statement."""

    inherit_cache = False

    def __init__(self, statement: sa.Select[Any]) -> None:
        self.statement = statement


@compiles(Explain, "sqlite")
def _explain_sqlite(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN QUERY PLAN " + compiler.process(element.statement, **kw)


@compiles(Explain, "postgresql")
def _explain_postgres(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN " + compiler.process(element.statement, **kw)


def _bulk_insert(conn: sa.Connection, run_id: uuid.UUID, org: str, entries: int) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = [
        {
            "id": uuid.uuid4(),
            "run_id": run_id,
            "task_id": None,
            "org_id": org,
            "key": f"key-{i % KEYS:05d}",
            "value": {"i": i},
            "tags": [f"tag-{i % TAGS:04d}", f"group-{i % 10}"],
            "metadata": None,
            "created_at": start + timedelta(milliseconds=i),
            "updated_at": start + timedelta(milliseconds=i),
        }
        for i in range(entries)
    ]
    seqs = list(
        conn.execute(
            run_data.insert().returning(run_data.c.seq, sort_by_parameter_order=True), rows
        ).scalars()
    )
    latest = {row["key"]: seq for seq, row in zip(seqs, rows, strict=True)}  # the last wins
    conn.execute(
        run_data_latest.insert(),
        [{"run_id": run_id, "key": key, "seq": seq} for key, seq in latest.items()],
    )
    conn.execute(
        run_data_tags.insert(),
        [
            {"run_data_seq": seq, "tag": tag, "run_id": run_id}
            for seq, row in zip(seqs, rows, strict=True)
            for tag in row["tags"]
        ],
    )


@pytest.fixture(scope="module")
def big_run(migrated_engine: sa.Engine) -> Iterator[uuid.UUID]:
    """A run of 20,000 entries beside a second run of 2,000, statistics up to date.

    Built once per backend for the module (the tests only read) and removed afterwards.
    """
    engine = migrated_engine
    run_id, other = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for rid in (run_id, other):
            conn.execute(
                runs.insert().values(
                    id=rid,
                    org_id="org-a",
                    status="running",
                    input_data={},
                    created_at=now,
                    updated_at=now,
                )
            )
        _bulk_insert(conn, run_id, "org-a", ENTRIES)
        _bulk_insert(conn, other, "org-a", KEYS)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    yield run_id
    with engine.begin() as conn:
        for table in (run_data_tags, run_data_latest, run_data):
            conn.execute(table.delete().where(table.c.run_id.in_([run_id, other])))
        conn.execute(runs.delete().where(runs.c.id.in_([run_id, other])))


def _plan(engine: sa.Engine, statement: sa.Select[Any]) -> str:
    with engine.connect() as conn:
        # Raw DBAPI rows: the result types registered by the inner SELECT do not apply.
        rows = conn.execute(Explain(statement)).cursor.fetchall()
    if engine.dialect.name == "sqlite":
        return "\n".join(str(row[-1]) for row in rows)
    return "\n".join(str(row[0]) for row in rows)


def assert_uses_indexes(engine: sa.Engine, statement: sa.Select[Any]) -> str:
    plan = _plan(engine, statement)
    if engine.dialect.name == "sqlite":
        # "SCAN run_data" (even "USING INDEX") reads the whole table or index; SEARCH is a seek.
        assert not re.search(r"\bSCAN run_data(_tags|_latest)?\b", plan), plan
        assert re.search(r"SEARCH run_data .*USING (COVERING )?INDEX|INTEGER PRIMARY KEY", plan)
    else:
        # No sequential scan, and every index scan seeks (has an Index Cond) rather than
        # walking a whole index with a Filter.
        assert "Seq Scan" not in plan, plan
        nodes = re.split(r"\n(?=\s*->)", plan)
        for node in nodes:
            if re.search(r"Index (Only )?Scan", node.splitlines()[0]):
                assert "Index Cond" in node, plan
        assert "Index" in plan, plan
    return plan


QUERIES: dict[str, RunDataQuery] = {
    "latest by key": build_query(key="key-01234"),
    "latest by keys": build_query(keys=["key-00001", "key-01999", "key-00500"]),
    "all values of a key": build_query(key="key-01234", include_all=True),
    "latest by prefix": build_query(key_starts_with=["key-012"]),
    "all by prefix": build_query(key_starts_with=["key-0123"], include_all=True),
    "prefix sorted by key": build_query(key_starts_with=["key-012"], sort_by="key"),
    "pattern with literal prefix": build_query(key_pattern=["key-01?3*"]),
    "key filters OR-ed": build_query(key="key-00007", key_starts_with=["key-0199"]),
    "latest by tag": build_query(tags=["tag-0042"]),
    "all by tag": build_query(tags=["tag-0042"], include_all=True),
    "tags all": build_query(tags=["tag-0042", "group-2"], tag_mode="all"),
    "tag prefix": build_query(tag_starts_with=["tag-004"]),  # 10 tags, 40 entries
    "prefix and tag": build_query(key_starts_with=["key-00"], tags=["tag-0042"]),
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_query_plans_use_indexes(migrated_engine: sa.Engine, big_run: uuid.UUID, name: str) -> None:
    page, count = query_statements(
        QUERIES[name], run_id=big_run, dialect=migrated_engine.dialect.name
    )
    assert_uses_indexes(migrated_engine, page)
    assert_uses_indexes(migrated_engine, count)


def test_latest_by_key_seeks_the_latest_table(
    migrated_engine: sa.Engine, big_run: uuid.UUID
) -> None:
    engine = migrated_engine
    page, _ = query_statements(
        build_query(key="key-01234"), run_id=big_run, dialect=engine.dialect.name
    )
    plan = assert_uses_indexes(engine, page)
    assert re.search(r"run_data_latest_pkey|sqlite_autoindex_run_data_latest", plan), plan
    with engine.connect() as conn:
        rows = conn.execute(page).mappings().all()
    assert [row["value"] for row in rows] == [{"i": ENTRIES - KEYS + 1234}]


def test_tag_query_seeks_the_tag_index(migrated_engine: sa.Engine, big_run: uuid.UUID) -> None:
    engine = migrated_engine
    page, _ = query_statements(
        build_query(tags=["tag-0042"], include_all=True),
        run_id=big_run,
        dialect=engine.dialect.name,
    )
    plan = assert_uses_indexes(engine, page)
    assert "ix_run_data_tags_run_tag" in plan or "run_data_tags_pkey" in plan, plan
    with engine.connect() as conn:
        rows = conn.execute(page).mappings().all()
    assert len(rows) == ENTRIES // TAGS
