"""Migrations on a database that already holds data, on both backends.

Each test builds its own database at an older revision, writes rows the way that revision's
code wrote them, and moves it forward (and back).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from foreman_api.storage.engine import create_engine
from foreman_api.storage.migrate import _config
from foreman_api.storage.tables import metadata
from tests.conftest import BACKENDS
from tests.services import throwaway_postgres_database


@pytest.fixture(params=BACKENDS)
def fresh_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """An empty database of its own (not the session's migrated one)."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'migrations.db'}")
        yield engine
        engine.dispose()
        return
    with throwaway_postgres_database() as url:
        engine = create_engine(url, pool_size=1)
        yield engine
        engine.dispose()


def migrate(engine: sa.Engine, revision: str, *, down: bool = False) -> None:
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)


def test_the_latest_entry_of_each_key_moves_to_its_own_table_and_back(
    fresh_engine: sa.Engine,
) -> None:
    engine = fresh_engine
    migrate(engine, "0003")
    run_id = uuid.uuid4()
    now = datetime.now(UTC)
    entries = [("a", False), ("b", False), ("a", True), ("b", True), ("c", True)]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO runs (id, org_id, status, input_data, total_tasks, completed_tasks,"
                " failed_tasks, created_at, updated_at)"
                " VALUES (:id, 'org-a', 'running', '{}', 0, 0, 0, :now, :now)"
            ).bindparams(sa.bindparam("id", type_=sa.Uuid()), sa.bindparam("now", value=now)),
            {"id": run_id},
        )
        for key, latest in entries:
            conn.execute(
                sa.text(
                    "INSERT INTO run_data (id, run_id, org_id, key, value, tags, is_latest,"
                    " created_at, updated_at)"
                    " VALUES (:id, :run_id, 'org-a', :key, '1', '[]', :latest, :now, :now)"
                ).bindparams(
                    sa.bindparam("id", type_=sa.Uuid()),
                    sa.bindparam("run_id", type_=sa.Uuid()),
                    sa.bindparam("now", value=now),
                ),
                {"id": uuid.uuid4(), "run_id": run_id, "key": key, "latest": latest},
            )
        seqs = conn.execute(sa.text("SELECT key, seq FROM run_data ORDER BY seq")).all()
    newest = {key: seq for key, seq in seqs}  # the flagged entries are each key's last

    migrate(engine, "head")
    with engine.connect() as conn:
        moved = dict(conn.execute(sa.text("SELECT key, seq FROM run_data_latest")).all())
        # The schema the code declares is the schema the migrations build.
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert moved == newest

    migrate(engine, "0003", down=True)
    with engine.connect() as conn:
        flagged = conn.execute(
            sa.text("SELECT key, seq FROM run_data WHERE is_latest ORDER BY key")
        ).all()
    assert dict(flagged) == newest


def test_attempts_and_self_finishing_runs_arrive_on_a_database_with_tasks(
    fresh_engine: sa.Engine,
) -> None:
    """0005 and 0006 add columns to ``tasks`` and ``runs``, which other rows reference (a
    child task, a run data entry): they must not rebuild those tables, and the rows keep
    their values, with the new columns at their defaults."""
    engine = fresh_engine
    migrate(engine, "0004")
    run_id, parent_id, child_id, other_id = (uuid.uuid4() for _ in range(4))
    now = datetime.now(UTC)
    uid = sa.Uuid()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO runs (id, org_id, status, input_data, total_tasks, completed_tasks,"
                " failed_tasks, created_at, updated_at)"
                " VALUES (:id, 'org-a', 'running', '{}', 3, 1, 0, :now, :now)"
            ).bindparams(sa.bindparam("id", type_=uid), sa.bindparam("now", value=now)),
            {"id": run_id},
        )
        for task_id, parent, status in (
            (parent_id, None, "completed"),
            (child_id, parent_id, "queued"),
            (other_id, None, "cancelled"),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO tasks (id, run_id, parent_task_id, org_id, type, status,"
                    " retry_count, max_retries, created_at, updated_at)"
                    " VALUES (:id, :run_id, :parent, 'org-a', 't', :status, 1, 3, :now, :now)"
                ).bindparams(
                    sa.bindparam("id", type_=uid),
                    sa.bindparam("run_id", type_=uid),
                    sa.bindparam("parent", type_=uid),
                    sa.bindparam("now", value=now),
                ),
                {"id": task_id, "run_id": run_id, "parent": parent, "status": status},
            )
        conn.execute(
            sa.text(
                "INSERT INTO run_data (id, run_id, task_id, org_id, key, value, tags,"
                " created_at, updated_at)"
                " VALUES (:id, :run_id, :task_id, 'org-a', 'k', '1', '[]', :now, :now)"
            ).bindparams(
                sa.bindparam("id", type_=uid),
                sa.bindparam("run_id", type_=uid),
                sa.bindparam("task_id", type_=uid),
                sa.bindparam("now", value=now),
            ),
            {"id": uuid.uuid4(), "run_id": run_id, "task_id": parent_id},
        )

    migrate(engine, "head")
    with engine.connect() as conn:
        tasks = conn.execute(
            sa.text("SELECT status, retry_count, attempt_count FROM tasks ORDER BY status")
        ).all()
        runs = conn.execute(
            sa.text(
                "SELECT status, total_tasks, cancelled_tasks, auto_complete, auto_completed"
                " FROM runs"
            )
        ).all()
        assert conn.execute(sa.text("SELECT count(*) FROM task_attempts")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM run_data")).scalar() == 1
    assert [tuple(t) for t in tasks] == [("cancelled", 1, 0), ("completed", 1, 0), ("queued", 1, 0)]
    assert [tuple(r) for r in runs] == [("running", 3, 1, True, False)]  # counted from tasks

    migrate(engine, "0004", down=True)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tasks")).scalar() == 3


def _run_data_keys(engine: sa.Engine) -> set[tuple[str, str]]:
    """(column, referred table) of each foreign key of ``run_data``."""
    keys = sa.inspect(engine).get_foreign_keys("run_data")
    return {(key["constrained_columns"][0], key["referred_table"]) for key in keys}


def test_run_data_loses_its_foreign_keys_and_gets_them_back(fresh_engine: sa.Engine) -> None:
    """0009 drops the keys from run data to runs and tasks (the write checks both itself)
    on both backends, where 0001 created them unnamed; downgrading restores them."""
    engine = fresh_engine
    migrate(engine, "0008")
    assert _run_data_keys(engine) == {("run_id", "runs"), ("task_id", "tasks")}

    migrate(engine, "head")
    assert _run_data_keys(engine) == set()

    migrate(engine, "0008", down=True)
    assert _run_data_keys(engine) == {("run_id", "runs"), ("task_id", "tasks")}


def test_run_data_tags_lose_their_foreign_key_and_get_it_back(fresh_engine: sa.Engine) -> None:
    """0010 drops the key from tag rows to their entry (the deletes remove tags themselves)
    on both backends; downgrading restores it, with its cascade."""
    engine = fresh_engine

    def keys() -> list[tuple[str, str, str | None]]:
        found = sa.inspect(engine).get_foreign_keys("run_data_tags")
        return [
            (k["constrained_columns"][0], k["referred_table"], k["options"].get("ondelete"))
            for k in found
        ]

    migrate(engine, "0009")
    assert keys() == [("run_data_seq", "run_data", "CASCADE")]
    migrate(engine, "head")
    assert keys() == []
    migrate(engine, "0009", down=True)
    assert keys() == [("run_data_seq", "run_data", "CASCADE")]
