"""Referral tables, API schemas and the payloads of the events the bridge consumes.

The bridge keeps projections of zone-A facts (which client belongs to which org, which consents
are active) and the referrals themselves. Only `track_id`s and codes ever cross to zone B (F5).
"""

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import sqlalchemy as sa
from pydantic import AfterValidator, ConfigDict, field_validator
from sqlalchemy import JSON
from sqlmodel import Field, Relationship, SQLModel

from twoline_shared.auth import Agency
from twoline_shared.codes import ConsentStatus, TaskStatus, Track, Urgency
from twoline_shared.db import UtcDateTime, utcnow


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values (SQLite drops the offset) are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class BusinessStatus(StrEnum):
    """Where a track sits meanwhile (FHIR Task.businessStatus)."""

    ROUTED = "routed"


class KnownClient(SQLModel, table=True):
    """A client registered in intake: only the pseudonym and the org that owns it."""

    __tablename__ = "known_client"

    client_ref: str = Field(primary_key=True, max_length=64)
    org: str = Field(index=True, max_length=100)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class ConsentView(SQLModel, table=True):
    """The bridge's view of one consent grant; `inactive` once withdrawn, never active again."""

    __tablename__ = "consent_view"

    consent_id: str = Field(primary_key=True, max_length=64)
    client_ref: str = Field(index=True, max_length=64)
    org: str = Field(index=True, max_length=100)
    recipient: str = Field(max_length=32)
    purposes: list[str] = Field(default_factory=list, sa_type=JSON)
    categories: list[str] = Field(default_factory=list, sa_type=JSON)
    valid_from: datetime | None = Field(default=None, sa_type=UtcDateTime)
    valid_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    status: str = Field(default=ConsentStatus.ACTIVE.value, max_length=16)
    withdrawn_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


# ---------------------------------------------------------------- referrals


class Referral(SQLModel, table=True):
    """One NGO request for one or both tracks; lives in the bridge, never crosses to zone B."""

    __tablename__ = "referral"
    __table_args__ = (
        sa.UniqueConstraint("org", "idempotency_key", name="uq_referral_org_idempotency_key"),
    )

    referral_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org: str = Field(index=True, max_length=100)
    client_ref: str = Field(index=True, max_length=64)
    urgency: str = Field(max_length=16)
    # Zone A only: never in an event, an audit record or a log line.
    note: str | None = Field(default=None, max_length=4000)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str | None = Field(default=None, max_length=64)

    tracks: list["ReferralTrack"] = Relationship(
        back_populates="referral",
        sa_relationship_kwargs={"lazy": "selectin", "order_by": "ReferralTrack.track"},
    )


class ReferralTrack(SQLModel, table=True):
    """One track task for one agency; its `track_id` is the only id zone B ever sees (F5)."""

    __tablename__ = "referral_track"
    __table_args__ = (
        sa.UniqueConstraint("referral_id", "agency", name="uq_referral_track_referral_agency"),
    )

    track_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    referral_id: uuid.UUID = Field(foreign_key="referral.referral_id", index=True)
    track: str = Field(max_length=16)
    agency: str = Field(max_length=32)
    office: str = Field(max_length=64)
    consent_id: str = Field(max_length=64)
    status: str = Field(default=TaskStatus.REQUESTED.value, max_length=16)
    business_status: str = Field(default=BusinessStatus.ROUTED.value, max_length=32)
    status_changed_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)

    referral: Referral | None = Relationship(back_populates="tracks")


class ReferralCreate(SQLModel):
    """What an NGO caseworker asks for: one or both tracks for one of their clients."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    client_ref: str = Field(min_length=1, max_length=64)
    tracks: list[Track] = Field(min_length=1, max_length=len(Track))
    urgency: Urgency = Urgency.NORMAL
    note: str | None = Field(default=None, max_length=4000)

    @field_validator("tracks")
    @classmethod
    def _no_duplicates(cls, value: list[Track]) -> list[Track]:
        if len(set(value)) != len(value):
            raise ValueError("tracks must not repeat a track")
        return value


class TrackPublic(SQLModel):
    track_id: uuid.UUID
    track: Track
    agency: Agency
    status: TaskStatus
    business_status: BusinessStatus
    office: str


class ReferralPublic(SQLModel):
    referral_id: uuid.UUID
    client_ref: str
    urgency: Urgency
    note: str | None
    created_at: UtcDatetime
    tracks: list[TrackPublic]


class ReferralsPublic(SQLModel):
    data: list[ReferralPublic]
    count: int


# ---------------------------------------------------------------- consumed event payloads


class _Payload(SQLModel):
    # Producers may add fields later; the bridge reads only what it needs.
    model_config = ConfigDict(extra="ignore")  # type: ignore[assignment]


class ClientRegistered(_Payload):
    client_ref: str = Field(min_length=1, max_length=64)
    org: str = Field(min_length=1, max_length=100)


class ConsentGranted(_Payload):
    consent_id: str = Field(min_length=1, max_length=64)
    client_ref: str = Field(min_length=1, max_length=64)
    org: str = Field(min_length=1, max_length=100)
    recipient: str = Field(min_length=1, max_length=32)
    purposes: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    valid_from: UtcDatetime | None = None
    valid_until: UtcDatetime | None = None


class ConsentWithdrawn(_Payload):
    consent_id: str = Field(min_length=1, max_length=64)
    client_ref: str = Field(min_length=1, max_length=64)
    org: str = Field(min_length=1, max_length=100)
    recipient: str = Field(min_length=1, max_length=32)
    withdrawn_at: UtcDatetime | None = None


class TrackAccepted(_Payload):
    track_id: uuid.UUID
    agency: str = Field(max_length=32)
    at: UtcDatetime | None = None
