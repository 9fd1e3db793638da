"""per-value sums of signals, and the buckets each subject's signals are kept in

A view summed a subject's signal buckets per value on every read: SQLite's work grew with the
number of bucket rows (about 200 for a busy shopper, against 10 for a new one). ``signal_values``
holds each value's sum over all its buckets, kept up by the same batch writes; ``signal_buckets``
lists a subject's (category, epoch) buckets, so that a view can tell whether its purpose may count
all of them and read the sums as they are. Both are filled here from the existing signals, decayed
to now with the configured half-life. On PostgreSQL they stay empty: views there sum the buckets
(``signals.service.keeps_sums`` says why).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 12:00:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import profilestore.kit.sqltypes
from profilestore.config import Settings

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signal_values",
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("dimension", sa.String(length=64), nullable=False),
        sa.Column("value_index", sa.LargeBinary(length=32), nullable=False),
        sa.Column("value_ct", sa.LargeBinary(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("score_at", profilestore.kit.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("evidence", sa.Integer(), nullable=False),
        sa.Column("last_seen", profilestore.kit.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "dimension", "value_index", name=op.f("pk_signal_values")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "signal_buckets",
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("category", sa.String(length=200), nullable=False),
        sa.Column("epoch", profilestore.kit.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "category", "epoch", name=op.f("pk_signal_buckets")),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name != "sqlite":  # the sums are kept on SQLite only (signals.service.keeps_sums)
        return
    fill = sa.text(
        "INSERT INTO signal_values (subject_id, dimension, value_index, value_ct, score, score_at, evidence, last_seen) "
        "SELECT subject_id, dimension, value_index, max(value_ct), "
        "sum(score * pow(2.0, (julianday(score_at) - julianday(:now)) / :half_life)), :now, sum(evidence), "
        "max(last_seen) FROM signals GROUP BY subject_id, dimension, value_index"
    ).bindparams(
        sa.bindparam("now", datetime.now(UTC), type_=profilestore.kit.sqltypes.UTCDateTime(timezone=True)),
        sa.bindparam("half_life", Settings().signals.half_life_days, type_=sa.Float()),
    )
    op.execute(fill)
    op.execute(
        "INSERT INTO signal_buckets (subject_id, category, epoch) SELECT DISTINCT subject_id, category, epoch FROM signals"
    )


def downgrade() -> None:
    op.drop_table("signal_buckets")
    op.drop_table("signal_values")
