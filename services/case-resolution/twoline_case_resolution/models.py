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
from twoline_shared.fields import IsoDate
from twoline_shared.pagination import PageCount

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
    """What became of the case's disclosure: shown, withdrawn (F4), or not to be had now."""

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
    """Where the travel documents stand."""

    NOT_STARTED = "not_started"
    REQUESTED = "requested"
    OBTAINED = "obtained"


class FitToFly(StrEnum):
    """Whether the person is fit to fly, medically."""

    UNKNOWN = "unknown"
    YES = "yes"
    NO = "no"


class ReintegrationPlan(StrEnum):
    """Where the reintegration plan stands."""

    NONE = "none"
    DRAFTED = "drafted"
    AGREED = "agreed"


class ReintegrationPartner(StrEnum):
    """Who supports the reintegration in the country of return."""

    IOM = "iom"
    CARITAS = "caritas"
    OTHER = "other"


class Preparation(BaseModel):
    """Where the preparation of a departure stands: codes only."""

    model_config = ConfigDict(extra="forbid")

    travel_documents: TravelDocuments = PydanticField(
        default=TravelDocuments.NOT_STARTED,
        description="Where the travel documents stand: `not_started`, `requested`, `obtained`.",
    )
    fit_to_fly: FitToFly = PydanticField(
        default=FitToFly.UNKNOWN, description="Whether the person is fit to fly."
    )
    reintegration_plan: ReintegrationPlan = PydanticField(
        default=ReintegrationPlan.NONE,
        description="Where the reintegration plan stands: `none`, `drafted`, `agreed`.",
    )
    partner: ReintegrationPartner | None = PydanticField(
        default=None,
        description="The reintegration partner, e.g. IOM or Caritas; `null`: none yet.",
    )


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
    """How a counselling session took place."""

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

# What every note is: free text of the case worker's, kept in zone B only (F8).
NOTE = (
    f"A note of the case worker's, at most {NOTE_MAX} characters. It stays in this service: "
    "never in an event, an audit record or a log line, and never shown to the NGO."
)


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class RejectTrack(BaseModel):
    """The performer rejects a requested track."""

    model_config = _examples({"reason": "wrong_office", "note": "Lives in Liège now."})

    reason: StatusReason = PydanticField(
        description="Why, as a code; the NGO sees it under a `feedback` consent."
    )
    note: Note | None = PydanticField(default=None, description=NOTE)


class ChangeStatus(BaseModel):
    """The performer moves an accepted track on."""

    model_config = _examples(
        {"status": "in-progress"},
        {"status": "on-hold", "reason": "awaiting_documents", "note": "Passport requested."},
    )

    status: Literal[
        TaskStatus.IN_PROGRESS, TaskStatus.ON_HOLD, TaskStatus.FAILED, TaskStatus.CANCELLED
    ] = PydanticField(
        description="The new status; `on-hold`, `failed` and `cancelled` need a reason."
    )
    reason: StatusReason | None = PydanticField(
        default=None,
        description="Why, as a code: needed for `on-hold`, `failed` and `cancelled`, not taken "
        "for `in-progress`.",
    )
    note: Note | None = PydanticField(default=None, description=NOTE)


class CompleteTrack(BaseModel):
    """The performer completes the track with its outcome."""

    model_config = _examples({"outcome": "legal_stay", "note": "9bis granted."})

    outcome: Outcome = PydanticField(
        description="How the track ended for the person (LVV evaluation categories); "
        "`consent_withdrawn` is set only by a withdrawal through the bridge."
    )
    note: Note | None = PydanticField(default=None, description=NOTE)


class AssessOption(BaseModel):
    """The coach's assessment of one legal-stay option."""

    model_config = _examples({"assessment": "viable", "note": "Long stay, strong local ties."})

    assessment: Assessment = PydanticField(
        description="Where the option stands: `viable`, `not_viable`, `needs_info`, `applied`, "
        "`granted` or `refused`."
    )
    note: Note | None = PydanticField(default=None, description=NOTE)


