"""Initial intake schema: kernel tables and client records.

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
        "client",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("client_ref", sa.String(16), nullable=False, unique=True),
        sa.Column("org", sa.String(100), nullable=False),
        sa.Column("registered_by", sa.String(200), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("birth_year", sa.Integer(), nullable=True),
        sa.Column("nationality", sa.String(2), nullable=True),
        sa.Column("languages", sa.JSON(), nullable=False),
        sa.Column("municipality", sa.String(100), nullable=True),
        sa.Column("phone", sa.String(40), nullable=True),
        sa.Column("household", sa.JSON(), nullable=False),
        sa.Column("migration_history", sa.JSON(), nullable=False),
        sa.Column("needs", sa.JSON(), nullable=False),
        sa.Column("health", sa.JSON(), nullable=False),
        sa.Column("vulnerabilities", sa.JSON(), nullable=False),
        sa.Column("intentions", sa.JSON(), nullable=False),
        sa.Column("case_notes", sa.String(20000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_client_org", "client", ["org"])


def downgrade() -> None:
    op.drop_table("client")
