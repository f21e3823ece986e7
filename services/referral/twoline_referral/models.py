"""Referral tables, API schemas and the payloads of the events the bridge consumes.

The bridge keeps projections of zone-A facts (which client belongs to which org, which consents
are active) and the referrals themselves. Only `track_id`s and codes ever cross to zone B (F5).
"""

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import AfterValidator, ConfigDict, field_validator, model_validator
from sqlalchemy import JSON
from sqlmodel import Field, Relationship, SQLModel

from twoline_shared.auth import Agency
from twoline_shared.codes import (
    ConsentStatus,
    DataCategory,
    Outcome,
    OutcomeCategory,
    StatusReason,
    TaskStatus,
    Track,
    Urgency,
)
from twoline_shared.db import UtcDateTime, utcnow
from twoline_shared.tasks import MAY_SET, NEEDS_REASON, Party


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values (SQLite drops the offset) are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class BusinessStatus(StrEnum):
    """Where a track sits meanwhile (FHIR Task.businessStatus)."""

    ROUTED = "routed"  # in an office queue, not yet taken (`requested`)
    ASSIGNED = "assigned"  # a case worker holds it (`accepted`, `in-progress`, `on-hold`)
    CLOSED = "closed"  # terminal (`completed`, `cancelled`, `rejected`, `failed`)


class CancelReason(StrEnum):
    """Why the requester cancels (docs/events.md); `consent_withdrawn` is the bridge's own (F4)."""

    REQUESTER_CANCELLED = StatusReason.REQUESTER_CANCELLED.value
    CLIENT_REQUEST = StatusReason.CLIENT_REQUEST.value
    DUPLICATE = StatusReason.DUPLICATE.value
    OTHER = StatusReason.OTHER.value


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