class MoveReturnStep(BaseModel):
    """The counsellor moves a return track to its next step."""

    model_config = _examples(
        {"step": "considering"},
        {
            "step": "preparing",
            "preparation": {
                "travel_documents": "requested",
                "fit_to_fly": "yes",
                "reintegration_plan": "drafted",
                "partner": "iom",
            },
        },
    )

    step: ReturnStep = PydanticField(
        description="The next step: `informing` → `considering` → `registered` → `preparing` → "
        "`departed` → `follow_up`, or `declined_by_client` until departure."
    )
    preparation: Preparation | None = PydanticField(
        default=None, description="Where the preparation stands; only with `preparing`."
    )
    note: Note | None = PydanticField(default=None, description=NOTE)


SESSION_LANGUAGE = "The language of the session, an ISO 639-1 code such as `fr`."
SESSION_TOPICS = "What was covered, as codes (lowercase letters, digits and `_`); at most 20."


class SessionCreate(BaseModel):
    """A counselling session with the person."""

    model_config = _examples(
        {
            "date": "2026-01-22",
            "mode": "in_person",
            "language": "fr",
            "interpreter": False,
            "topics": ["options", "documents"],
            "note": "Explained 9bis and what it needs.",
        }
    )

    date: IsoDate = PydanticField(description="The day of the session; not in the future.")
    mode: SessionMode = PydanticField(description="How it took place.")
    language: str | None = PydanticField(default=None, description=SESSION_LANGUAGE)
    interpreter: StrictBool = PydanticField(description="Whether an interpreter took part.")
    topics: list[TopicCode] = PydanticField(
        default_factory=list, max_length=20, description=SESSION_TOPICS
    )
    note: Note | None = PydanticField(default=None, description=NOTE)

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


DECISION = (
    "The person's own decision: `pursue_legal_stay`, `decline_legal_stay`, `accept_return`, "
    "`decline_return` or `undecided`. On a return track, declining moves it to "
    "`declined_by_client` and accepting registers a person still informing or considering."
)
DECISION_OPTION = "The legal-stay option the decision is about; only with a legal-stay decision."


class DecisionCreate(BaseModel):
    """A decision of the person, recorded as theirs."""

    model_config = _examples(
        {"decision": "pursue_legal_stay", "option": "9bis", "date": "2026-01-29"}
    )

    decision: ClientDecision = PydanticField(description=DECISION)
    option: LegalStayOption | None = PydanticField(default=None, description=DECISION_OPTION)
    date: IsoDate = PydanticField(description="The day the person decided; not in the future.")
    note: Note | None = PydanticField(default=None, description=NOTE)

    @field_validator("date")
    @classmethod
    def _date(cls, value: dt.date) -> dt.date:
        return _not_in_future(value)


class DisclosureRequestCreate(BaseModel):
    """More categories for a case (step-up, F5): codes only, the reason from a closed list."""

    model_config = _examples({"categories": ["health"], "reason": "medical_assessment"})

    categories: list[DataCategory] = PydanticField(
        min_length=1,
        max_length=len(DataCategory),
        description="The categories asked for: none disclosed already, no repeats.",
    )
    reason: DisclosureRequestReason = PydanticField(
        description="Why, a code the NGO sees (never free text, F8)."
    )

    @field_validator("categories")
    @classmethod
    def _no_duplicates(cls, value: list[DataCategory]) -> list[DataCategory]:
        if len(set(value)) != len(value):
            raise ValueError("categories must not repeat a category")
        return value


# ---------------------------------------------------------------- responses

CASE_ID = "The case's id: one case per referral and agency, shared with no other agency (F5)."
CASE_REF = "The case's own pseudonym, derived from nothing the NGO knows (F5)."
OUTCOME_CATEGORY_ABOUT = (
    "The outcome's category (LVV evaluation): `permanent` (legal stay, return, onward "
    "migration), `semi_permanent` (a protection procedure) or `none`; `null` without an outcome."
)
EXAMPLE_QUEUE_ITEM: dict[str, Any] = {
    "case_id": "1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b",
    "case_ref": "K-7QH3M9XA",
    "track": "legal_stay",
    "urgency": "urgent",
    "routed_at": "2026-01-15T11:20:01Z",
}


