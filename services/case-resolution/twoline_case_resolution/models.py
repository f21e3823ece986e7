"""Case-resolution tables and API schemas (zone B): one case per referral and agency.

A case knows its `track_id` (unique per referral *and* agency) and its own `case_ref` pseudonym,
never the NGO's `client_ref` or the referral id, so ICAM and Fedasil share no identifier (F5).
"""

import datetime as dt
import secrets
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    StrictBool,
    StringConstraints,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from twoline_case_resolution.domain import (
    Assessment,
    ClientDecision,
    DisclosureRequestReason,
    DisclosureRequestStatus,
    LegalStayOption,
    ReturnStep,
)
from twoline_shared.auth import Agency
from twoline_shared.codes import (
    OUTCOME_CATEGORY,
    DataCategory,
    Outcome,
    OutcomeCategory,
    Purpose,
    StatusReason,
    TaskStatus,
    Track,
    Urgency,
    is_language,
)
from twoline_shared.crypto import Sealed, is_well_formed
from twoline_shared.db import UtcDateTime, utcnow

_REF_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# A free-text note a case worker adds: zone B only, never in an event, audit record or log (F8).
NOTE_MAX = 2000
Note = Annotated[str, StringConstraints(min_length=1, max_length=NOTE_MAX)]
TopicCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]

# SQL NULL for None (not the JSON `null`), so an absent value leaves nothing in the row.
NullableJSON = sa.JSON(none_as_null=True)


def new_case_ref() -> str:
    """A fresh random pseudonym (40 bits), derived from nothing zone A knows (F5)."""
    return "K-" + "".join(secrets.choice(_REF_ALPHABET) for _ in range(8))


def _not_in_future(value: dt.date) -> dt.date:
    # A day of slack: a case worker east of UTC is already on tomorrow's date.
    if value > dt.date.today() + dt.timedelta(days=1):
        raise ValueError("the date cannot be in the future")
    return value


class DisclosureStatus(StrEnum):
    DISCLOSED = "disclosed"
    WITHDRAWN = "withdrawn"  # F4: the package is purged (and its key destroyed), metadata stays
    # Shown only, never stored: the bridge did not hand out the key, or the package did not
    # open as the disclosure it claims to be; the case itself is still shown.
    UNAVAILABLE = "unavailable"


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
    # The purposes of the consent the track went under.
    purposes: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    # What was disclosed (codes; kept after a withdrawal) and the package itself, only as the
    # bridge sealed it (F4): the key stays with the bridge, so nothing here reads in plaintext.
    # All three NULL once withdrawn, or for a track routed without a package.
    disclosed_categories: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    disclosure_key_id: str | None = Field(default=None, max_length=64)
    disclosure_nonce: str | None = Field(default=None, max_length=32)
    disclosure_ciphertext: str | None = Field(default=None, sa_type=sa.Text)
    disclosure_status: DisclosureStatus = Field(
        default=DisclosureStatus.DISCLOSED, sa_type=sa.String(16)
    )
    status_reason: StatusReason | None = Field(default=None, sa_type=sa.String(32))
    outcome: Outcome | None = Field(default=None, sa_type=sa.String(32))
    # The note of the latest status change: free text, zone B only.
    status_note: str | None = Field(default=None, max_length=NOTE_MAX)
    closed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    return_step: ReturnStep | None = Field(default=None, sa_type=sa.String(32))
    # The W3C traceparent of the routed event's consume: a case worker's later status changes
    # continue the referral's trace from it. Random ids only, derived from nothing personal (F8).
    trace_parent: str | None = Field(default=None, max_length=64)

    def sealed_disclosure(self) -> tuple[str, Sealed] | None:
        """The key id and the sealed package, if the case holds one."""
        if self.disclosure_key_id and self.disclosure_nonce and self.disclosure_ciphertext:
            return self.disclosure_key_id, Sealed(
                nonce=self.disclosure_nonce, ciphertext=self.disclosure_ciphertext
            )
        return None


