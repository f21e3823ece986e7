"""Step-up disclosure requests from zone B, waiting for the NGO (F5).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from twoline_shared.db import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referral_disclosure_request",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("track_id", sa.Uuid(), sa.ForeignKey("referral_track.track_id"), nullable=False),
        sa.Column("referral_id", sa.Uuid(), sa.ForeignKey("referral.referral_id"), nullable=False),
        sa.Column("org", sa.String(100), nullable=False),
        sa.Column("client_ref", sa.String(64), nullable=False),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("track", sa.String(16), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=True),
        sa.Column("refuse_reason", sa.String(32), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
    )
    op.create_index(
        "ix_referral_disclosure_request_track_id", "referral_disclosure_request", ["track_id"]
    )
    op.create_index(
        "ix_referral_disclosure_request_org_status",
        "referral_disclosure_request",
        ["org", "status"],
    )


def downgrade() -> None:
    op.drop_index("ix_referral_disclosure_request_org_status", "referral_disclosure_request")
    op.drop_index("ix_referral_disclosure_request_track_id", "referral_disclosure_request")
    op.drop_table("referral_disclosure_request")
