"""a counter of changes to what the collection gate reads (SQLite triggers keep it)

An event batch is planned on a read snapshot and written in the write transaction, which must
know whether the identities and consent the plan rests on are still those in force. On SQLite,
triggers on every table the gate reads move one counter on each change, so the write
transaction compares one number instead of looking the batch's people up again. PostgreSQL gets
the table (models and migrations stay one schema) but no triggers: it looks up again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every table the collection gate reads (events/intake.py, GATED_BY); a snapshot of it here.
GATED_BY = ("identifiers", "subjects", "consent_state", "purposes", "purpose_categories", "data_categories")
CHANGES = ("INSERT", "UPDATE", "DELETE")


def upgrade() -> None:
    op.create_table(
        "gate_generation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_generation")),
    )
    op.execute("INSERT INTO gate_generation (id, value) VALUES (1, 0)")
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in GATED_BY:
        for change in CHANGES:
            op.execute(
                f"CREATE TRIGGER gate_{table}_{change.lower()} AFTER {change} ON {table} "  # noqa: S608 - our names
                "BEGIN UPDATE gate_generation SET value = value + 1 WHERE id = 1; END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in GATED_BY:
            for change in CHANGES:
                op.execute(f"DROP TRIGGER IF EXISTS gate_{table}_{change.lower()}")
    op.drop_table("gate_generation")
