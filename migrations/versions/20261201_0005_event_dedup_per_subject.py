"""duplicates found per subject by a unique index on events; the receipts table goes

A batch used to record each event's (client, message id) in ``event_receipts``, keyed by those
two alone. Message ids are random, so every event's receipt landed on a page of its own:
megabytes of write-ahead log per 1,000-event batch, copied again by each checkpoint. The events
table already holds the client and message id; a unique index leading with the subject finds a
repeat as well and keeps a batch's entries together. A message id is a duplicate when the same
client sent it for the same person (a merge keeps one of two).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import profilestore.kit.sqltypes

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Receipts were unique per (client, message id), so no two events share the new key.
    op.create_index("uq_events_message", "events", ["subject_id", "client_id", "message_id"], unique=True)
    op.drop_table("event_receipts")


def downgrade() -> None:
    op.create_table(
        "event_receipts",
        sa.Column("client_id", sa.String(length=40), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("received_at", profilestore.kit.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "message_id", name=op.f("pk_event_receipts")),
    )
    # One receipt per (client, message id): the first event stored of any that share it. (The
    # WHERE lets SQLite's parser tell ON CONFLICT from a join constraint.)
    op.execute(
        "INSERT INTO event_receipts (client_id, message_id, subject_id, event_id, received_at) "
        "SELECT client_id, message_id, subject_id, event_id, received_at FROM events WHERE true "
        "ORDER BY received_at, event_id ON CONFLICT DO NOTHING"
    )
    op.drop_index("uq_events_message", table_name="events")
