"""The Merkle tree's leaf hash on every audit entry, backfilled from the entries as stored.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _leaf_hash(row: sa.Row) -> str:
    # Frozen copy of domain.leaf_hash(domain.entry_bytes(...)): a migration must not change
    # meaning when the code does. Rows whose data no longer parses get a hash that matches nothing.
    try:
        data = json.loads(row.data) if isinstance(row.data, str) else row.data
        body = json.dumps(
            {
                "index": row.index,
                "event_id": row.event_id,
                "type": row.type,
                "source": row.source,
                "time": row.time,
                "data": data,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        ).encode("utf-8")
    except (TypeError, ValueError):
        return "0" * 64
    return hashlib.sha256(b"\x00" + body).hexdigest()


def upgrade() -> None:
    op.add_column("audit_entry", sa.Column("leaf_hash", sa.String(64), nullable=True))
    entry = sa.table(
        "audit_entry",
        sa.column("index", sa.Integer()),
        sa.column("event_id", sa.String()),
        sa.column("type", sa.String()),
        sa.column("source", sa.String()),
        sa.column("time", sa.String()),
        sa.column("data", sa.Text()),
        sa.column("leaf_hash", sa.String()),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(
            entry.c.index,
            entry.c.event_id,
            entry.c.type,
            entry.c.source,
            entry.c.time,
            sa.cast(entry.c.data, sa.Text()).label("data"),
        )
    ).all()
    for row in rows:
        connection.execute(
            entry.update().where(entry.c.index == row.index).values(leaf_hash=_leaf_hash(row))
        )
    with op.batch_alter_table("audit_entry") as batch:
        batch.alter_column("leaf_hash", existing_type=sa.String(64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_entry") as batch:
        batch.drop_column("leaf_hash")
