"""Let counter updates of a run be HOT updates on PostgreSQL.

Every task completion raises a counter on its run and bumps ``updated_at``. With
``updated_at`` indexed, each of those updates wrote a new entry into every index of
``runs``, and a busy run's row piled up dead index entries that every later lookup had to
step over. Without that index (and with free space left on each page for the new row
version) PostgreSQL updates the row in place (heap-only tuples). Listing runs sorted by
``updatedAt`` now sorts the organisation's runs instead of reading an index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_runs_org_updated", table_name="runs")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE runs SET (fillfactor = 70)")
        op.execute("ALTER TABLE tasks SET (fillfactor = 85)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE runs RESET (fillfactor)")
        op.execute("ALTER TABLE tasks RESET (fillfactor)")
    op.create_index("ix_runs_org_updated", "runs", ["org_id", "updated_at"])
