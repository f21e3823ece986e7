"""Initial consent schema: kernel tables, known clients and consent grants.

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
        "consent_known_client",
        sa.Column("client_ref", sa.String(64), primary_key=True),
        sa.Column("org", sa.String(100), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "consent",
        sa.Column("consent_id", sa.Uuid(), primary_key=True),
        sa.Column("client_ref", sa.String(64), nullable=False),
        sa.Column("org", sa.String(100), nullable=False),
        sa.Column("recipient", sa.String(32), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("language", sa.String(2), nullable=False),
        sa.Column("interpreter", sa.Boolean(), nullable=False),
        sa.Column("information_version", sa.String(64), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("obtained_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_by", sa.String(255), nullable=True),
        sa.Column("withdrawal_reason", sa.String(500), nullable=True),
    )
    op.create_index("ix_consent_org_client_ref", "consent", ["org", "client_ref"])


def downgrade() -> None:
    op.drop_table("consent")
    op.drop_table("consent_known_client")
