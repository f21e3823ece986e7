"""Case-resolution tables and API schemas (zone B): one case per referral and agency.

A case knows its `track_id` (unique per referral *and* agency) and its own `case_ref` pseudonym,
never the NGO's `client_ref` or the referral id, so ICAM and Fedasil share no identifier (F5).
"""

import secrets
import uuid
from datetime import datetime

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from twoline_shared.auth import Agency
from twoline_shared.codes import TaskStatus, Track, Urgency
from twoline_shared.db import UtcDateTime, utcnow

_REF_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_case_ref() -> str:
    """A fresh random pseudonym (40 bits), derived from nothing zone A knows (F5)."""
    return "K-" + "".join(secrets.choice(_REF_ALPHABET) for _ in range(8))


class Case(SQLModel, table=True):
    """One agency's case for one routed track; its queue is the agency's office (F7)."""

    # `case` is an SQL keyword.
    __tablename__ = "cases"
    __table_args__ = (sa.Index("ix_cases_queue", "agency", "office", "status"),)

    case_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_ref: str = Field(default_factory=new_case_ref, unique=True, max_length=16)
    track_id: str = Field(unique=True, max_length=64)
    track: Track = Field(sa_type=sa.String(16))
    agency: Agency = Field(sa_type=sa.String(32))
    office: str = Field(max_length=100)
    urgency: Urgency = Field(sa_type=sa.String(16))
    routed_at: datetime = Field(sa_type=UtcDateTime)
    status: TaskStatus = Field(default=TaskStatus.REQUESTED, sa_type=sa.String(16))
    # The token `sub` of the case worker who accepted the track.
    assignee: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class QueueItemPublic(SQLModel):
    case_id: uuid.UUID
    case_ref: str
    track: Track
    urgency: Urgency
    routed_at: datetime


class QueuePublic(SQLModel):
    data: list[QueueItemPublic]
    count: int


class CasePublic(SQLModel):
    """A case as its agency's office sees it: ids, codes and timestamps, no personal data."""

    case_id: uuid.UUID
    case_ref: str
    track: Track
    agency: Agency
    office: str
    urgency: Urgency
    routed_at: datetime
    status: TaskStatus
    assignee: str | None
    created_at: datetime
    updated_at: datetime


class TrackRouted(BaseModel):
    """The data of `secondline.referral.track.routed` (docs/events.md)."""

    # Unknown fields are ignored so that the producer can add some without breaking this consumer.
    model_config = ConfigDict(extra="ignore", frozen=True)

    track_id: str = PydanticField(min_length=1, max_length=64)
    track: Track
    agency: Agency
    office: str = PydanticField(min_length=1, max_length=100)
    urgency: Urgency
    routed_at: AwareDatetime
