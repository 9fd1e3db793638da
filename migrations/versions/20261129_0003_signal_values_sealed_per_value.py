"""signal values sealed per value, not per bucket; signals kept in key order on SQLite

A signal's value is now encrypted with associated data naming the value (dimension and value
index), not the bucket (category and epoch) it sits in, so that a view can decrypt any bucket's
copy of a value after summing them in SQL. Values sealed the old way cannot be read by the new
code; signals are derived from events, so the table is rebuilt empty here and refilled by
``profilestore signals rebuild`` (which needs the keys, so it cannot run inside a migration).

The table is rebuilt WITHOUT ROWID on SQLite, so a subject's signals lie together in key order
(a view reads them as one range); PostgreSQL ignores the option.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import profilestore.kit.sqltypes


revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _create_signals(**options: bool) -> None:
    op.create_table(
        "signals",
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("dimension", sa.String(length=64), nullable=False),
        sa.Column("value_index", sa.LargeBinary(length=32), nullable=False),
        sa.Column("category", sa.String(length=200), nullable=False),
        sa.Column("epoch", profilestore.kit.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("value_ct", sa.LargeBinary(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("score_at", profilestore.kit.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("evidence", sa.Integer(), nullable=False),
        sa.Column("last_seen", profilestore.kit.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "dimension", "value_index", "category", "epoch", name=op.f("pk_signals")),
        **options,
    )


def upgrade() -> None:
    op.drop_table("signals")
    _create_signals(sqlite_with_rowid=False)


def downgrade() -> None:
    # The old code cannot read values sealed the new way either: rebuild after downgrading too.
    op.drop_table("signals")
    _create_signals()
