"""Audit tables and API schemas: the append-only log (hash chain and Merkle tree) of records.

Entries copy what the audit event carried (ids, roles, codes and categories, never personal
data, F8) and nothing else.
"""

from datetime import date
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import ConfigDict
from sqlmodel import Field, SQLModel

from twoline_shared.pagination import PageCount

ENTRY_INDEX = "The entry's position in the log, from 0; it is hashed too, so a gap shows."
ENTRY_TIME = "The record's time exactly as it travelled (RFC 3339, UTC)."
ENTRY_DATA = (
    "The audit record: actor (role, org or agency and office — never a name), action, resource, "
    "ids, codes and categories, outcome; never personal data (F8)."
)
ENTRY_TYPE = "The record's type, `audit.<service>.<resource>.<action>`."


class AuditEntryBase(SQLModel):
    # The position in the chain, from 0; it is also hashed, so a gap is visible.
    index: int = Field(
        primary_key=True, sa_column_kwargs={"autoincrement": False}, description=ENTRY_INDEX
    )
    event_id: str = Field(
        unique=True, max_length=64, description="The id of the event that carried the record."
    )
    type: str = Field(max_length=255, description=ENTRY_TYPE)
    source: str = Field(max_length=255, description="The service that wrote it, `twoline/<name>`.")
    # The event's `time` exactly as it travelled: a string, so the hash does not depend on how a
    # database stores timestamps.
    time: str = Field(max_length=64, description=ENTRY_TIME)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, description=ENTRY_DATA)
    prev_hash: str = Field(
        max_length=64, description="The previous entry's hash (hex); all zeros for the first."
    )
    entry_hash: str = Field(
        max_length=64, description="This entry's hash (hex), over its fields and `prev_hash`."
    )
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


EXAMPLE_ENTRY: dict[str, Any] = {
    "index": 41,
    "event_id": "9d8c7b6a-5f4e-4d3c-8b2a-190817263544",
    "type": "audit.referral.track.disclose",
    "source": "twoline/referral",
    "time": "2026-01-15T11:20:00.512Z",
    "data": {
        "action": "disclose",
        "actor": {"roles": ["ngo_caseworker"], "org": "ngo-ghent"},
        "resource_type": "track",
        "resource_id": "5d3c2b1a-0f9e-4d8c-b7a6-958473625140",
        "categories": ["identity", "needs"],
        "purpose": "referral",
        "outcome": "success",
    },
    "prev_hash": "3f2a" + "0" * 60,
    "entry_hash": "b71c" + "0" * 60,
}


class AuditEntryPublic(SQLModel):
    """One entry of the audit log, as hashed into the chain."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_ENTRY]})  # type: ignore[assignment]

    index: int = Field(description=ENTRY_INDEX)
    event_id: str = Field(description="The id of the event that carried the record.")
    type: str = Field(description=ENTRY_TYPE)
    source: str = Field(description="The service that wrote it, `twoline/<name>`.")
    time: str = Field(description=ENTRY_TIME)
    # null only if the stored data no longer parses (then `verify` reports the entry).
    data: dict[str, Any] | None = Field(
        description=ENTRY_DATA + " `null` only if the stored data no longer parses (then "
        "`verify` reports the entry)."
    )
    prev_hash: str = Field(description="The previous entry's hash (hex).")
    entry_hash: str = Field(description="This entry's hash (hex).")


class AuditEntriesPublic(SQLModel):
    """A page of the audit log, in log order."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={"examples": [{"data": [EXAMPLE_ENTRY], "count": 120}]}
    )

    data: list[AuditEntryPublic] = Field(description="This page of entries, in log order.")
    count: PageCount


