"""A run's task list counts the run's tasks, not the organisation's, even without statistics.

SQLite gathers no statistics by itself; before a fix, the count beside a page of one run's
tasks went through the organisation's index and read every task the organisation had
(the API benchmark's SQLite list scenario fell from ~1,000 to ~230 requests/s once another
run held 10,000 tasks). The plans are read on a database that was never analysed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from foreman_api.storage.engine import create_engine
from foreman_api.storage.migrate import upgrade
from foreman_api.storage.tables import runs, tasks
from foreman_api.storage.tasks import _list_statements
from tests.test_run_data_scale import _plan


@pytest.fixture
def unanalysed(tmp_path: Path) -> Iterator[tuple[sa.Engine, uuid.UUID]]:
    """A fresh SQLite database: one run of 5,000 tasks and one of 50; no ANALYZE."""
    engine = create_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    upgrade(engine)
    big, small = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for run_id in (big, small):
            conn.execute(
                runs.insert().values(
                    id=run_id,
                    org_id="o",
                    status="running",
                    input_data={},
                    created_at=now,
                    updated_at=now,
                )
            )
        conn.execute(
            tasks.insert(),
            [
                {
                    "id": uuid.uuid4(),
                    "run_id": run_id,
                    "org_id": "o",
                    "type": "t",
                    "status": "pending",
                    "retry_count": 0,
                    "max_retries": 3,
                    "created_at": now + timedelta(microseconds=i),
                    "updated_at": now,
                    "queue": "default",
                    "queue_defaulted": True,
                    "max_retries_defaulted": True,
                }
                for run_id, count in ((big, 5_000), (small, 50))
                for i in range(count)
            ],
        )
    yield engine, small
    engine.dispose()


@pytest.mark.parametrize("by_status", [False, True])
def test_a_runs_task_list_seeks_the_runs_index(
    unanalysed: tuple[sa.Engine, uuid.UUID], by_status: bool
) -> None:
    engine, run_id = unanalysed
    page, count, _ = _list_statements(True, False, by_status, False, "createdAt", "desc")
    params = {
        "p_org_id": "o",
        "p_run_id": run_id,
        "p_status": "pending",
        "p_limit": 20,
        "p_offset": 0,
    }
    for statement in (page, count):
        plan = _plan(engine, statement.params(params))
        assert "ix_tasks_org" not in plan, plan
        assert re.search(r"SEARCH (tasks|counted) USING INDEX ix_tasks_run_", plan), plan
    with engine.connect() as conn:
        rows = conn.execute(page.params(params)).mappings().all()
    assert len(rows) == 20 and rows[0]["total"] == 50


def test_an_organisations_task_list_still_uses_its_index(
    unanalysed: tuple[sa.Engine, uuid.UUID],
) -> None:
    engine, _ = unanalysed
    page, _, _ = _list_statements(False, False, True, False, "createdAt", "desc")
    params = {"p_org_id": "o", "p_status": "pending", "p_limit": 20, "p_offset": 0}
    plan = _plan(engine, page.params(params))
    assert "ix_tasks_org_status_created" in plan, plan
