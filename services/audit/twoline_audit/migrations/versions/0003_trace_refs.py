"""The ids each audit entry names (referral, track, consent), for flow traces, backfilled.

An index beside the log, not in it: `audit_entry` and its hashes are untouched.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MAX_REF = 64


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _strs(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


def _refs(text: Any) -> set[tuple[str, str]]:
    # Frozen copy of traces.entry_refs: a migration must not change meaning when the code does.
    try:
        data = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return set()
    if not isinstance(data, dict):
        return set()
    referrals = {_str(data.get("referral_id")), *_strs(data.get("referral_ids"))}
    if data.get("resource_type") in ("referral", "access-log") and data.get("action") != "search":
        referrals.add(_str(data.get("resource_id")))
    tracks = {_str(data.get("track_id")), *_strs(data.get("track_ids"))}
    tracks.update(_strs(data.get("linked_track_ids")))
    if data.get("resource_type") == "track":
        tracks.add(_str(data.get("resource_id")))
    consents = {_str(data.get("consent_id")), _str(data.get("previous_consent_id"))}
    consents.update(_strs(data.get("consent_ids")))
    return {
        (kind, value)
        for kind, values in (("referral", referrals), ("track", tracks), ("consent", consents))
        for value in values
        if value is not None and len(value) <= MAX_REF
    }


def upgrade() -> None:
    op.create_table(
        "audit_entry_ref",
        sa.Column("index", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(64), primary_key=True),
    )
    op.create_index("ix_audit_entry_ref_kind_value", "audit_entry_ref", ["kind", "value"])
    entry = sa.table("audit_entry", sa.column("index", sa.Integer()), sa.column("data", sa.Text()))
    ref = sa.table(
        "audit_entry_ref",
        sa.column("index", sa.Integer()),
        sa.column("kind", sa.String()),
        sa.column("value", sa.String()),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(entry.c.index, sa.cast(entry.c.data, sa.Text()).label("data"))
    ).all()
    for row in rows:
        refs = [{"index": row.index, "kind": k, "value": v} for k, v in sorted(_refs(row.data))]
        if refs:
            connection.execute(ref.insert(), refs)


def downgrade() -> None:
    op.drop_index("ix_audit_entry_ref_kind_value", table_name="audit_entry_ref")
    op.drop_table("audit_entry_ref")