class ChainVerification(SQLModel):
    """The result of recomputing the chain from the first entry."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={
            "examples": [
                {"ok": True, "size": 120, "head_hash": "b71c" + "0" * 60, "first_bad_index": None}
            ]
        }
    )

    ok: bool = Field(description="Whether every entry is unchanged and in its place.")
    size: int = Field(ge=0, description="How many entries the log holds.")
    head_hash: str | None = Field(description="The last entry's hash (hex); `null` when empty.")
    first_bad_index: int | None = Field(
        description="The first entry whose hash or link does not check out; `null` if none."
    )


class Checkpoint(SQLModel):
    """A signed statement of the tree's size and root (hashes and signature in base64).

    The signature is Ed25519 over `domain.checkpoint_body`:
    "twoline-audit\n<tree_size>\n<root_hash>\n<timestamp>\n".
    """

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={
            "examples": [
                {
                    "tree_size": 120,
                    "root_hash": "q3l1hQ1jTQxv0l0m8oQm0cY0m0Rk1m1Zb4w2m6c9Y3E=",
                    "timestamp": "2026-01-31T17:00:00Z",
                    "signature": "MEUCIQ" + "A" * 80,
                    "key_id": "3b9f1c0a7d2e4f56",
                }
            ]
        }
    )

    tree_size: int = Field(ge=0, description="How many entries the tree holds.")
    root_hash: str = Field(description="The Merkle tree hash (RFC 9162) of those entries, base64.")
    timestamp: str = Field(description="When the checkpoint was signed (RFC 3339, UTC).")
    signature: str = Field(
        description="The Ed25519 signature over `twoline-audit\\n<tree_size>\\n<root_hash>\\n"
        "<timestamp>\\n`, base64."
    )
    key_id: str = Field(
        description="Which key signed it: hex of the first 8 bytes of the SHA-256 of the raw "
        "public key (see `GET /v1/log/public-key`)."
    )


class PublicKey(SQLModel):
    """The key that signs checkpoints, for a verifier to pin."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={
            "examples": [
                {
                    "key_id": "3b9f1c0a7d2e4f56",
                    "algorithm": "Ed25519",
                    "public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
                    "pem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n",
                }
            ]
        }
    )

    key_id: str = Field(description="The key's id, as checkpoints name it.")
    algorithm: str = Field(default="Ed25519", description="The signature algorithm.")
    # The raw 32-byte key in base64, and the same key as a SubjectPublicKeyInfo PEM.
    public_key: str = Field(description="The raw 32-byte public key, base64.")
    pem: str = Field(description="The same key as a SubjectPublicKeyInfo PEM.")


class InclusionProof(SQLModel):
    """RFC 9162 PATH: the entry's leaf (as stored) and its audit path in a tree of tree_size."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={
            "examples": [
                {
                    "leaf_index": 41,
                    "tree_size": 120,
                    "leaf_hash": "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
                    "audit_path": ["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="],
                }
            ]
        }
    )

    leaf_index: int = Field(ge=0, description="The entry's index.")
    tree_size: int = Field(ge=1, description="The size of the tree the proof is in.")
    leaf_hash: str = Field(description="The entry's leaf hash as appended, base64.")
    audit_path: list[str] = Field(
        description="The sibling hashes from the leaf up to the root, base64 (RFC 9162 PATH)."
    )


class ConsistencyProof(SQLModel):
    """RFC 9162 PROOF: the nodes that show the tree of size `second` extends that of `first`."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={
            "examples": [
                {
                    "first": 8,
                    "second": 13,
                    "consistency_path": ["bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="],
                }
            ]
        }
    )

    first: int = Field(ge=1, description="The size of the earlier tree.")
    second: int = Field(ge=1, description="The size of the later tree.")
    consistency_path: list[str] = Field(
        description="The hashes that show the later tree extends the earlier one, base64 "
        "(RFC 9162 PROOF)."
    )


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


IF_NAMED = " `null` when the entry names none."


