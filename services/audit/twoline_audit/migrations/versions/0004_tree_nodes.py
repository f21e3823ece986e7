"""The Merkle tree's perfect subtrees, cached beside the log and backfilled.

`audit_entry` and its hashes are untouched: the nodes are derived from the stored leaf hashes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _node(left: bytes, right: bytes) -> bytes:
    # Frozen copy of domain.node_hash (RFC 6962): a migration must not change with the code.
    return hashlib.sha256(b"\x01" + left + right).digest()


def upgrade() -> None:
    op.create_table(
        "audit_tree_node",
        sa.Column("level", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    entry = sa.table(
        "audit_entry", sa.column("index", sa.Integer()), sa.column("leaf_hash", sa.String())
    )
    node = sa.table(
        "audit_tree_node",
        sa.column("level", sa.Integer()),
        sa.column("position", sa.Integer()),
        sa.column("hash", sa.String()),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(entry.c.index, entry.c.leaf_hash).order_by(entry.c.index))
    known: dict[tuple[int, int], bytes] = {}
    nodes = []
    for index, leaf_hex in rows:
        try:
            hash_ = bytes.fromhex(leaf_hex)
        except (TypeError, ValueError):
            hash_ = b""
        known[(0, index)] = hash_
        level, position = 0, index
        while position & 1 and (level, position - 1) in known:
            hash_ = _node(known[(level, position - 1)], hash_)
            level, position = level + 1, position >> 1
            known[(level, position)] = hash_
            nodes.append({"level": level, "position": position, "hash": hash_.hex()})
    for start in range(0, len(nodes), 1000):
        connection.execute(node.insert(), nodes[start : start + 1000])


def downgrade() -> None:
    op.drop_table("audit_tree_node")
