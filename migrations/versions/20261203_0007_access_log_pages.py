"""the access log indexed by (subject, seq), so that an audit reads one page at a time

``GET /v1/audit`` returned every entry of a subject at once; every view is logged, so a frequent
visitor's log grows by thousands of reads a day. The audit now pages by ``seq``: with the subject
and the sequence in one index, a page is a range of it, whatever the subject's log holds. The
index on the subject alone is dropped: the new one leads with it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 00:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_access_log_subject_seq", "access_log", ["subject_id", "seq"])
    op.drop_index("ix_access_log_subject_id", table_name="access_log")


def downgrade() -> None:
    op.create_index("ix_access_log_subject_id", "access_log", ["subject_id"])
    op.drop_index("ix_access_log_subject_seq", table_name="access_log")
