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
from twoline_shared.pagination import PageCount
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
    """Where a step-up request stands: waiting for the NGO, released by a new consent, refused."""

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


EXAMPLE_DISCLOSURE_REQUEST: dict[str, Any] = {
    "request_id": "0b7e5a3c-2d4f-4e6a-8b9c-1d2e3f4a5b6c",
    "referral_id": "8c4f2e1a-7b6d-4c3e-9f8a-2b1c0d9e8f7a",
    "client_ref": "C-5A7B63FF22E4",
    "agency": "immigration_office",
    "track": "legal_stay",
    "categories": ["health"],
    "reason": "medical_assessment",
    "status": "pending",
    "created_at": "2026-01-20T08:45:00Z",
    "decided_at": None,
}


class DisclosureRequestPublic(SQLModel):
    """A step-up request as the NGO sees it: whose, from which agency, for what and why."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_DISCLOSURE_REQUEST]})  # type: ignore[assignment]

    request_id: str = Field(description="The request's id (given by the second line).")
    referral_id: uuid.UUID = Field(description="The referral whose track it is about.")
    client_ref: str = Field(description="The pseudonym of the client it is about.")
    agency: Agency = Field(description="The agency that asks.")
    track: Track = Field(description="The track it asks for.")
    categories: list[DataCategory] = Field(
        description="The data categories asked for, beyond those already disclosed. Only a new "
        "consent of the client covering all of them releases them (F0, F5)."
    )
    reason: str = Field(
        description="Why the case worker asks, a code of the second line's closed list, e.g. "
        "`identity_verification`, `medical_assessment`."
    )
    status: DisclosureRequestStatus = Field(description="Where the request stands.")
    created_at: UtcDatetime = Field(description="When the second line asked (UTC).")
    decided_at: UtcDatetime | None = Field(
        default=None, description="When it was released or refused (UTC); `null` while pending."
    )


class DisclosureRequestsPublic(SQLModel):
    """One page of the second line's requests for more categories."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={"examples": [{"data": [EXAMPLE_DISCLOSURE_REQUEST], "count": 1}]}
    )

    data: list[DisclosureRequestPublic] = Field(description="This page of requests, newest first.")
    count: PageCount


class DisclosureRefuse(SQLModel):
    """The NGO's refusal of a step-up request: the client does not consent to more."""

    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"reason": "client_declined"}]}
    )

    reason: RefuseReason | None = Field(
        default=None,
        description="Why, as a code; it stays with the bridge and says no more to the second "
        "line than `refused`. `null`: no reason given.",
    )


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


EXAMPLE_ACCESS: dict[str, Any] = {
    "track_id": "5d3c2b1a-0f9e-4d8c-b7a6-958473625140",
    "track": "legal_stay",
    "role": "icam_coach",
    "agency": "immigration_office",
    "office": "brussels",
    "categories": ["identity", "needs"],
    "read_at": "2026-01-21T13:10:00Z",
}


class AccessLogEntryPublic(SQLModel):
    """A read as the NGO shows it to the person: which track, who (role, agency, office), what
    (categories) and when."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_ACCESS]})  # type: ignore[assignment]

    track_id: uuid.UUID = Field(description="The track whose disclosure was read.")
    track: Track = Field(description="Which track it is.")
    role: str = Field(description="The reader's role, e.g. `icam_coach`; never a name (F9).")
    agency: Agency = Field(description="The reader's agency.")
    office: str = Field(description="The reader's office, e.g. `brussels`.")
    categories: list[DataCategory] = Field(description="The data categories shown in the read.")
    read_at: UtcDatetime = Field(description="When it was read (UTC).")


class AccessLogPublic(SQLModel):
    """One page of the reads of a referral's disclosures in the second line (F9)."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={"examples": [{"data": [EXAMPLE_ACCESS], "count": 1}]}
    )

    data: list[AccessLogEntryPublic] = Field(description="This page of reads, oldest first.")
    count: PageCount


# ---------------------------------------------------------------- referrals


