"""A counter of a run's cancelled tasks, beside its completed and failed ones.

With it a run knows how many of its tasks are unfinished (``total - completed - failed -
cancelled``) from its own row: the move that settles its last task finishes the run in
the statement that counts it, instead of searching the run's tasks for an unfinished one
(a search that, under a steady stream of completions, walks index entries of tasks that
moved on and are not yet vacuumed). Existing runs are counted from their tasks.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "runs", sa.Column("cancelled_tasks", sa.Integer, nullable=False, server_default="0")
    )
    op.execute(
        "UPDATE runs SET cancelled_tasks = (SELECT count(*) FROM tasks"
        " WHERE tasks.run_id = runs.id AND tasks.status = 'cancelled')"
    )


def downgrade() -> None:
    op.drop_column("runs", "cancelled_tasks")