class TraceRecord(SQLModel):
    """One entry of a referral's trace: who (role, agency, office — never a name), did what,
    to which resource, with which ids and codes."""

    index: int = Field(description=ENTRY_INDEX)
    time: str = Field(description=ENTRY_TIME)
    service: str | None = Field(description="The service that wrote the entry.")
    type: str = Field(description=ENTRY_TYPE)
    action: str | None = Field(
        default=None, description="What was done, e.g. `create`, `read`, `disclose`, `accept`."
    )
    resource_type: str | None = Field(
        default=None, description="What kind of resource, e.g. `referral`, `track`, `case`."
    )
    resource_id: str | None = Field(default=None, description="Which resource, by its id.")
    outcome: str | None = Field(
        default=None, description="Whether the action succeeded: `success` or `denied`."
    )
    roles: list[str] = Field(default=[], description="The actor's roles; never a name (F8).")
    org: str | None = Field(default=None, description="The actor's NGO, in zone A." + IF_NAMED)
    agency: str | None = Field(
        default=None, description="The actor's or the track's agency." + IF_NAMED
    )
    office: str | None = Field(default=None, description="The office concerned." + IF_NAMED)
    referral_id: str | None = Field(
        default=None, description="The referral it names (zone A and the bridge only)." + IF_NAMED
    )
    track_id: str | None = Field(default=None, description="The track it names." + IF_NAMED)
    consent_id: str | None = Field(default=None, description="The consent it names." + IF_NAMED)
    track: str | None = Field(
        default=None, description="Which track: `legal_stay` or `return`." + IF_NAMED
    )
    status: str | None = Field(
        default=None, description="The track's status after the action." + IF_NAMED
    )
    previous_status: str | None = Field(
        default=None, description="The track's status before the action." + IF_NAMED
    )
    reason: str | None = Field(default=None, description="A reason code." + IF_NAMED)
    # The track's outcome code on a completion (`outcome` is whether the action succeeded).
    track_outcome: str | None = Field(
        default=None, description="The track's outcome code, on a completion." + IF_NAMED
    )
    purpose: str | None = Field(
        default=None, description="The consent purpose the action went under." + IF_NAMED
    )
    request_id: str | None = Field(
        default=None, description="The step-up request it names." + IF_NAMED
    )
    key_id: str | None = Field(
        default=None, description="The data key a disclosure was sealed under." + IF_NAMED
    )
    categories: list[str] | None = Field(
        default=None, description="The data categories concerned (codes)." + IF_NAMED
    )
    track_ids: list[str] | None = Field(default=None, description="The tracks it names." + IF_NAMED)
    consent_ids: list[str] | None = Field(
        default=None, description="The consents it names." + IF_NAMED
    )
    linked_track_ids: list[str] | None = Field(
        default=None, description="The other agency's tracks a joint review showed." + IF_NAMED
    )


class TraceFinding(SQLModel):
    """Something in a trace an auditor should look at: a code, the entries, ids and codes."""

    code: str = Field(
        description="What was found: `disclosure-without-consent`, `read-after-withdrawal`, "
        "`status-by-wrong-role` or `event-not-consumed`."
    )
    indexes: list[int] = Field(description="The entries it is about, by index.")
    text: str = Field(description="What it means, in words, with ids and codes only.")


