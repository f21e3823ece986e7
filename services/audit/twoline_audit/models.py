"""Audit tables and API schemas: the append-only log (hash chain and Merkle tree) of records.

Entries copy what the audit event carried (ids, roles, codes and categories, never personal
data, F8) and nothing else.
"""

from datetime import date
from typing import Any, Literal

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


class AuditTreeNode(SQLModel, table=True):
    """The hash of one perfect subtree of the Merkle tree (2**level leaves at `position`),
    written when its last leaf is appended (level 0 is each entry's own `leaf_hash`).

    A cache beside the log, derivable from the stored leaf hashes: a checkpoint or a proof
    reads O(log n) of these instead of rebuilding the tree from every leaf.
    """

    __tablename__ = "audit_tree_node"

    level: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    position: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    hash: str = Field(max_length=64)


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


# ---------------------------------------------------------------- flow traces


class AuditEntryRef(SQLModel, table=True):
    """An id an entry names (kind `referral`, `track` or `consent`), written with the entry.

    Not part of any hash: it is an index for finding a referral's entries, rebuilt from the
    entries' data if need be. No foreign key, so the log stays a single insert-only table.
    """

    __tablename__ = "audit_entry_ref"
    __table_args__ = (sa.Index("ix_audit_entry_ref_kind_value", "kind", "value"),)

    index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    kind: str = Field(primary_key=True, max_length=16)
    value: str = Field(primary_key=True, max_length=64)


class TraceRecord(SQLModel):
    """One entry of a referral's trace: who (role, agency, office — never a name), did what,
    to which resource, with which ids and codes."""

    index: int
    time: str
    service: str | None
    type: str
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    outcome: str | None = None
    roles: list[str] = []
    org: str | None = None
    agency: str | None = None
    office: str | None = None
    referral_id: str | None = None
    track_id: str | None = None
    consent_id: str | None = None
    track: str | None = None
    status: str | None = None
    previous_status: str | None = None
    reason: str | None = None
    # The track's outcome code on a completion (`outcome` is whether the action succeeded).
    track_outcome: str | None = None
    purpose: str | None = None
    request_id: str | None = None
    key_id: str | None = None
    categories: list[str] | None = None
    track_ids: list[str] | None = None
    consent_ids: list[str] | None = None
    linked_track_ids: list[str] | None = None


class TraceFinding(SQLModel):
    """Something in a trace an auditor should look at: a code, the entries, ids and codes."""

    code: str
    indexes: list[int]
    text: str


class TracePublic(SQLModel):
    referral_id: str
    records: list[TraceRecord]
    findings: list[TraceFinding]
    count: int


# ---------------------------------------------------------------- outcome statistics

# A count, "<5" when withheld (a small cell, or one withheld so a small one cannot be worked out
# by subtraction), or null where the grouping does not apply to the figure.
StatCount = int | Literal["<5"] | None


class ReferralCounts(SQLModel):
    legal_stay: StatCount
    return_: StatCount = Field(alias="return")
    total: StatCount


class CompletedCounts(SQLModel):
    """Completed tracks by the LVV outcome category of their outcome (`OUTCOME_CATEGORY`)."""

    permanent: StatCount
    semi_permanent: StatCount
    none: StatCount
    total: StatCount


class StatsRow(SQLModel):
    """One group's figures: counts and codes only, never an id of anyone (F8)."""

    group: str
    clients_reached: StatCount
    referrals: ReferralCounts
    accepted: StatCount
    rejected: StatCount
    completed: CompletedCounts
    consents_withdrawn: StatCount
    # Days from routing, to one decimal; null from fewer than `suppressed_below` tracks.
    median_days_to_acceptance: float | None
    median_days_to_completion: float | None


class OutcomeStats(SQLModel):
    """Outcome statistics for a period (`from` inclusive, `to` exclusive; null is open)."""

    from_: date | None = Field(alias="from")
    to: date | None
    by: str | None
    suppressed_below: int
    rows: list[StatsRow]
    total: StatsRow
