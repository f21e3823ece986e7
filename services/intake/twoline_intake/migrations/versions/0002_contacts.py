"""Outreach contact log (contact, inform, refer).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from twoline_shared.db import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contact",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("client_id", sa.Uuid(), sa.ForeignKey("client.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("language", sa.String(2), nullable=True),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("logged_by", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_contact_client_id", "contact", ["client_id"])


def downgrade() -> None:
    op.drop_table("contact")
