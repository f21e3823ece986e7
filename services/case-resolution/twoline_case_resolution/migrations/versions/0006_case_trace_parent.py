"""The trace a case belongs to: the routed event's W3C traceparent, so that a case worker's
status changes continue the referral's trace (ids only, F8).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("trace_parent", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("trace_parent")