class DataKey(SQLModel, table=True):
    """The data key of one consent: every package routed under the consent is sealed with it.

    F4: withdrawing the consent destroys the key (`key_bytes` NULL, `destroyed_at` set), which
    makes every copy of those packages unreadable. `key_id` is random, never the consent id:
    zone B sees the key id and must not learn consent ids. The key never leaves the bridge except
    in the reply of `svc.referral.disclosure-key`, and never in an event, audit record or log.
    """

    __tablename__ = "referral_data_key"

    key_id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=64)
    consent_id: str = Field(unique=True, max_length=64)
    # repr=False: a log line or traceback that shows the row never shows the key.
    key_bytes: bytes | None = Field(default=None, sa_type=sa.LargeBinary, repr=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    destroyed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


# ---------------------------------------------------------------- step-up requests (F5)


class DisclosureRequestStatus(StrEnum):
    PENDING = "pending"
    RELEASED = "released"  # a new consent covered every requested category
    REFUSED = "refused"  # the NGO refused


class RefuseReason(StrEnum):
    """Why the NGO refuses a step-up request (a code: it travels nowhere, and says no more)."""

    CLIENT_DECLINED = "client_declined"
    CLIENT_UNREACHABLE = "client_unreachable"
    NOT_NECESSARY = "not_necessary"
    OTHER = "other"


class DisclosureRequest(SQLModel, table=True):
    """A zone-B request for more categories of one track, waiting for the NGO (F5: step-up).

    Only a new consent covering every requested category releases anything (F0); the NGO may
    refuse. Codes and ids only.
    """

    __tablename__ = "referral_disclosure_request"
    __table_args__ = (sa.Index("ix_referral_disclosure_request_org_status", "org", "status"),)

    # Zone B's id for the request (a UUID as text).
    request_id: str = Field(primary_key=True, max_length=64)
    track_id: uuid.UUID = Field(foreign_key="referral_track.track_id", index=True)
    referral_id: uuid.UUID = Field(foreign_key="referral.referral_id")
    org: str = Field(max_length=100)
    client_ref: str = Field(max_length=64)
    agency: str = Field(max_length=32)
    track: str = Field(max_length=16)
    categories: list[str] = Field(default_factory=list, sa_type=JSON)
    reason: str = Field(max_length=40)
    status: str = Field(default=DisclosureRequestStatus.PENDING.value, max_length=16)
    # The consent that released it; the NGO's refusal code.
    consent_id: str | None = Field(default=None, max_length=64)
    refuse_reason: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class DisclosureRequestPublic(SQLModel):
    """A step-up request as the NGO sees it: whose, from which agency, for what and why."""

    request_id: str
    referral_id: uuid.UUID
    client_ref: str
    agency: Agency
    track: Track
    categories: list[DataCategory]
    reason: str
    status: DisclosureRequestStatus
    created_at: UtcDatetime
    decided_at: UtcDatetime | None = None


class DisclosureRequestsPublic(SQLModel):
    data: list[DisclosureRequestPublic]
    count: int


class DisclosureRefuse(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    reason: RefuseReason | None = None


class AccessLogEntry(SQLModel, table=True):
    """One read of a track's disclosure in zone B (F9: the person can know who looked).

    Who is a role, an agency and an office, never a name; what is the categories shown.
    """

    __tablename__ = "referral_access_log"
    __table_args__ = (sa.Index("ix_referral_access_log_referral_at", "referral_id", "read_at"),)

    # Zone B's id for the read (a UUID as text): a redelivered event is recorded once.
    read_id: str = Field(primary_key=True, max_length=64)
    track_id: uuid.UUID = Field(foreign_key="referral_track.track_id")
    referral_id: uuid.UUID = Field(foreign_key="referral.referral_id")
    track: str = Field(max_length=16)
    role: str = Field(max_length=32)
    agency: str = Field(max_length=32)
    office: str = Field(max_length=100)
    categories: list[str] = Field(default_factory=list, sa_type=JSON)
    read_at: datetime = Field(sa_type=UtcDateTime)


class AccessLogEntryPublic(SQLModel):
    """A read as the NGO shows it to the person: which track, who (role, agency, office), what
    (categories) and when."""

    track_id: uuid.UUID
    track: Track
    role: str
    agency: Agency
    office: str
    categories: list[DataCategory]
    read_at: UtcDatetime


class AccessLogPublic(SQLModel):
    data: list[AccessLogEntryPublic]
    count: int


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
    # The requester's cancellation; the note is zone A only, like `note`.
    cancel_reason: str | None = Field(default=None, max_length=32)
    cancel_note: str | None = Field(default=None, max_length=4000)
    cancelled_by: str | None = Field(default=None, max_length=200)
    cancelled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)

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
    # Indexed: a withdrawal finds every track that went under its consent (F4).
    consent_id: str = Field(max_length=64, index=True)
    status: str = Field(default=TaskStatus.REQUESTED.value, max_length=16)
    business_status: str = Field(default=BusinessStatus.ROUTED.value, max_length=32)
    # Codes only (StatusReason, Outcome): a case worker's free text stays in zone B (F6).
    status_reason: str | None = Field(default=None, max_length=32)
    outcome: str | None = Field(default=None, max_length=32)
    status_changed_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)

    referral: Referral | None = Relationship(back_populates="tracks")
    history: list["TrackStatusEntry"] = Relationship(
        back_populates="track_row",
        sa_relationship_kwargs={"lazy": "selectin", "order_by": "TrackStatusEntry.seq"},
    )


class TrackStatusEntry(SQLModel, table=True):
    """One status a track took, in the order the bridge applied them (the NGO's `progress`)."""

    __tablename__ = "referral_track_status"

    seq: int | None = Field(default=None, primary_key=True)
    track_id: uuid.UUID = Field(foreign_key="referral_track.track_id", index=True)
    status: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=32)
    outcome: str | None = Field(default=None, max_length=32)
    at: datetime = Field(sa_type=UtcDateTime)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)

    track_row: ReferralTrack | None = Relationship(back_populates="history")


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


