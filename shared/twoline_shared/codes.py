"""The code lists every zone speaks: agencies, tracks, FHIR Task status, purposes, categories.

Kept once here so that a code means the same in intake, consent, the bridge and zone B.
"""

from enum import StrEnum


class Agency(StrEnum):
    IMMIGRATION_OFFICE = "immigration_office"
    FEDASIL = "fedasil"


class Track(StrEnum):
    LEGAL_STAY = "legal_stay"
    RETURN = "return"


# Each track goes to exactly one agency, under that agency's own consent.
TRACK_AGENCY = {Track.LEGAL_STAY: Agency.IMMIGRATION_OFFICE, Track.RETURN: Agency.FEDASIL}


class Urgency(StrEnum):
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


class Purpose(StrEnum):
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
