"""Initial case-resolution schema: kernel tables and cases.

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
        "cases",
        sa.Column("case_id", sa.Uuid(), primary_key=True),
        sa.Column("case_ref", sa.String(16), nullable=False, unique=True),
        sa.Column("track_id", sa.String(64), nullable=False, unique=True),
        sa.Column("track", sa.String(16), nullable=False),
        sa.Column("agency", sa.String(32), nullable=False),
        sa.Column("office", sa.String(100), nullable=False),
        sa.Column("urgency", sa.String(16), nullable=False),
        sa.Column("routed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("assignee", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_cases_queue", "cases", ["agency", "office", "status"])


def downgrade() -> None:
    op.drop_table("cases")
