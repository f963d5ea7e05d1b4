"""Task ownership in the database: queues, leases, due retries, idempotent creation, workers.

- ``tasks.queue``: the logical queue a task belongs on, so the reconciler can put it back
  there after Redis lost it. ``queue_defaulted`` / ``max_retries_defaulted`` say the value
  was a default, to be replaced by the options a worker registers for the task's type.
- ``tasks.lease_expires_at``: a claim's lease, renewed by the worker; an expired lease is a
  lost worker.
- ``tasks.retry_at``: the earliest start of a ``retrying`` task's next attempt.
- ``tasks.idempotency_key``: unique per organisation, so a repeated create returns the task.
- ``workers`` and ``task_types``: the live worker registry and the handler options it
  declares per task type.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from foreman_api.storage.types import JSON_TYPE, TIMESTAMP_TYPE

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("queue", sa.String(64), nullable=False, server_default="default")
        )
        batch.add_column(
            sa.Column("queue_defaulted", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column(
                "max_retries_defaulted", sa.Boolean, nullable=False, server_default=sa.false()
            )
        )
        batch.add_column(sa.Column("lease_expires_at", TIMESTAMP_TYPE, nullable=True))
        batch.add_column(sa.Column("retry_at", TIMESTAMP_TYPE, nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
    op.create_index(
        "ix_tasks_org_idempotency_key", "tasks", ["org_id", "idempotency_key"], unique=True
    )
    op.create_table(
        "workers",
        sa.Column("org_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("queues", JSON_TYPE, nullable=False),
        sa.Column("handlers", JSON_TYPE, nullable=False),
        sa.Column("current_task_id", sa.String(64), nullable=True),
        sa.Column("started_at", TIMESTAMP_TYPE, nullable=False),
        sa.Column("last_seen_at", TIMESTAMP_TYPE, nullable=False),
    )
    op.create_table(
        "task_types",
        sa.Column("org_id", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(255), primary_key=True),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("max_retries", sa.Integer, nullable=True),
        sa.Column("timeout", sa.Float, nullable=True),
        sa.Column("last_seen_at", TIMESTAMP_TYPE, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("task_types")
    op.drop_table("workers")
    op.drop_index("ix_tasks_org_idempotency_key", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        for column in (
            "idempotency_key",
            "retry_at",
            "lease_expires_at",
            "max_retries_defaulted",
            "queue_defaulted",
            "queue",
        ):
            batch.drop_column(column)
