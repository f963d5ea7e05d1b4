"""Runs finish by themselves: when their last unfinished task settles.

``runs.auto_complete`` is the run's choice (true unless created with
``autoComplete: false``); ``runs.auto_completed`` marks a run that finished that way, which
a new task or a retry reopens, unlike a run closed explicitly.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE … ADD COLUMN on both backends: a batch rebuild of ``runs`` on SQLite
    # would DROP a table that tasks reference.
    op.add_column(
        "runs", sa.Column("auto_complete", sa.Boolean, nullable=False, server_default=sa.true())
    )
    op.add_column(
        "runs",
        sa.Column("auto_completed", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("runs", "auto_completed")
    op.drop_column("runs", "auto_complete")