class QueueItemPublic(SQLModel):
    """A requested case in your office's queue."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_QUEUE_ITEM]})  # type: ignore[assignment]

    case_id: uuid.UUID = Field(description=CASE_ID)
    case_ref: str = Field(description=CASE_REF)
    track: Track = Field(description="The case's track: `legal_stay` or `return`.")
    urgency: Urgency = Field(description="How soon, as the NGO asked.")
    routed_at: datetime = Field(description="When the bridge routed the track to the office (UTC).")


class QueuePublic(SQLModel):
    """One page of your office's queue."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={"examples": [{"data": [EXAMPLE_QUEUE_ITEM], "count": 1}]}
    )

    data: list[QueueItemPublic] = Field(
        description="This page of requested cases: urgent first, then oldest first."
    )
    count: PageCount


EXAMPLE_CASE: dict[str, Any] = {
    "case_id": "1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b",
    "case_ref": "K-7QH3M9XA",
    "track": "legal_stay",
    "agency": "immigration_office",
    "office": "brussels",
    "urgency": "urgent",
    "routed_at": "2026-01-15T11:20:01Z",
    "status": "in-progress",
    "status_reason": None,
    "status_note": None,
    "outcome": None,
    "closed_at": None,
    "assignee": "coach-4",
    "purposes": ["feedback", "referral"],
    "disclosed_categories": ["identity", "needs"],
    "disclosure_status": "disclosed",
    "return_step": None,
    "created_at": "2026-01-15T11:20:02Z",
    "updated_at": "2026-01-22T09:00:00Z",
    "outcome_category": None,
}


class CasePublic(SQLModel):
    """A case as its agency's office sees it after a change: codes and timestamps, no package."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_CASE]})  # type: ignore[assignment]

    case_id: uuid.UUID = Field(description=CASE_ID)
    case_ref: str = Field(description=CASE_REF)
    track: Track = Field(description="The case's track: `legal_stay` or `return`.")
    agency: Agency = Field(description="The agency whose case it is.")
    office: str = Field(description="The office whose queue the track was routed to.")
    urgency: Urgency = Field(description="How soon, as the NGO asked.")
    routed_at: datetime = Field(description="When the bridge routed the track (UTC).")
    status: TaskStatus = Field(description="The track's FHIR Task status.")
    status_reason: StatusReason | None = Field(
        description="Why it was rejected, put on hold, failed or cancelled; `null` otherwise."
    )
    status_note: str | None = Field(description="The note of the latest status change.")
    outcome: Outcome | None = Field(description="How the track ended, once `completed`.")
    closed_at: datetime | None = Field(description="When it reached a final status (UTC).")
    assignee: str | None = Field(
        description="Who accepted the track (their token subject); `null` while requested."
    )
    purposes: list[str] = Field(
        description="The purposes of the consent the track went under, e.g. `referral`, "
        "`feedback`, `joint_review`."
    )
    disclosed_categories: list[str] = Field(
        description="The data categories disclosed for the track (kept after a withdrawal)."
    )
    disclosure_status: DisclosureStatus = Field(
        description="`disclosed`, `withdrawn` (the package is gone, F4) or `unavailable` (the "
        "bridge did not hand out its key for this read)."
    )
    return_step: ReturnStep | None = Field(
        description="Where a return track stands; `null` on a legal-stay case or before a step."
    )
    created_at: datetime = Field(description="When the case was opened (UTC).")
    updated_at: datetime = Field(description="When the case last changed (UTC).")

    @computed_field(description=OUTCOME_CATEGORY_ABOUT)  # type: ignore[prop-decorator]
    @property
    def outcome_category(self) -> OutcomeCategory | None:
        return OUTCOME_CATEGORY[self.outcome] if self.outcome else None


RECORDED_BY = "Who recorded it: the case worker's token subject."
RECORDED_AT = "When it was recorded (UTC)."
EXAMPLE_OPTION: dict[str, Any] = {
    "option": "9bis",
    "assessment": "viable",
    "note": "Long stay, strong local ties.",
    "assessed_by": "coach-4",
    "assessed_at": "2026-01-22T09:30:00Z",
}


class OptionPublic(SQLModel):
    """The current assessment of one legal-stay option."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_OPTION]})  # type: ignore[assignment]

    option: LegalStayOption = Field(
        description="The option: `9bis` (humanitarian), `9ter` (medical), family reunification, "
        "international protection, statelessness, a work or study permit, or another."
    )
    assessment: Assessment = Field(description="Where the option stands.")
    note: str | None = Field(description="The note of the assessment.")
    assessed_by: str = Field(description="Who assessed it: the coach's token subject.")
    assessed_at: datetime = Field(description="When it was assessed (UTC).")