class ReferralCancel(SQLModel):
    """The requester cancels every open track of a referral; the note stays in the bridge."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    reason: CancelReason
    note: str | None = Field(default=None, max_length=4000)


class TrackProgressPublic(SQLModel):
    status: TaskStatus
    reason: StatusReason | None
    outcome: Outcome | None
    at: UtcDatetime


class TrackPublic(SQLModel):
    """A track as the NGO sees it; reason, outcome and progress only under `feedback` (F6)."""

    track_id: uuid.UUID
    track: Track
    agency: Agency
    office: str
    status: TaskStatus
    business_status: BusinessStatus
    status_changed_at: UtcDatetime
    # Whether the consent the track went under is active and grants `feedback`.
    feedback: bool
    status_reason: StatusReason | None = None
    outcome: Outcome | None = None
    outcome_category: OutcomeCategory | None = None
    progress: list[TrackProgressPublic] | None = None


class ReferralPublic(SQLModel):
    referral_id: uuid.UUID
    client_ref: str
    urgency: Urgency
    note: str | None
    created_at: UtcDatetime
    cancel_reason: CancelReason | None = None
    cancel_note: str | None = None
    cancelled_at: UtcDatetime | None = None
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


class TrackStatusChanged(_Payload):
    """The track status payload of every `secondline.case.track.*` event (docs/events.md)."""

    track_id: uuid.UUID
    case_id: str | None = Field(default=None, max_length=64)
    track: Track | None = None
    agency: str = Field(min_length=1, max_length=32)
    office: str | None = Field(default=None, max_length=100)
    previous_status: TaskStatus | None = None
    status: TaskStatus
    reason: StatusReason | None = None
    outcome: Outcome | None = None
    at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _codes_fit_the_status(self) -> "TrackStatusChanged":
        if self.status not in MAY_SET[Party.PERFORMER]:
            raise ValueError(f"the performer does not set {self.status.value!r}")
        if self.status in NEEDS_REASON and self.reason is None:
            raise ValueError(f"{self.status.value!r} needs a reason")
        if (self.outcome is not None) != (self.status == TaskStatus.COMPLETED):
            raise ValueError("an outcome comes with `completed`, and only with it")
        return self


class DisclosureRead(_Payload):
    """The data of `secondline.case.disclosure.read` (docs/events.md): ids and codes only."""

    read_id: str = Field(min_length=1, max_length=64)
    track_id: uuid.UUID
    role: str = Field(min_length=1, max_length=32)
    agency: str = Field(min_length=1, max_length=32)
    office: str = Field(min_length=1, max_length=100)
    categories: list[DataCategory] = Field(min_length=1, max_length=len(DataCategory))
    at: UtcDatetime

    @field_validator("role")
    @classmethod
    def _a_code(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z_]*", value):
            raise ValueError("role must be a code")
        return value


class DisclosureRequested(_Payload):
    """The data of `secondline.case.disclosure.requested` (docs/events.md): codes only."""

    request_id: str = Field(min_length=1, max_length=64)
    track_id: uuid.UUID
    categories: list[DataCategory] = Field(min_length=1, max_length=len(DataCategory))
    # A code of zone B's closed list; the bridge passes it on to the NGO as it is.
    reason: str = Field(min_length=1, max_length=40)
    at: UtcDatetime | None = None

    @field_validator("reason")
    @classmethod
    def _a_code(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
            raise ValueError("reason must be a code")
        return value

    @field_validator("categories")
    @classmethod
    def _no_duplicates(cls, value: list[DataCategory]) -> list[DataCategory]:
        if len(set(value)) != len(value):
            raise ValueError("categories must not repeat a category")
        return value


class DisclosureKeyRequest(SQLModel):
    """The request of `svc.referral.disclosure-key`: the key a routed track's package is sealed
    under, asked for by zone B with the ids it holds."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    track_id: uuid.UUID
    key_id: str = Field(min_length=1, max_length=64)


class JointReviewRequest(SQLModel):
    """The request of `svc.referral.joint-review`: which tracks of the other agency the case of
    this track may be reviewed with (F5, F6)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    track_id: uuid.UUID


class DisclosedPackage(_Payload):
    """The reply data of `svc.intake.disclosure`: one object per asked category."""

    client_ref: str = Field(min_length=1, max_length=64)
    categories: dict[str, dict[str, Any]]
