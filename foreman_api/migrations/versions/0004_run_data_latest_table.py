"""Run data: the latest entry of each key in a table of its own, not a flag on every entry.

With ``run_data.is_latest`` (and its two indexes) every write touched two entries: it
cleared the flag of the key's previous latest, a new row version written into all five
indexes of ``run_data``, then inserted the new one; writers of one key were ordered by an
advisory lock taken in its own round trip. ``run_data_latest`` holds one small row per
(run, key) with the latest entry's ``seq``: a write inserts the entry and upserts that row
in one statement, and the upsert's row lock is what orders writers of one key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from foreman_api.storage.types import SEQ_TYPE, UUID_TYPE, literal_text

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_data_latest",
        sa.Column("run_id", UUID_TYPE, primary_key=True),
        sa.Column("key", literal_text(255), primary_key=True),
        sa.Column("seq", SEQ_TYPE, nullable=False),
    )
    op.execute(
        "INSERT INTO run_data_latest (run_id, key, seq) "
        "SELECT run_id, key, seq FROM run_data WHERE is_latest"
    )
    op.drop_index("ix_run_data_run_latest_key", table_name="run_data")
    op.drop_index("ix_run_data_run_latest_seq", table_name="run_data")
    with op.batch_alter_table("run_data") as batch:
        batch.drop_column("is_latest")


def downgrade() -> None:
    with op.batch_alter_table("run_data") as batch:
        batch.add_column(
            sa.Column("is_latest", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.execute(
        "UPDATE run_data SET is_latest = true WHERE seq IN (SELECT seq FROM run_data_latest)"
    )
    op.create_index("ix_run_data_run_latest_key", "run_data", ["run_id", "is_latest", "key"])
    op.create_index("ix_run_data_run_latest_seq", "run_data", ["run_id", "is_latest", "seq"])
    op.drop_table("run_data_latest")
