"""The schema as SQLAlchemy Core tables. Migrations in ``foreman_api/migrations`` create it.

Every row carries ``org_id`` and every query filters on it: organisations never see each
other's data.
"""

from __future__ import annotations

import sqlalchemy as sa

from foreman_api.storage.types import (
    JSON_TYPE,
    SEQ_TYPE,
    TIMESTAMP_TYPE,
    UUID_TYPE,
    literal_text,
)

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", UUID_TYPE, primary_key=True),
    sa.Column("org_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("permissions", JSON_TYPE, nullable=False),
    sa.Column("rate_limit", sa.String(32), nullable=True),
    sa.Column("created_at", TIMESTAMP_TYPE, nullable=False),
    sa.Column("expires_at", TIMESTAMP_TYPE, nullable=True),
    sa.Column("revoked_at", TIMESTAMP_TYPE, nullable=True),
    sa.Column("last_used_at", TIMESTAMP_TYPE, nullable=True),
    sa.Index("ix_api_keys_key_hash", "key_hash", unique=True),
)

ui_sessions = sa.Table(
    "ui_sessions",
    metadata,
    # A dashboard session (foreman_api.ui.session): the SHA-256 of the browser's cookie.
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "key_id", UUID_TYPE, sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", TIMESTAMP_TYPE, nullable=False),
    sa.Column("expires_at", TIMESTAMP_TYPE, nullable=False),
    sa.Index("ix_ui_sessions_expires", "expires_at"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", UUID_TYPE, primary_key=True),
    sa.Column("org_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("input_data", JSON_TYPE, nullable=True),
    sa.Column("output_data", JSON_TYPE, nullable=True),
    sa.Column("error_data", JSON_TYPE, nullable=True),
    sa.Column("metadata", JSON_TYPE, nullable=True),
    sa.Column("total_tasks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("completed_tasks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed_tasks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cancelled_tasks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TIMESTAMP_TYPE, nullable=False),
    sa.Column("updated_at", TIMESTAMP_TYPE, nullable=False),
    sa.Column("started_at", TIMESTAMP_TYPE, nullable=True),
    sa.Column("completed_at", TIMESTAMP_TYPE, nullable=True),
    sa.Column("duration_ms", sa.BigInteger, nullable=True),
    # Finish when the last unfinished task settles (the run's choice at creation) ...
    sa.Column("auto_complete", sa.Boolean, nullable=False, server_default=sa.true()),
    # ... and whether it did: a new task or a retry reopens such a run, not a closed one.
    sa.Column("auto_completed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_runs_org_created", "org_id", "created_at"),
    # No index on updated_at: counter updates must stay HOT (migration 0002).
    sa.Index("ix_runs_org_status_created", "org_id", "status", "created_at"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", UUID_TYPE, primary_key=True),
    sa.Column("run_id", UUID_TYPE, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("parent_task_id", UUID_TYPE, sa.ForeignKey("tasks.id"), nullable=True),
    sa.Column("org_id", sa.String(64), nullable=False),
    sa.Column("type", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("input_data", JSON_TYPE, nullable=True),
    sa.Column("output_data", JSON_TYPE, nullable=True),
    sa.Column("error_data", JSON_TYPE, nullable=True),
    sa.Column("metadata", JSON_TYPE, nullable=True),
    sa.Column("retry_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_retries", sa.Integer, nullable=False, server_default="3"),
    sa.Column("queue_job_id", sa.String(255), nullable=True),
    sa.Column("created_at", TIMESTAMP_TYPE, nullable=False),
    sa.Column("updated_at", TIMESTAMP_TYPE, nullable=False),
    sa.Column("queued_at", TIMESTAMP_TYPE, nullable=True),
    sa.Column("started_at", TIMESTAMP_TYPE, nullable=True),
    sa.Column("completed_at", TIMESTAMP_TYPE, nullable=True),
    sa.Column("duration_ms", sa.BigInteger, nullable=True),
    # The logical queue; "defaulted" values yield to a worker's registered handler options.
    sa.Column("queue", sa.String(64), nullable=False, server_default="default"),
    sa.Column("queue_defaulted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("max_retries_defaulted", sa.Boolean, nullable=False, server_default=sa.false()),
    # The claim's lease (renewed by heartbeats); past it, the worker is taken as lost.
    sa.Column("lease_expires_at", TIMESTAMP_TYPE, nullable=True),
    # A retrying task's next attempt starts no earlier than this.
    sa.Column("retry_at", TIMESTAMP_TYPE, nullable=True),
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    # Attempts so far (a claim adds one); numbers the rows of task_attempts.
    sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_tasks_run_created", "run_id", "created_at"),
    sa.Index("ix_tasks_run_status", "run_id", "status"),
    sa.Index("ix_tasks_parent", "parent_task_id"),
    sa.Index("ix_tasks_org_created", "org_id", "created_at"),
    sa.Index("ix_tasks_org_status_created", "org_id", "status", "created_at"),
    sa.Index("ix_tasks_org_idempotency_key", "org_id", "idempotency_key", unique=True),
)

task_attempts = sa.Table(
    "task_attempts",
    metadata,
    # One row per attempt: opened by the claim, closed by the move that ends it.
    sa.Column(
        "task_id", UUID_TYPE, sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("org_id", sa.String(64), nullable=False),
    sa.Column("run_id", UUID_TYPE, nullable=False),
    sa.Column("worker_id", sa.String(255), nullable=True),
    sa.Column("queue_job_id", sa.String(255), nullable=True),
    sa.Column("started_at", TIMESTAMP_TYPE, nullable=False),
    sa.Column("finished_at", TIMESTAMP_TYPE, nullable=True),
    sa.Column("duration_ms", sa.BigInteger, nullable=True),
    # "running" while open, then the status the task moved to (completed, retrying, ...).
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error", JSON_TYPE, nullable=True),
    sa.Index(
        "ix_task_attempts_run_open",
        "run_id",
        postgresql_where=sa.text("finished_at IS NULL"),
        sqlite_where=sa.text("finished_at IS NULL"),
    ),
)

workers = sa.Table(
    "workers",
    metadata,
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

task_types = sa.Table(
    "task_types",
    metadata,
    # The handler options that live workers declare for a task type (their @task options).
    sa.Column("org_id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(255), primary_key=True),
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("max_retries", sa.Integer, nullable=True),
    sa.Column("timeout", sa.Float, nullable=True),
    sa.Column("last_seen_at", TIMESTAMP_TYPE, nullable=False),
)

run_data = sa.Table(
    "run_data",
    metadata,
    # Insertion order: "latest" means highest seq, exact even within one millisecond.
    sa.Column("seq", SEQ_TYPE, primary_key=True, autoincrement=True),
    sa.Column("id", UUID_TYPE, nullable=False),
    # No foreign keys: the write checks the run and task itself (migration 0009).
    sa.Column("run_id", UUID_TYPE, nullable=False),
    sa.Column("task_id", UUID_TYPE, nullable=True),
    sa.Column("org_id", sa.String(64), nullable=False),
    sa.Column("key", literal_text(255), nullable=False),
    sa.Column("value", JSON_TYPE, nullable=True),
    sa.Column("tags", JSON_TYPE, nullable=False),
    sa.Column("metadata", JSON_TYPE, nullable=True),
    sa.Column("created_at", TIMESTAMP_TYPE, nullable=False),
    sa.Column("updated_at", TIMESTAMP_TYPE, nullable=False),
    sa.Index("ix_run_data_id", "id", unique=True),
    sa.Index("ix_run_data_run_key_seq", "run_id", "key", "seq"),
)

run_data_latest = sa.Table(
    "run_data_latest",
    metadata,
    # One row per (run_id, key) that has entries: the seq of its latest (highest seq).
    # Kept by the storage layer; its row is also the lock that orders writers of one key.
    sa.Column("run_id", UUID_TYPE, primary_key=True),
    sa.Column("key", literal_text(255), primary_key=True),
    sa.Column("seq", SEQ_TYPE, nullable=False),
)

run_data_tags = sa.Table(
    "run_data_tags",
    metadata,
    # The entry's seq; no foreign key (migration 0010): the statements that write an entry
    # write its tags, and the deletes of entries delete theirs.
    sa.Column("run_data_seq", SEQ_TYPE, primary_key=True),
    sa.Column("tag", literal_text(255), primary_key=True),
    sa.Column("run_id", UUID_TYPE, nullable=False),
    sa.Index("ix_run_data_tags_run_tag", "run_id", "tag", "run_data_seq"),
)