class TracePublic(SQLModel):
    """One referral's flow across every service, from the audit log."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={
            "examples": [
                {
                    "referral_id": "8c4f2e1a-7b6d-4c3e-9f8a-2b1c0d9e8f7a",
                    "records": [
                        {
                            "index": 41,
                            "time": "2026-01-15T11:20:00.512Z",
                            "service": "referral",
                            "type": "audit.referral.track.disclose",
                            "action": "disclose",
                            "resource_type": "track",
                            "resource_id": "5d3c2b1a-0f9e-4d8c-b7a6-958473625140",
                            "outcome": "success",
                            "roles": ["ngo_caseworker"],
                            "org": "ngo-ghent",
                            "referral_id": "8c4f2e1a-7b6d-4c3e-9f8a-2b1c0d9e8f7a",
                            "track_id": "5d3c2b1a-0f9e-4d8c-b7a6-958473625140",
                            "track": "legal_stay",
                            "purpose": "referral",
                            "categories": ["identity", "needs"],
                        }
                    ],
                    "findings": [],
                    "count": 1,
                }
            ]
        }
    )

    referral_id: str = Field(description="The referral traced.")
    records: list[TraceRecord] = Field(description="Every entry about it, in log order.")
    findings: list[TraceFinding] = Field(description="What an auditor should look at.")
    count: int = Field(ge=0, description="How many records the trace holds.")


# ---------------------------------------------------------------- outcome statistics

# A count, "<5" when withheld (a small cell, or one withheld so a small one cannot be worked out
# by subtraction), or null where the grouping does not apply to the figure.
StatCount = int | Literal["<5"] | None


COUNT = (
    ' A count, `"<5"` where withheld (a small cell, or one withheld so that a small one '
    "cannot be worked out), or `null` where the grouping does not apply."
)


class ReferralCounts(SQLModel):
    """Tracks referred, by track."""

    legal_stay: StatCount = Field(description="Legal-stay tracks referred." + COUNT)
    return_: StatCount = Field(alias="return", description="Return tracks referred." + COUNT)
    total: StatCount = Field(description="Tracks referred in all." + COUNT)


class CompletedCounts(SQLModel):
    """Completed tracks by the LVV outcome category of their outcome (`OUTCOME_CATEGORY`)."""

    permanent: StatCount = Field(
        description="Completed with legal stay, return or onward migration." + COUNT
    )
    semi_permanent: StatCount = Field(description="Completed with a protection procedure." + COUNT)
    none: StatCount = Field(
        description="Completed with no solution, disengagement or a withdrawn consent." + COUNT
    )
    total: StatCount = Field(description="Completed in all." + COUNT)


MEDIAN = " To one decimal; `null` from fewer than `suppressed_below` tracks."


class StatsRow(SQLModel):
    """One group's figures: counts and codes only, never an id of anyone (F8)."""

    group: str = Field(
        description="The group: an agency, office, track, outcome or month (`YYYY-MM`) code; "
        "`all` for the total row."
    )
    clients_reached: StatCount = Field(description="Clients registered by the NGOs." + COUNT)
    referrals: ReferralCounts = Field(description="Tracks referred to the second line.")
    accepted: StatCount = Field(description="Tracks accepted by their performer." + COUNT)
    rejected: StatCount = Field(description="Tracks rejected by their performer." + COUNT)
    completed: CompletedCounts = Field(description="Tracks completed, by outcome category.")
    consents_withdrawn: StatCount = Field(description="Consents withdrawn." + COUNT)
    # Days from routing, to one decimal; null from fewer than `suppressed_below` tracks.
    median_days_to_acceptance: float | None = Field(
        description="The median days from routing to acceptance." + MEDIAN
    )
    median_days_to_completion: float | None = Field(
        description="The median days from routing to completion." + MEDIAN
    )


def _example_row(group: str, scale: int) -> dict[str, Any]:
    return {
        "group": group,
        "clients_reached": 40 * scale,
        "referrals": {"legal_stay": 12 * scale, "return": 9 * scale, "total": 21 * scale},
        "accepted": 17 * scale,
        "rejected": "<5",
        "completed": {
            "permanent": 6 * scale,
            "semi_permanent": "<5",
            "none": "<5",
            "total": 11 * scale,
        },
        "consents_withdrawn": "<5",
        "median_days_to_acceptance": 2.5,
        "median_days_to_completion": 41.0,
    }


class OutcomeStats(SQLModel):
    """Outcome statistics for a period (`from` inclusive, `to` exclusive; null is open)."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={
            "examples": [
                {
                    "from": "2026-01-01",
                    "to": "2026-07-01",
                    "by": "agency",
                    "suppressed_below": 5,
                    "rows": [_example_row("fedasil", 1), _example_row("immigration_office", 1)],
                    "total": _example_row("all", 2),
                }
            ]
        }
    )

    from_: date | None = Field(
        alias="from", description="The first day counted (inclusive); `null`: open."
    )
    to: date | None = Field(description="The day counting stopped (exclusive); `null`: open.")
    by: str | None = Field(description="What the rows group by; `null`: the total only.")
    suppressed_below: int = Field(description='Counts below this are withheld (shown `"<5"`).')
    rows: list[StatsRow] = Field(description="One row per group.")
    total: StatsRow = Field(description="The figures over every group.")
