"""Initial schema: api keys, runs, tasks, run data and its tags.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from foreman_api.storage.types import (
    JSON_TYPE,
    SEQ_TYPE,
    TIMESTAMP_TYPE,
    UUID_TYPE,
    literal_text,
)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json_columns(*names: str) -> list[sa.Column[object]]:
    return [sa.Column(name, JSON_TYPE, nullable=True) for name in names]


def _times(
    *names: str, required: tuple[str, ...] = ("created_at", "updated_at")
) -> list[sa.Column[object]]:
    return [sa.Column(name, TIMESTAMP_TYPE, nullable=name not in required) for name in names]


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", UUID_TYPE, primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("permissions", JSON_TYPE, nullable=False),
        sa.Column("rate_limit", sa.String(32), nullable=True),
        *_times("created_at", "expires_at", "revoked_at", "last_used_at", required=("created_at",)),
    )
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)

    op.create_table(
        "runs",
        sa.Column("id", UUID_TYPE, primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_json_columns("input_data", "output_data", "error_data", "metadata"),
        sa.Column("total_tasks", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completed_tasks", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed_tasks", sa.Integer, nullable=False, server_default="0"),
        *_times("created_at", "updated_at", "started_at", "completed_at"),
        sa.Column("duration_ms", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_runs_org_created", "runs", ["org_id", "created_at"])
    op.create_index("ix_runs_org_updated", "runs", ["org_id", "updated_at"])
    op.create_index("ix_runs_org_status_created", "runs", ["org_id", "status", "created_at"])

    op.create_table(
        "tasks",
        sa.Column("id", UUID_TYPE, primary_key=True),
        sa.Column("run_id", UUID_TYPE, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("parent_task_id", UUID_TYPE, sa.ForeignKey("tasks.id"), nullable=True),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_json_columns("input_data", "output_data", "error_data", "metadata"),
        sa.Column("retry_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_retries", sa.Integer, nullable=False, server_default="3"),
        sa.Column("queue_job_id", sa.String(255), nullable=True),
        *_times("created_at", "updated_at", "queued_at", "started_at", "completed_at"),
        sa.Column("duration_ms", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_tasks_run_created", "tasks", ["run_id", "created_at"])
    op.create_index("ix_tasks_run_status", "tasks", ["run_id", "status"])
    op.create_index("ix_tasks_parent", "tasks", ["parent_task_id"])
    op.create_index("ix_tasks_org_created", "tasks", ["org_id", "created_at"])
    op.create_index("ix_tasks_org_status_created", "tasks", ["org_id", "status", "created_at"])

    op.create_table(
        "run_data",
        sa.Column("seq", SEQ_TYPE, primary_key=True, autoincrement=True),
        sa.Column("id", UUID_TYPE, nullable=False),
        sa.Column("run_id", UUID_TYPE, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("task_id", UUID_TYPE, sa.ForeignKey("tasks.id"), nullable=True),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("key", literal_text(255), nullable=False),
        sa.Column("value", JSON_TYPE, nullable=True),
        sa.Column("tags", JSON_TYPE, nullable=False),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("is_latest", sa.Boolean, nullable=False),
        *_times("created_at", "updated_at"),
    )
    op.create_index("ix_run_data_id", "run_data", ["id"], unique=True)
    op.create_index("ix_run_data_run_key_seq", "run_data", ["run_id", "key", "seq"])
    op.create_index("ix_run_data_run_latest_key", "run_data", ["run_id", "is_latest", "key"])
    op.create_index("ix_run_data_run_latest_seq", "run_data", ["run_id", "is_latest", "seq"])

    op.create_table(
        "run_data_tags",
        sa.Column(
            "run_data_seq",
            SEQ_TYPE,
            sa.ForeignKey("run_data.seq", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tag", literal_text(255), primary_key=True),
        sa.Column("run_id", UUID_TYPE, nullable=False),
    )
    op.create_index("ix_run_data_tags_run_tag", "run_data_tags", ["run_id", "tag", "run_data_seq"])


def downgrade() -> None:
    for table in ("run_data_tags", "run_data", "tasks", "runs", "api_keys"):
        op.drop_table(table)