EXAMPLE_STEP: dict[str, Any] = {
    "id": "5c4b3a29-1807-4f6e-9d5c-4b3a29180716",
    "step": "considering",
    "previous_step": "informing",
    "preparation": None,
    "decision_id": None,
    "note": None,
    "recorded_by": "counsellor-2",
    "recorded_at": "2026-01-22T10:00:00Z",
}


class ReturnStepPublic(SQLModel):
    """One move of a return track to a step."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_STEP]})  # type: ignore[assignment]

    id: uuid.UUID = Field(description="The move's id.")
    step: ReturnStep = Field(description="The step the track moved to.")
    previous_step: ReturnStep | None = Field(description="The step it moved from; `null` first.")
    preparation: Preparation | None = Field(description="The preparation, at `preparing`.")
    decision_id: uuid.UUID | None = Field(
        description="The person's decision that made the move, if one did."
    )
    note: str | None = Field(description="The note of the move.")
    recorded_by: str = Field(description=RECORDED_BY)
    recorded_at: datetime = Field(description=RECORDED_AT)


EXAMPLE_SESSION: dict[str, Any] = {
    "id": "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d",
    "date": "2026-01-22",
    "mode": "in_person",
    "language": "fr",
    "interpreter": False,
    "topics": ["options", "documents"],
    "note": "Explained 9bis and what it needs.",
    "recorded_by": "coach-4",
    "recorded_at": "2026-01-22T11:00:00Z",
}


class SessionPublic(SQLModel):
    """A counselling session with the person."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_SESSION]})  # type: ignore[assignment]

    id: uuid.UUID = Field(description="The session's id.")
    date: dt.date = Field(description="The day of the session.")
    mode: SessionMode = Field(description="How it took place.")
    language: str | None = Field(description=SESSION_LANGUAGE)
    interpreter: bool = Field(description="Whether an interpreter took part.")
    topics: list[str] = Field(description=SESSION_TOPICS)
    note: str | None = Field(description="The note of the session.")
    recorded_by: str = Field(description=RECORDED_BY)
    recorded_at: datetime = Field(description=RECORDED_AT)


EXAMPLE_DECISION: dict[str, Any] = {
    "id": "2b3c4d5e-6f70-4812-9a3b-4c5d6e7f8091",
    "decision": "pursue_legal_stay",
    "option": "9bis",
    "date": "2026-01-29",
    "decided_by": "client",
    "note": None,
    "recorded_by": "coach-4",
    "recorded_at": "2026-01-29T10:00:00Z",
    "return_step": None,
}


