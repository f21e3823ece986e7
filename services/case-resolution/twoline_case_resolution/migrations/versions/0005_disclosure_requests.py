"""Step-up disclosure requests (F5): a case worker asks the NGO for more categories.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from twoline_shared.db import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_disclosure_requests",
        sa.Column("request_id", sa.Uuid(), primary_key=True),
        sa.Column("case_id", sa.Uuid(), sa.ForeignKey("cases.case_id"), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_case_disclosure_requests_case_id", "case_disclosure_requests", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_case_disclosure_requests_case_id", "case_disclosure_requests")
    op.drop_table("case_disclosure_requests")