class Referral(SQLModel, table=True):
    """One NGO request for one or both tracks; lives in the bridge, never crosses to zone B."""

    __tablename__ = "referral"

    referral_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org: str = Field(index=True, max_length=100)
    client_ref: str = Field(index=True, max_length=64)
    urgency: str = Field(max_length=16)
    # Zone A only: never in an event, an audit record or a log line.
    note: str | None = Field(default=None, max_length=4000)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
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


REFERRAL_NOTE = (
    "A note for your organisation only: it stays in the bridge and never reaches the second "
    "line, an event or an audit record."
)


class ReferralCreate(SQLModel):
    """What an NGO caseworker asks for: one or both tracks for one of their clients."""

    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "client_ref": "C-5A7B63FF22E4",
                    "tracks": ["legal_stay", "return"],
                    "urgency": "normal",
                    "note": "Both options explored in parallel, as the client asked.",
                }
            ]
        },
    )

    client_ref: str = Field(
        min_length=1,
        max_length=64,
        description="The pseudonym of the client of your organisation to refer.",
    )
    tracks: list[Track] = Field(
        min_length=1,
        max_length=len(Track),
        description="The tracks asked for, no repeats: `legal_stay` goes to an ICAM coach of the "
        "Immigration Office, `return` to a Fedasil return counsellor. Each needs an active "
        "`referral` consent for its agency (F0).",
    )
    urgency: Urgency = Field(
        default=Urgency.NORMAL, description="How soon: `urgent` cases head the office queue."
    )
    note: str | None = Field(default=None, max_length=4000, description=REFERRAL_NOTE)

    @field_validator("tracks")
    @classmethod
    def _no_duplicates(cls, value: list[Track]) -> list[Track]:
        if len(set(value)) != len(value):
            raise ValueError("tracks must not repeat a track")
        return value


class ReferralCancel(SQLModel):
    """The requester cancels every open track of a referral; the note stays in the bridge."""

    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={
            "examples": [{"reason": "client_request", "note": "The client moved abroad."}]
        },
    )

    reason: CancelReason = Field(description="Why the NGO cancels, a code the second line sees.")
    note: str | None = Field(default=None, max_length=4000, description=REFERRAL_NOTE)


class TrackProgressPublic(SQLModel):
    """One status the track took, in the order the bridge applied them."""

    status: TaskStatus = Field(description="The status the track took (FHIR Task status).")
    reason: StatusReason | None = Field(description="Why, for a status that needs a reason.")
    outcome: Outcome | None = Field(description="The outcome, when the status is `completed`.")
    at: UtcDatetime = Field(description="When the track took this status (UTC).")


EXAMPLE_TRACK: dict[str, Any] = {
    "track_id": "5d3c2b1a-0f9e-4d8c-b7a6-958473625140",
    "track": "legal_stay",
    "agency": "immigration_office",
    "office": "brussels",
    "status": "in-progress",
    "business_status": "assigned",
    "status_changed_at": "2026-01-22T09:00:00Z",
    "feedback": True,
    "status_reason": None,
    "outcome": None,
    "outcome_category": None,
    "progress": [
        {"status": "requested", "reason": None, "outcome": None, "at": "2026-01-15T11:20:00Z"},
        {"status": "accepted", "reason": None, "outcome": None, "at": "2026-01-16T08:30:00Z"},
        {"status": "in-progress", "reason": None, "outcome": None, "at": "2026-01-22T09:00:00Z"},
    ],
}
FEEDBACK_ONLY = " Shown only under a `feedback` consent (F6); `null` otherwise."


