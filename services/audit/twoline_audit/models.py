"""Audit tables and API schemas: the append-only log (hash chain and Merkle tree) of records.

Entries copy what the audit event carried (ids, roles, codes and categories, never personal
data, F8) and nothing else.
"""

from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class AuditEntryBase(SQLModel):
    # The position in the chain, from 0; it is also hashed, so a gap is visible.
    index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    event_id: str = Field(unique=True, max_length=64)
    type: str = Field(max_length=255)
    source: str = Field(max_length=255)
    # The event's `time` exactly as it travelled: a string, so the hash does not depend on how a
    # database stores timestamps.
    time: str = Field(max_length=64)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    prev_hash: str = Field(max_length=64)
    entry_hash: str = Field(max_length=64)
    # The Merkle leaf hash (hex) of the entry as appended, stored once: the tree is built from
    # these, so a later change to the entry no longer matches its leaf.
    leaf_hash: str = Field(max_length=64)


class AuditEntry(AuditEntryBase, table=True):
    """One audit record in the chain; rows are only ever inserted."""

    __tablename__ = "audit_entry"


class AuditEntryPublic(SQLModel):
    index: int
    event_id: str
    type: str
    source: str
    time: str
    # null only if the stored data no longer parses (then `verify` reports the entry).
    data: dict[str, Any] | None
    prev_hash: str
    entry_hash: str


class AuditEntriesPublic(SQLModel):
    data: list[AuditEntryPublic]
    count: int


class ChainVerification(SQLModel):
    """The result of recomputing the chain from the first entry."""

    ok: bool
    size: int
    head_hash: str | None
    first_bad_index: int | None


class Checkpoint(SQLModel):
    """A signed statement of the tree's size and root (hashes and signature in base64).

    The signature is Ed25519 over `domain.checkpoint_body`:
    "twoline-audit\n<tree_size>\n<root_hash>\n<timestamp>\n".
    """

    tree_size: int
    root_hash: str
    timestamp: str
    signature: str
    key_id: str


class PublicKey(SQLModel):
    """The key that signs checkpoints, for a verifier to pin."""

    key_id: str
    algorithm: str = "Ed25519"
    # The raw 32-byte key in base64, and the same key as a SubjectPublicKeyInfo PEM.
    public_key: str
    pem: str


class InclusionProof(SQLModel):
    """RFC 9162 PATH: the entry's leaf (as stored) and its audit path in a tree of tree_size."""

    leaf_index: int
    tree_size: int
    leaf_hash: str
    audit_path: list[str]


class ConsistencyProof(SQLModel):
    """RFC 9162 PROOF: the nodes that show the tree of size `second` extends that of `first`."""

    first: int
    second: int
    consistency_path: list[str]
