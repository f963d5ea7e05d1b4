"""Run data: no foreign keys to runs and tasks; the write checks them itself.

A write of run data inserts its entry only where its run is the caller organisation's and
its task (if any) is a task of that run: one statement checks both. The foreign keys
``run_data.run_id → runs`` and ``run_data.task_id → tasks`` checked them a second time,
and each check locks the referenced row ``FOR KEY SHARE``: every write of a run share-locked
the run's row, so concurrent writers of one run made PostgreSQL record each lock in a
multixact on that row (a run's row being also where its counters change). Runs and tasks
are never deleted, so the keys guarded nothing the statement does not.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_NAMES = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}
"""PostgreSQL's own names for the keys 0001 created unnamed; SQLite's batch mode reflects
unnamed keys under this convention, so one name drops each on both."""


def upgrade() -> None:
    with op.batch_alter_table("run_data", naming_convention=_NAMES) as batch:
        batch.drop_constraint("run_data_run_id_fkey", type_="foreignkey")
        batch.drop_constraint("run_data_task_id_fkey", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("run_data", naming_convention=_NAMES) as batch:
        batch.create_foreign_key("run_data_run_id_fkey", "runs", ["run_id"], ["id"])
        batch.create_foreign_key("run_data_task_id_fkey", "tasks", ["task_id"], ["id"])
