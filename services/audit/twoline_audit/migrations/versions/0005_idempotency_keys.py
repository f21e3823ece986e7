"""Idempotency-Key records of creating requests (twoline_shared.idempotency): safe retries.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from twoline_shared.migrations import create_idempotency_table

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_table()


def downgrade() -> None:
    from alembic import op

    op.drop_table("idempotency_key")
