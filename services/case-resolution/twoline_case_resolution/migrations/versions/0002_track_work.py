"""Disclosure, full task status and track work: options, return steps, sessions, decisions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from twoline_shared.db import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Cases opened before this revision had no disclosure: empty lists, nothing to withdraw.
_FILLED = {
    "purposes": ("[]", sa.JSON()),
    "disclosed_categories": ("[]", sa.JSON()),
    "disclosure_status": ("disclosed", sa.String(16)),
}


def upgrade() -> None:
    for name, (fill, type_) in _FILLED.items():
        op.add_column("cases", sa.Column(name, type_, nullable=False, server_default=fill))
    # The model has no server defaults: they only filled the rows that existed.
    with op.batch_alter_table("cases") as batch:
        for name in _FILLED:
            batch.alter_column(name, server_default=None)
    op.add_column("cases", sa.Column("disclosure", sa.JSON(), nullable=True))
    op.add_column("cases", sa.Column("status_reason", sa.String(32), nullable=True))
    op.add_column("cases", sa.Column("outcome", sa.String(32), nullable=True))
    op.add_column("cases", sa.Column("status_note", sa.String(2000), nullable=True))
    op.add_column("cases", sa.Column("closed_at", UtcDateTime(), nullable=True))
    op.add_column("cases", sa.Column("return_step", sa.String(32), nullable=True))

    op.create_table(
        "case_options",
        sa.Column("case_id", sa.Uuid(), sa.ForeignKey("cases.case_id"), primary_key=True),
        sa.Column("option", sa.String(32), primary_key=True),
        sa.Column("assessment", sa.String(16), nullable=False),
        sa.Column("note", sa.String(2000), nullable=True),
        sa.Column("assessed_by", sa.String(200), nullable=False),
        sa.Column("assessed_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "case_option_assessments",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("case_id", sa.Uuid(), sa.ForeignKey("cases.case_id"), nullable=False),
        sa.Column("option", sa.String(32), nullable=False),
        sa.Column("assessment", sa.String(16), nullable=False),
        sa.Column("note", sa.String(2000), nullable=True),
        sa.Column("assessed_by", sa.String(200), nullable=False),
        sa.Column("assessed_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_case_option_assessments_case_id", "case_option_assessments", ["case_id"])
    op.create_table(
        "case_decisions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("case_id", sa.Uuid(), sa.ForeignKey("cases.case_id"), nullable=False),
        sa.Column("decision", sa.String(32), nullable=False),
        sa.Column("option", sa.String(32), nullable=True),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("decided_by", sa.String(16), nullable=False),
        sa.Column("note", sa.String(2000), nullable=True),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_case_decisions_case_id", "case_decisions", ["case_id"])
    op.create_table(
        "case_return_steps",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("case_id", sa.Uuid(), sa.ForeignKey("cases.case_id"), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("previous_step", sa.String(32), nullable=True),
        sa.Column("preparation", sa.JSON(), nullable=True),
        sa.Column("decision_id", sa.Uuid(), sa.ForeignKey("case_decisions.id"), nullable=True),
        sa.Column("note", sa.String(2000), nullable=True),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_case_return_steps_case_id", "case_return_steps", ["case_id"])
    op.create_table(
        "case_sessions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("case_id", sa.Uuid(), sa.ForeignKey("cases.case_id"), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("language", sa.String(2), nullable=True),
        sa.Column("interpreter", sa.Boolean(), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("note", sa.String(2000), nullable=True),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_case_sessions_case_id", "case_sessions", ["case_id"])


def downgrade() -> None:
    op.drop_table("case_sessions")
    op.drop_table("case_return_steps")
    op.drop_table("case_decisions")
    op.drop_table("case_option_assessments")
    op.drop_table("case_options")
    with op.batch_alter_table("cases") as batch:
        for name in (
            "return_step",
            "closed_at",
            "status_note",
            "outcome",
            "status_reason",
            "disclosure",
            "disclosure_status",
            "disclosed_categories",
            "purposes",
        ):
            batch.drop_column(name)
