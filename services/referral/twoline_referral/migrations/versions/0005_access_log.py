"""The person's access log: every read of a disclosure in zone B (F9).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
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
        "referral_access_log",
        sa.Column("read_id", sa.String(64), primary_key=True),
        sa.Column("track_id", sa.Uuid(), sa.ForeignKey("referral_track.track_id"), nullable=False),
        sa.Column("referral_id", sa.Uuid(), sa.ForeignKey("referral.referral_id"), nullable=False),
        sa.Column("track", sa.String(16), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("office", sa.String(100), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("read_at", UtcDateTime(), nullable=False),
    )
    op.create_index(
        "ix_referral_access_log_referral_at", "referral_access_log", ["referral_id", "read_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_referral_access_log_referral_at", "referral_access_log")
    op.drop_table("referral_access_log")
