"""signal values sealed per value, not per bucket

A signal's value is now encrypted with associated data naming the value (dimension and value
index), not the bucket (category and epoch) it sits in, so that a view can decrypt any bucket's
copy of a value after summing them in SQL. Values sealed the old way cannot be read by the new
code; signals are derived from events, so they are cleared here and rebuilt by
``profilestore signals rebuild`` (which needs the keys, so it cannot run inside a migration).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 12:00:00.000000
"""

from collections.abc import Sequence

from alembic import op


revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM signals")


def downgrade() -> None:
    # The old code cannot read values sealed the new way either: clear them, rebuild after.
    op.execute("DELETE FROM signals")
