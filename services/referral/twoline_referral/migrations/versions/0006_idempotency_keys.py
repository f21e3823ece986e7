"""Idempotency-Key records of creating requests (twoline_shared.idempotency), replacing the
referral's own key columns; the bridge no longer keeps a projection of intake's clients (it asks
the consent service, which answers for the client too).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from twoline_shared.migrations import create_idempotency_table

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_table()
    with op.batch_alter_table("referral") as batch:
        batch.drop_constraint("uq_referral_org_idempotency_key", type_="unique")
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
    op.drop_index("ix_known_client_org", table_name="known_client")
    op.drop_table("known_client")


def downgrade() -> None:
    op.create_table(
        "known_client",
        sa.Column("client_ref", sa.String(64), primary_key=True),
        sa.Column("org", sa.String(100), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_known_client_org", "known_client", ["org"])
    with op.batch_alter_table("referral") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
        batch.create_unique_constraint(
            "uq_referral_org_idempotency_key", ["org", "idempotency_key"]
        )
    op.drop_table("idempotency_key")
