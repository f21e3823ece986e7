"""The disclosure package is stored only as the bridge sealed it (F4: crypto-shredding).

The plaintext `disclosure` column goes: a package stored in plaintext before this revision is
dropped, not sealed (zone B holds no key to seal it with). Those cases keep their categories and
show the disclosure as `unavailable`; the NGO refers again to disclose it sealed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("disclosure_key_id", sa.String(64), nullable=True))
    op.add_column("cases", sa.Column("disclosure_nonce", sa.String(32), nullable=True))
    op.add_column("cases", sa.Column("disclosure_ciphertext", sa.Text(), nullable=True))
    # NULL first, so that no plaintext survives in a page the table rebuild leaves behind.
    op.execute("UPDATE cases SET disclosure = NULL")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("disclosure")


def downgrade() -> None:
    op.add_column("cases", sa.Column("disclosure", sa.JSON(), nullable=True))
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("disclosure_ciphertext")
        batch.drop_column("disclosure_nonce")
        batch.drop_column("disclosure_key_id")