class TrackPublic(SQLModel):
    """A track as the NGO sees it; reason, outcome and progress only under `feedback` (F6)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_TRACK]})  # type: ignore[assignment]

    track_id: uuid.UUID = Field(description="The track's id, the only id the second line sees.")
    track: Track = Field(description="Which track: `legal_stay` or `return`.")
    agency: Agency = Field(description="The agency the track went to.")
    office: str = Field(description="The agency's office whose queue it was routed to.")
    status: TaskStatus = Field(
        description="The track's FHIR Task status: `requested` until the second line acts."
    )
    business_status: BusinessStatus = Field(
        description="Where it sits: `routed` to a queue, `assigned` to a case worker, `closed`."
    )
    status_changed_at: UtcDatetime = Field(description="When the status last changed (UTC).")
    # Whether the consent the track went under is active and grants `feedback`.
    feedback: bool = Field(
        description="Whether the consent the track went under is active and grants `feedback`: "
        "only then are the reason, outcome and progress shown."
    )
    status_reason: StatusReason | None = Field(
        default=None,
        description="Why the track was rejected, put on hold, failed or cancelled." + FEEDBACK_ONLY,
    )
    outcome: Outcome | None = Field(
        default=None, description="How the track ended for the person." + FEEDBACK_ONLY
    )
    outcome_category: OutcomeCategory | None = Field(
        default=None,
        description="The outcome's category (LVV evaluation): `permanent`, `semi_permanent` or "
        "`none`." + FEEDBACK_ONLY,
    )
    progress: list[TrackProgressPublic] | None = Field(
        default=None, description="Every status the track took, oldest first." + FEEDBACK_ONLY
    )


EXAMPLE_REFERRAL: dict[str, Any] = {
    "referral_id": "8c4f2e1a-7b6d-4c3e-9f8a-2b1c0d9e8f7a",
    "client_ref": "C-5A7B63FF22E4",
    "urgency": "normal",
    "note": "Both options explored in parallel, as the client asked.",
    "created_at": "2026-01-15T11:20:00Z",
    "cancel_reason": None,
    "cancel_note": None,
    "cancelled_at": None,
    "tracks": [EXAMPLE_TRACK],
}


class ReferralPublic(SQLModel):
    """A referral of your organisation and the status of its tracks."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REFERRAL]})  # type: ignore[assignment]

    referral_id: uuid.UUID = Field(description="The referral's id; it never leaves the bridge.")
    client_ref: str = Field(description="The pseudonym of the client referred.")
    urgency: Urgency = Field(description="How soon, as asked.")
    note: str | None = Field(description=REFERRAL_NOTE)
    created_at: UtcDatetime = Field(description="When the referral was made (UTC).")
    cancel_reason: CancelReason | None = Field(
        default=None, description="Why your organisation cancelled it, if it did."
    )
    cancel_note: str | None = Field(
        default=None, description="The note of the cancellation; your organisation's only."
    )
    cancelled_at: UtcDatetime | None = Field(
        default=None, description="When your organisation cancelled it (UTC), if it did."
    )
    tracks: list[TrackPublic] = Field(description="Its tracks, one per agency.")


class ReferralsPublic(SQLModel):
    """One page of a client's referrals."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={"examples": [{"data": [EXAMPLE_REFERRAL], "count": 1}]}
    )

    data: list[ReferralPublic] = Field(description="This page of referrals, newest first.")
    count: PageCount


# ---------------------------------------------------------------- consumed event payloads


class _Payload(SQLModel):
    # Producers may add fields later; the bridge reads only what it needs.
    model_config = ConfigDict(extra="ignore")  # type: ignore[assignment]


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


class ConsentFacts(_Payload):
    """One consent as the consent service states it (`svc.consent.active` / `.status`)."""

    consent_id: str = Field(min_length=1, max_length=64)
    client_ref: str = Field(min_length=1, max_length=64)
    org: str = Field(min_length=1, max_length=100)
    recipient: str = Field(min_length=1, max_length=32)
    purposes: list[str] = Field(default_factory=list, max_length=16)
    categories: list[str] = Field(default_factory=list, max_length=16)
    valid_from: UtcDatetime | None = None
    valid_until: UtcDatetime | None = None
    status: ConsentStatus
    withdrawn_at: UtcDatetime | None = None


class ConsentsAnswer(_Payload):
    """The consent service's answer, as of `checked_at` (its clock, taken before its read)."""

    checked_at: UtcDatetime
    client_known: bool | None = None
    consents: list[ConsentFacts] = Field(default_factory=list, max_length=50)


class DisclosedPackage(_Payload):
    """The reply data of `svc.intake.disclosure`: one object per asked category."""

    client_ref: str = Field(min_length=1, max_length=64)
    categories: dict[str, dict[str, Any]]