class CasePendingCancel(SQLModel, table=True):
    """A cancel of a track no case holds yet: applied when the track is routed (F4).

    With several bridge replicas relaying, the cancel of a track can arrive before the track
    itself. One row per reason, so that a withdrawal after a plain cancel is kept as well.
    """

    __tablename__ = "case_pending_cancels"

    track_id: str = Field(primary_key=True, max_length=64)
    reason: StatusReason = Field(primary_key=True, sa_type=sa.String(32))
    agency: Agency = Field(sa_type=sa.String(32))
    at: datetime = Field(sa_type=UtcDateTime)


class CaseDisclosureRequest(SQLModel, table=True):
    """A case worker's request for more categories (step-up, F5): codes only, sent to the NGO
    through the bridge; only a new consent releases them."""

    __tablename__ = "case_disclosure_requests"

    request_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="cases.case_id", index=True)
    categories: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    reason: DisclosureRequestReason = Field(sa_type=sa.String(32))
    status: DisclosureRequestStatus = Field(
        default=DisclosureRequestStatus.PENDING, sa_type=sa.String(16)
    )
    requested_by: str = Field(max_length=200)
    requested_at: datetime = Field(sa_type=UtcDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


# ---------------------------------------------------------------- track work tables


class CaseOption(SQLModel, table=True):
    """The current assessment of one legal-stay option of a case."""

    __tablename__ = "case_options"

    case_id: uuid.UUID = Field(foreign_key="cases.case_id", primary_key=True)
    option: LegalStayOption = Field(primary_key=True, sa_type=sa.String(32))
    assessment: Assessment = Field(sa_type=sa.String(16))
    note: str | None = Field(default=None, max_length=NOTE_MAX)
    assessed_by: str = Field(max_length=200)
    assessed_at: datetime = Field(sa_type=UtcDateTime)


class CaseOptionAssessment(SQLModel, table=True):
    """Every assessment ever made of an option: who (token `sub`) and when."""

    __tablename__ = "case_option_assessments"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="cases.case_id", index=True)
    option: LegalStayOption = Field(sa_type=sa.String(32))
    assessment: Assessment = Field(sa_type=sa.String(16))
    note: str | None = Field(default=None, max_length=NOTE_MAX)
    assessed_by: str = Field(max_length=200)
    assessed_at: datetime = Field(sa_type=UtcDateTime)


class TravelDocuments(StrEnum):
    NOT_STARTED = "not_started"
    REQUESTED = "requested"
    OBTAINED = "obtained"


class FitToFly(StrEnum):
    UNKNOWN = "unknown"
    YES = "yes"
    NO = "no"


class ReintegrationPlan(StrEnum):
    NONE = "none"
    DRAFTED = "drafted"
    AGREED = "agreed"


class ReintegrationPartner(StrEnum):
    IOM = "iom"
    CARITAS = "caritas"
    OTHER = "other"


class Preparation(BaseModel):
    """Where the preparation of a departure stands: codes only."""

    model_config = ConfigDict(extra="forbid")

    travel_documents: TravelDocuments = TravelDocuments.NOT_STARTED
    fit_to_fly: FitToFly = FitToFly.UNKNOWN
    reintegration_plan: ReintegrationPlan = ReintegrationPlan.NONE
    partner: ReintegrationPartner | None = None


class CaseReturnStep(SQLModel, table=True):
    """One move of a return case to a step; the case keeps the current step."""

    __tablename__ = "case_return_steps"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="cases.case_id", index=True)
    step: ReturnStep = Field(sa_type=sa.String(32))
    previous_step: ReturnStep | None = Field(default=None, sa_type=sa.String(32))
    preparation: dict[str, Any] | None = Field(default=None, sa_type=NullableJSON)
    # Set when a client decision made the move.
    decision_id: uuid.UUID | None = Field(default=None, foreign_key="case_decisions.id")
    note: str | None = Field(default=None, max_length=NOTE_MAX)
    recorded_by: str = Field(max_length=200)
    recorded_at: datetime = Field(sa_type=UtcDateTime)


class SessionMode(StrEnum):
    IN_PERSON = "in_person"
    PHONE = "phone"
    VIDEO = "video"


class CaseSession(SQLModel, table=True):
    """A counselling session with the person."""

    __tablename__ = "case_sessions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="cases.case_id", index=True)
    date: dt.date
    mode: SessionMode = Field(sa_type=sa.String(16))
    language: str | None = Field(default=None, max_length=2)
    interpreter: bool
    topics: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    note: str | None = Field(default=None, max_length=NOTE_MAX)
    recorded_by: str = Field(max_length=200)
    recorded_at: datetime = Field(sa_type=UtcDateTime)


