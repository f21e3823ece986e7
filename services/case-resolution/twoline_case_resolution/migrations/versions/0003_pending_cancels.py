"""Cancels that arrive before their track is routed (F4).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
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
        "case_pending_cancels",
        sa.Column("track_id", sa.String(64), primary_key=True),
        sa.Column("reason", sa.String(32), primary_key=True),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("case_pending_cancels")
