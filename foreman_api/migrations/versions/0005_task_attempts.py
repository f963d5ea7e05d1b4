"""Every attempt of a task, kept: who ran it, when, how it ended and why.

``tasks.attempt_count`` numbers the attempts (a claim adds one; a retry through the API
resets ``retry_count`` but never this), and ``task_attempts`` holds one row per attempt:
the worker and queue job that ran it, its start and end, duration, outcome (the status the
task moved to when the attempt ended) and the ``errorData`` of that move.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from foreman_api.storage.types import JSON_TYPE, TIMESTAMP_TYPE, UUID_TYPE

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE … ADD COLUMN on both backends: a batch rebuild of ``tasks`` on
    # SQLite would DROP a table that other rows reference.
    op.add_column(
        "tasks", sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0")
    )
    op.create_table(
        "task_attempts",
        sa.Column(
            "task_id",
            UUID_TYPE,
            sa.ForeignKey("tasks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("run_id", UUID_TYPE, nullable=False),
        sa.Column("worker_id", sa.String(255), nullable=True),
        sa.Column("queue_job_id", sa.String(255), nullable=True),
        sa.Column("started_at", TIMESTAMP_TYPE, nullable=False),
        sa.Column("finished_at", TIMESTAMP_TYPE, nullable=True),
        sa.Column("duration_ms", sa.BigInteger, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", JSON_TYPE, nullable=True),
    )
    op.create_index(
        "ix_task_attempts_run_open",
        "task_attempts",
        ["run_id"],
        postgresql_where=sa.text("finished_at IS NULL"),
        sqlite_where=sa.text("finished_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_task_attempts_run_open", table_name="task_attempts")
    op.drop_table("task_attempts")
    op.drop_column("tasks", "attempt_count")