class DecisionPublic(SQLModel):
    """A decision of the person, recorded as theirs."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_DECISION]})  # type: ignore[assignment]

    id: uuid.UUID = Field(description="The decision's id.")
    decision: ClientDecision = Field(description=DECISION)
    option: LegalStayOption | None = Field(description=DECISION_OPTION)
    date: dt.date = Field(description="The day the person decided.")
    decided_by: str = Field(description="Whose decision it is: always `client`, the person's.")
    note: str | None = Field(description="The note of the decision.")
    recorded_by: str = Field(description=RECORDED_BY)
    recorded_at: datetime = Field(description=RECORDED_AT)
    # Where the decision moved a return case (null: no move).
    return_step: ReturnStep | None = Field(
        default=None, description="The step the decision moved a return track to; `null`: none."
    )


EXAMPLE_STEP_UP: dict[str, Any] = {
    "request_id": "0b7e5a3c-2d4f-4e6a-8b9c-1d2e3f4a5b6c",
    "categories": ["health"],
    "reason": "medical_assessment",
    "status": "pending",
    "requested_at": "2026-01-20T08:45:00Z",
    "decided_at": None,
}


class DisclosureRequestPublic(SQLModel):
    """A request to the NGO for more categories (step-up, F5)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_STEP_UP]})  # type: ignore[assignment]

    request_id: uuid.UUID = Field(description="The request's id.")
    categories: list[DataCategory] = Field(description="The categories asked for.")
    reason: DisclosureRequestReason = Field(description="Why they were asked for.")
    status: DisclosureRequestStatus = Field(
        description="`pending`, `released` (a new consent released an updated package) or "
        "`refused` (the NGO refused)."
    )
    requested_at: datetime = Field(description="When it was asked (UTC).")
    decided_at: datetime | None = Field(description="When it was released or refused (UTC).")


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

    agency: Agency = PydanticField(description="The other agency.")
    track: Track = PydanticField(description="Its track.")
    status: TaskStatus = PydanticField(description="Its FHIR Task status.")
    outcome: Outcome | None = PydanticField(description="How it ended, once `completed`.")
    closed_at: datetime | None = PydanticField(description="When it reached a final status (UTC).")
    updated_at: datetime = PydanticField(description="When it last changed (UTC).")

    @computed_field(description=OUTCOME_CATEGORY_ABOUT)  # type: ignore[prop-decorator]
    @property
    def outcome_category(self) -> OutcomeCategory | None:
        return OUTCOME_CATEGORY[self.outcome] if self.outcome else None


class JointReviewPublic(BaseModel):
    """The dual-track joint review: the other agency's track, only under `joint_review`."""

    status: JointReviewStatus = PydanticField(
        description="`linked` (the person consented to joint review for both agencies), "
        "`not_consented` or `unavailable` (the bridge did not answer this read)."
    )
    tracks: list[LinkedTrackPublic] = PydanticField(
        default_factory=list, description="The other agency's track when `linked`; else empty."
    )


class CaseDetailPublic(CasePublic):
    """A case with its disclosure and track work; reading it is an audited read (F9)."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={
            "examples": [
                {
                    **EXAMPLE_CASE,
                    "disclosure": {
                        "identity": {
                            "display_name": "Amina",
                            "birth_year": 1994,
                            "nationality": "GN",
                        },
                        "needs": {"languages": ["fr", "en"], "needs": ["shelter", "medical"]},
                    },
                    "options": [EXAMPLE_OPTION],
                    "return_steps": None,
                    "sessions": [EXAMPLE_SESSION],
                    "decisions": [EXAMPLE_DECISION],
                    "disclosure_requests": [EXAMPLE_STEP_UP],
                    "joint_review": {"status": "not_consented", "tracks": []},
                }
            ]
        }
    )

    # Exactly the routed package, opened in memory with the key the bridge hands out for this
    # read, one object per disclosed category; null once withdrawn (F4) or while the bridge
    # does not answer (`disclosure_status` says which).
    disclosure: dict[DataCategory, dict[str, Any]] | None = Field(
        description="The disclosed data, one object per disclosed category, exactly as the "
        "consent granted it; `null` once withdrawn (F4) or while the bridge does not hand out "
        "its key (`disclosure_status` says which). Reading it is recorded (F9)."
    )
    # Legal stay only (null on a return case): the current assessment per option.
    options: list[OptionPublic] | None = Field(
        description="The current assessment per legal-stay option; `null` on a return case."
    )
    # Return only (null on a legal-stay case): every move, oldest first.
    return_steps: list[ReturnStepPublic] | None = Field(
        description="Every move of a return track, oldest first; `null` on a legal-stay case."
    )
    sessions: list[SessionPublic] = Field(description="The counselling sessions.")
    decisions: list[DecisionPublic] = Field(description="The person's decisions.")
    # Step-up requests (F5), oldest first: pending, released (by a new consent) or refused.
    disclosure_requests: list[DisclosureRequestPublic] = Field(
        description="The step-up requests to the NGO, oldest first (F5)."
    )
    # The other agency's track for the same person, only under `joint_review` from both sides.
    joint_review: JointReviewPublic = Field(
        description="The other agency's track for the same person, only under `joint_review` "
        "consents from both sides."
    )


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
