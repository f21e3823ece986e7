"""The code lists every zone speaks: agencies, tracks, FHIR Task status, purposes, categories.

Kept once here so that a code means the same in intake, consent, the bridge and zone B.
"""

from enum import StrEnum


class Agency(StrEnum):
    """A second-line agency: the Immigration Office (ICAM coaches) or Fedasil (return counsellors)."""

    IMMIGRATION_OFFICE = "immigration_office"
    FEDASIL = "fedasil"


class Track(StrEnum):
    """A track of a referral: legal stay (ICAM) or assisted voluntary return (Fedasil)."""

    LEGAL_STAY = "legal_stay"
    RETURN = "return"


# Each track goes to exactly one agency, under that agency's own consent.
TRACK_AGENCY = {Track.LEGAL_STAY: Agency.IMMIGRATION_OFFICE, Track.RETURN: Agency.FEDASIL}


class Urgency(StrEnum):
    """How soon the NGO asks the second line to act; urgent cases head the office queue."""

    NORMAL = "normal"
    URGENT = "urgent"


class TaskStatus(StrEnum):
    """FHIR Task status codes (HL7 Gravity closed-loop referral)."""

    REQUESTED = "requested"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    IN_PROGRESS = "in-progress"
    ON_HOLD = "on-hold"
    FAILED = "failed"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


# The statuses a task never leaves.
TERMINAL_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.REJECTED, TaskStatus.FAILED}
)


class StatusReason(StrEnum):
    """Why a task was rejected, cancelled, put on hold or failed: a code, never free text (F8)."""

    NOT_ELIGIBLE = "not_eligible"
    WRONG_OFFICE = "wrong_office"
    DUPLICATE = "duplicate"
    INSUFFICIENT_INFORMATION = "insufficient_information"
    NO_CAPACITY = "no_capacity"
    AWAITING_DOCUMENTS = "awaiting_documents"
    AWAITING_CLIENT_DECISION = "awaiting_client_decision"
    DECLINED_BY_CLIENT = "declined_by_client"
    CLIENT_UNREACHABLE = "client_unreachable"
    CLIENT_DISENGAGED = "client_disengaged"
    MEDICAL = "medical"
    PROCEDURE_PENDING = "procedure_pending"
    CLIENT_REQUEST = "client_request"
    REQUESTER_CANCELLED = "requester_cancelled"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    OTHER = "other"


class Outcome(StrEnum):
    """How a track ended for the person (the categories of the Dutch LVV evaluation)."""

    LEGAL_STAY = "legal_stay"
    RETURN = "return"
    ONWARD_MIGRATION = "onward_migration"
    PROTECTION_PROCEDURE = "protection_procedure"
    NO_SOLUTION = "no_solution"
    DISENGAGED = "disengaged"
    CONSENT_WITHDRAWN = "consent_withdrawn"


class OutcomeCategory(StrEnum):
    """The LVV evaluation's categories of an outcome: permanent, semi-permanent or none."""

    PERMANENT = "permanent"
    SEMI_PERMANENT = "semi_permanent"
    NONE = "none"


OUTCOME_CATEGORY: dict[Outcome, OutcomeCategory] = {
    Outcome.LEGAL_STAY: OutcomeCategory.PERMANENT,
    Outcome.RETURN: OutcomeCategory.PERMANENT,
    Outcome.ONWARD_MIGRATION: OutcomeCategory.PERMANENT,
    Outcome.PROTECTION_PROCEDURE: OutcomeCategory.SEMI_PERMANENT,
    Outcome.NO_SOLUTION: OutcomeCategory.NONE,
    Outcome.DISENGAGED: OutcomeCategory.NONE,
    Outcome.CONSENT_WITHDRAWN: OutcomeCategory.NONE,
}


class Purpose(StrEnum):
    """What a consent lets its recipient agency do with the data."""

    REFERRAL = "referral"  # disclose for case review
    FEEDBACK = "feedback"  # the recipient may report status and outcome back to the NGO
    JOINT_REVIEW = "joint_review"  # the two second-line agencies may see each other's track


class DataCategory(StrEnum):
    """What consent is given for; `health` is special-category data, never implied by another."""

    IDENTITY = "identity"
    CONTACT = "contact"
    HOUSEHOLD = "household"
    MIGRATION_HISTORY = "migration_history"
    NEEDS = "needs"
    HEALTH = "health"
    VULNERABILITIES = "vulnerabilities"
    INTENTIONS = "intentions"
    CASE_NOTES = "case_notes"


class ConsentStatus(StrEnum):
    """FHIR Consent status: `inactive` once withdrawn or expired."""

    ACTIVE = "active"
    INACTIVE = "inactive"


# ISO 639-1: the two-letter language codes.
_ISO_639_1_CODES = """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy
    da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu
    hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb
    lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om
    or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw
    ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
    """
ISO_639_1 = frozenset(_ISO_639_1_CODES.split())


def is_language(code: str) -> bool:
    """An ISO 639-1 code, e.g. `fr`."""
    return code in ISO_639_1


def is_country(code: str) -> bool:
    """The shape of an ISO 3166-1 alpha-2 code, e.g. `GN`."""
    return len(code) == 2 and code.isascii() and code.isalpha() and code.isupper()
