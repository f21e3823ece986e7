"""Initial referral schema: kernel tables, projections of zone-A facts, referrals and tracks.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from twoline_shared.migrations import create_kernel_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kernel_tables()
    op.create_table(
        "known_client",
        sa.Column("client_ref", sa.String(64), primary_key=True),
        sa.Column("org", sa.String(100), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_known_client_org", "known_client", ["org"])
    op.create_table(
        "consent_view",
        sa.Column("consent_id", sa.String(64), primary_key=True),
        sa.Column("client_ref", sa.String(64), nullable=False),
        sa.Column("org", sa.String(100), nullable=False),
        sa.Column("recipient", sa.String(32), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_consent_view_client_ref", "consent_view", ["client_ref"])
    op.create_index("ix_consent_view_org", "consent_view", ["org"])
    op.create_table(
        "referral",
        sa.Column("referral_id", sa.Uuid(), primary_key=True),
        sa.Column("org", sa.String(100), nullable=False),
        sa.Column("client_ref", sa.String(64), nullable=False),
        sa.Column("urgency", sa.String(16), nullable=False),
        sa.Column("note", sa.String(4000), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.UniqueConstraint("org", "idempotency_key", name="uq_referral_org_idempotency_key"),
    )
    op.create_index("ix_referral_org", "referral", ["org"])
    op.create_index("ix_referral_client_ref", "referral", ["client_ref"])
    op.create_table(
        "referral_track",
        sa.Column("track_id", sa.Uuid(), primary_key=True),
        sa.Column("referral_id", sa.Uuid(), sa.ForeignKey("referral.referral_id"), nullable=False),
        sa.Column("track", sa.String(16), nullable=False),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("office", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("business_status", sa.String(32), nullable=False),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("referral_id", "agency", name="uq_referral_track_referral_agency"),
    )
    op.create_index("ix_referral_track_referral_id", "referral_track", ["referral_id"])


def downgrade() -> None:
    op.drop_table("referral_track")
    op.drop_table("referral")
    op.drop_table("consent_view")
    op.drop_table("known_client")
