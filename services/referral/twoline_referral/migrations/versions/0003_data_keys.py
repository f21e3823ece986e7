"""Data keys: one per consent; disclosure packages are sealed under them (F2, F4).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from twoline_shared.db import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referral_data_key",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("consent_id", sa.String(64), nullable=False, unique=True),
        # NULL once the consent is withdrawn: crypto-shredding (F4).
        sa.Column("key_bytes", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("destroyed_at", UtcDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("referral_data_key")
