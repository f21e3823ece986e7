"""Track status from zone B, its history, and the requester's cancellation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from twoline_shared.db import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("referral", sa.Column("cancel_reason", sa.String(32), nullable=True))
    op.add_column("referral", sa.Column("cancel_note", sa.String(4000), nullable=True))
    op.add_column("referral", sa.Column("cancelled_by", sa.String(200), nullable=True))
    op.add_column("referral", sa.Column("cancelled_at", UtcDateTime(), nullable=True))
    op.add_column("referral_track", sa.Column("status_reason", sa.String(32), nullable=True))
    op.add_column("referral_track", sa.Column("outcome", sa.String(32), nullable=True))
    op.create_index("ix_referral_track_consent_id", "referral_track", ["consent_id"])
    op.create_table(
        "referral_track_status",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("track_id", sa.Uuid(), sa.ForeignKey("referral_track.track_id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_referral_track_status_track_id", "referral_track_status", ["track_id"])


def downgrade() -> None:
    op.drop_table("referral_track_status")
    op.drop_index("ix_referral_track_consent_id", table_name="referral_track")
    with op.batch_alter_table("referral_track") as batch:
        batch.drop_column("outcome")
        batch.drop_column("status_reason")
    with op.batch_alter_table("referral") as batch:
        batch.drop_column("cancelled_at")
        batch.drop_column("cancelled_by")
        batch.drop_column("cancel_note")
        batch.drop_column("cancel_reason")