class CaseDecision(SQLModel, table=True):
    """A decision of the person, recorded as theirs: the person keeps ownership of it."""

    __tablename__ = "case_decisions"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="cases.case_id", index=True)
    decision: ClientDecision = Field(sa_type=sa.String(32))
    option: LegalStayOption | None = Field(default=None, sa_type=sa.String(32))
    date: dt.date
    decided_by: str = Field(default="client", max_length=16)
    note: str | None = Field(default=None, max_length=NOTE_MAX)
    recorded_by: str = Field(max_length=200)
    recorded_at: datetime = Field(sa_type=UtcDateTime)


# ---------------------------------------------------------------- request bodies


class RejectTrack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: StatusReason
    note: Note | None = None


class ChangeStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal[
        TaskStatus.IN_PROGRESS, TaskStatus.ON_HOLD, TaskStatus.FAILED, TaskStatus.CANCELLED
    ]
    reason: StatusReason | None = None
    note: Note | None = None


class CompleteTrack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Outcome
    note: Note | None = None


class AssessOption(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assessment: Assessment
    note: Note | None = None


class MoveReturnStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: ReturnStep
    preparation: Preparation | None = None
    note: Note | None = None


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date: dt.date
    mode: SessionMode
    language: str | None = None
    interpreter: StrictBool
    topics: list[TopicCode] = PydanticField(default_factory=list, max_length=20)
    note: Note | None = None

    @field_validator("language")
    @classmethod
    def _iso_language(cls, value: str | None) -> str | None:
        if value is not None and not is_language(value):
            raise ValueError("language must be an ISO 639-1 code, e.g. 'fr'")
        return value

    @field_validator("date")
    @classmethod
    def _date(cls, value: dt.date) -> dt.date:
        return _not_in_future(value)


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: ClientDecision
    option: LegalStayOption | None = None
    date: dt.date
    note: Note | None = None

    @field_validator("date")
    @classmethod
    def _date(cls, value: dt.date) -> dt.date:
        return _not_in_future(value)


class DisclosureRequestCreate(BaseModel):
    """More categories for a case (step-up, F5): codes only, the reason from a closed list."""

    model_config = ConfigDict(extra="forbid")

    categories: list[DataCategory] = PydanticField(min_length=1, max_length=len(DataCategory))
    reason: DisclosureRequestReason

    @field_validator("categories")
    @classmethod
    def _no_duplicates(cls, value: list[DataCategory]) -> list[DataCategory]:
        if len(set(value)) != len(value):
            raise ValueError("categories must not repeat a category")
        return value


# ---------------------------------------------------------------- responses


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
    """A case as its agency's office sees it after a change: codes and timestamps, no package."""

    case_id: uuid.UUID
    case_ref: str
    track: Track
    agency: Agency
    office: str
    urgency: Urgency
    routed_at: datetime
    status: TaskStatus
    status_reason: StatusReason | None
    status_note: str | None
    outcome: Outcome | None
    closed_at: datetime | None
    assignee: str | None
    purposes: list[str]
    disclosed_categories: list[str]
    disclosure_status: DisclosureStatus
    return_step: ReturnStep | None
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def outcome_category(self) -> OutcomeCategory | None:
        return OUTCOME_CATEGORY[self.outcome] if self.outcome else None


class OptionPublic(SQLModel):
    option: LegalStayOption
    assessment: Assessment
    note: str | None
    assessed_by: str
    assessed_at: datetime


class ReturnStepPublic(SQLModel):
    step: ReturnStep
    previous_step: ReturnStep | None
    preparation: Preparation | None
    decision_id: uuid.UUID | None
    note: str | None
    recorded_by: str
    recorded_at: datetime


class SessionPublic(SQLModel):
    id: uuid.UUID
    date: dt.date
    mode: SessionMode
    language: str | None
    interpreter: bool
    topics: list[str]
    note: str | None
    recorded_by: str
    recorded_at: datetime


class DecisionPublic(SQLModel):
    id: uuid.UUID
    decision: ClientDecision
    option: LegalStayOption | None
    date: dt.date
    decided_by: str
    note: str | None
    recorded_by: str
    recorded_at: datetime
    # Where the decision moved a return case (null: no move).
    return_step: ReturnStep | None = None


class DisclosureRequestPublic(SQLModel):
    request_id: uuid.UUID
    categories: list[DataCategory]
    reason: DisclosureRequestReason
    status: DisclosureRequestStatus
    requested_at: datetime
    decided_at: datetime | None


class JointReviewStatus(StrEnum):
    # The person consented to joint review for both agencies: the other track is shown.
    LINKED = "linked"
    # No `joint_review` consent on one side or the other (or no other track): nothing is shown.
    NOT_CONSENTED = "not_consented"
    # The bridge did not answer this read: nothing is shown.
    UNAVAILABLE = "unavailable"


class LinkedTrackPublic(BaseModel):
    """The other agency's track as joint review shows it: its status and outcome, nothing of
    its case (no case id or reference, no notes, no disclosure, no assignee)."""

    model_config = ConfigDict(from_attributes=True)

    agency: Agency
    track: Track
    status: TaskStatus
    outcome: Outcome | None
    closed_at: datetime | None
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def outcome_category(self) -> OutcomeCategory | None:
        return OUTCOME_CATEGORY[self.outcome] if self.outcome else None


class JointReviewPublic(BaseModel):
    status: JointReviewStatus
    tracks: list[LinkedTrackPublic] = PydanticField(default_factory=list)


class CaseDetailPublic(CasePublic):
    """A case with its disclosure and track work; reading it is an audited read (F9)."""

    # Exactly the routed package, opened in memory with the key the bridge hands out for this
    # read, one object per disclosed category; null once withdrawn (F4) or while the bridge
    # does not answer (`disclosure_status` says which).
    disclosure: dict[DataCategory, dict[str, Any]] | None
    # Legal stay only (null on a return case): the current assessment per option.
    options: list[OptionPublic] | None
    # Return only (null on a legal-stay case): every move, oldest first.
    return_steps: list[ReturnStepPublic] | None
    sessions: list[SessionPublic]
    decisions: list[DecisionPublic]
    # Step-up requests (F5), oldest first: pending, released (by a new consent) or refused.
    disclosure_requests: list[DisclosureRequestPublic]
    # The other agency's track for the same person, only under `joint_review` from both sides.
    joint_review: JointReviewPublic


# ---------------------------------------------------------------- consumed events


class Disclosure(BaseModel):
    """The disclosure of a routed track: its categories and the package, sealed by the bridge.

    A plaintext `package` breaks the contract (extra fields are forbidden): zone B never stores
    one (F4). The shapes are checked here; that the opened package matches its categories
    exactly is `domain.check_disclosure`, each time it is opened.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    categories: list[str] = PydanticField(max_length=len(DataCategory))
    key_id: str = PydanticField(min_length=1, max_length=64)
    nonce: str = PydanticField(min_length=1, max_length=32)
    # Bounded by the broker's max_payload (1 MB).
    ciphertext: str = PydanticField(min_length=1, max_length=1_500_000)

    @model_validator(mode="after")
    def _sealed(self) -> "Disclosure":
        if not is_well_formed(Sealed(nonce=self.nonce, ciphertext=self.ciphertext)):
            raise ValueError("the package is not sealed (a 96-bit nonce and a GCM ciphertext)")
        return self


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
    purposes: list[Purpose] = PydanticField(default_factory=list)
    disclosure: Disclosure | None = None


class TrackCancelled(BaseModel):
    """The data of `secondline.referral.track.cancelled` (docs/events.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    track_id: str = PydanticField(min_length=1, max_length=64)
    agency: Agency
    status: Literal[TaskStatus.CANCELLED]
    reason: StatusReason
    at: AwareDatetime


class DisclosureRefused(BaseModel):
    """The data of `secondline.referral.disclosure.refused` (docs/events.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    request_id: uuid.UUID
    track_id: str = PydanticField(min_length=1, max_length=64)
    at: AwareDatetime


class DisclosureReleased(BaseModel):
    """The data of `secondline.referral.disclosure.released`: the updated package, sealed under
    the new consent's key (docs/events.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    request_id: uuid.UUID
    track_id: str = PydanticField(min_length=1, max_length=64)
    disclosure: Disclosure
    at: AwareDatetime
