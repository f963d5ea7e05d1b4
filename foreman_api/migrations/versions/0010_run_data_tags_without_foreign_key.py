"""Run data tags: no foreign key to their entry; deletes of entries remove their tags.

Every tag row is written by the statement that writes its entry (or changes its tags),
with the entry's own ``seq``, so the key ``run_data_tags.run_data_seq → run_data.seq``
guarded nothing those statements do not. It cost a trigger per tag row on every write (a
query on ``run_data`` that locks the entry ``FOR KEY SHARE``: about a sixth of
PostgreSQL's time per write), and that query's plan is cached per connection: planned while
``run_data`` was small, it scanned the whole table for each tag row as the table grew
(until the next ANALYZE). Its ``ON DELETE CASCADE`` is now done by the deletes themselves.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_NAMES = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}
"""PostgreSQL's own name for the key 0001 created unnamed; SQLite's batch mode reflects
unnamed keys under this convention, so one name drops it on both."""
_KEY = "run_data_tags_run_data_seq_fkey"


def upgrade() -> None:
    with op.batch_alter_table("run_data_tags", naming_convention=_NAMES) as batch:
        batch.drop_constraint(_KEY, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("run_data_tags", naming_convention=_NAMES) as batch:
        batch.create_foreign_key(_KEY, "run_data", ["run_data_seq"], ["seq"], ondelete="CASCADE")
