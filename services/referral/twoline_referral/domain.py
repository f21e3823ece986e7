"""Referral rules without I/O: which agency a track goes to, which consent permits it, what its
disclosure package holds, where it is routed, how a track's status may move, what the NGO may see
of it, and how the consent projection folds its events."""

import unicodedata
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from twoline_referral.models import BusinessStatus, as_utc
from twoline_shared import tasks
from twoline_shared.auth import Agency
from twoline_shared.codes import (
    OUTCOME_CATEGORY,
    TRACK_AGENCY,
    ConsentStatus,
    DataCategory,
    Outcome,
    OutcomeCategory,
    Purpose,
    TaskStatus,
    Track,
)

AGENCY_FOR_TRACK: dict[Track, Agency] = TRACK_AGENCY


class ConsentFacts(Protocol):
    consent_id: str
    client_ref: str
    org: str
    recipient: str
    purposes: list[str]
    categories: list[str]
    valid_from: datetime | None
    valid_until: datetime | None
    status: str


def consent_permits_referral(
    consent: ConsentFacts, *, org: str, client_ref: str, agency: Agency, now: datetime
) -> bool:
    """An active, current consent of this org and client, to this agency, for `referral`.

    F0: this is the only gate and nothing bypasses it. Consent is per recipient agency, never
    bundled, so a consent to one agency never covers the other.
    """
    now = as_utc(now)
    return (
        consent.status == ConsentStatus.ACTIVE
        and consent.org == org
        and consent.client_ref == client_ref
        and consent.recipient == agency.value
        and Purpose.REFERRAL.value in consent.purposes
        and (consent.valid_from is None or as_utc(consent.valid_from) <= now)
        and (consent.valid_until is None or now < as_utc(consent.valid_until))
    )


C = TypeVar("C", bound=ConsentFacts)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def choose_consents(
    agencies: Iterable[Agency],
    consents: Iterable[C],
    *,
    org: str,
    client_ref: str,
    now: datetime,
) -> tuple[dict[Agency, C], list[Agency]]:
    """The consent each agency's track goes under, and the agencies that have none."""
    candidates = list(consents)
    chosen: dict[Agency, C] = {}
    missing: list[Agency] = []
    for agency in agencies:
        permitting = [
            c
            for c in candidates
            if consent_permits_referral(c, org=org, client_ref=client_ref, agency=agency, now=now)
        ]
        if not permitting:
            missing.append(agency)
            continue
        chosen[agency] = max(permitting, key=_lifetime)
    return chosen, missing


def _lifetime(consent: ConsentFacts) -> tuple[bool, datetime, str]:
    # The longest-lived consent; open-ended beats any end date; consent_id breaks ties.
    until = consent.valid_until
    return (until is None, as_utc(until) if until else _EARLIEST, consent.consent_id)


def agencies_for(tracks: Iterable[Track]) -> list[Agency]:
    return [AGENCY_FOR_TRACK[track] for track in tracks]


# ---------------------------------------------------------------- disclosure packages


def disclosed_categories(consented: Iterable[str]) -> list[str]:
    """The data categories a consent grants, as known codes, in one stable order."""
    known = {c.value for c in DataCategory}
    return sorted({c for c in consented if c in known})


def union_of_categories(consents: Iterable[ConsentFacts]) -> list[str]:
    """What to ask intake for once: every category any of the chosen consents grants."""
    union: set[str] = set()
    for consent in consents:
        union.update(disclosed_categories(consent.categories))
    return sorted(union)


def package_for(
    consented: Iterable[str], disclosed: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """One agency's package: exactly the categories its consent grants, no key for the others (F2).

    `disclosed` is what intake returned for the union of the consents of one referral; what
    another agency's consent grants never leaks into this agency's package.
    """
    return {c: dict(disclosed[c]) for c in disclosed_categories(consented) if c in disclosed}


def consent_covers(requested: Iterable[str], consent: ConsentFacts) -> bool:
    """A step-up request is released only by a consent granting every category it asks for."""
    return set(requested) <= set(disclosed_categories(consent.categories))


# ---------------------------------------------------------------- data keys (F4)


class DataKeyFacts(Protocol):
    key_id: str
    consent_id: str
    key_bytes: bytes | None
    destroyed_at: datetime | None


class KeyDecision(StrEnum):
    """What the bridge answers when zone B asks for the key of a track's package."""

    RELEASE = "release"
    # An unknown track or key, or a key that is not the one the track was routed under.
    UNKNOWN = "unknown"
    # The consent the track went under is withdrawn (or no longer active): the key is gone.
    WITHDRAWN = "withdrawn"


def judge_key_request(
    *,
    track_consent_id: str | None,
    key: DataKeyFacts | None,
    consent: ConsentFacts | None,
    now: datetime,
) -> KeyDecision:
    """Release a data key only for a track routed under its consent, while that consent is
    active and current and the key is not destroyed (F4: withdrawal makes the package
    unreadable; an expired consent is inactive too, FHIR Consent)."""
    if track_consent_id is None or key is None or key.consent_id != track_consent_id:
        return KeyDecision.UNKNOWN
    if (
        key.key_bytes is None
        or key.destroyed_at is not None
        or consent is None
        or consent.status != ConsentStatus.ACTIVE
        or (consent.valid_until is not None and as_utc(consent.valid_until) <= as_utc(now))
    ):
        return KeyDecision.WITHDRAWN
    return KeyDecision.RELEASE


# ---------------------------------------------------------------- routing


class OfficeFacts(Protocol):
    languages: list[str]
    municipalities: list[str]


def normalise_place(name: str) -> str:
    """A municipality name compared without case, accents, hyphens or spaces ("Liège" = "liege")."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(ch for ch in decomposed if ch.isalnum())


def route_office(
    agency: Agency,
    *,
    categories: Collection[str],
    package: Mapping[str, Mapping[str, Any]],
    offices: Mapping[str, Mapping[str, OfficeFacts]],
    default_office: Mapping[str, str],
) -> str:
    """The office queue of `agency` a track goes to.

    Routing reads only the agency's own package and only the categories its consent grants:
    without `contact` the municipality is never looked at, without `needs` the languages never
    are, and then the track goes to the agency's default office.
    1. `contact`: the office whose municipalities hold the client's municipality, else the default.
    2. `needs`: if that office speaks none of the client's languages, the first office that does
       (client's language order first; the default office first among equals, then table order).
    """
    table = offices.get(agency.value, {})
    default = default_office[agency.value]
    office = default
    if DataCategory.CONTACT.value in categories:
        municipality = package.get(DataCategory.CONTACT.value, {}).get("municipality")
        if isinstance(municipality, str) and normalise_place(municipality):
            place = normalise_place(municipality)
            office = next(
                (
                    name
                    for name, facts in table.items()
                    if any(normalise_place(m) == place for m in facts.municipalities)
                ),
                default,
            )
    if DataCategory.NEEDS.value in categories:
        languages = package.get(DataCategory.NEEDS.value, {}).get("languages")
        spoken = [lang for lang in languages if isinstance(lang, str)] if languages else []
        if spoken and not _speaks(table.get(office), spoken):
            order = [default, *(name for name in table if name != default)]
            for language in spoken:
                match = next((n for n in order if _speaks(table.get(n), [language])), None)
                if match is not None:
                    return match
    return office


def _speaks(office: OfficeFacts | None, languages: Iterable[str]) -> bool:
    return office is not None and any(lang in office.languages for lang in languages)


def status_after_grant(current: str | None) -> ConsentStatus:
    """A grant activates a consent, unless it was already withdrawn: a late grant never revives it."""
    if current == ConsentStatus.INACTIVE:
        return ConsentStatus.INACTIVE
    return ConsentStatus.ACTIVE


def status_after_withdrawal(_current: str | None) -> ConsentStatus:
    """Withdrawal always wins, whatever arrived before (F4)."""
    return ConsentStatus.INACTIVE


# ---------------------------------------------------------------- track status

# The performer's status events (`secondline.case.track.<verb>`) and the statuses each may carry.
STATUS_EVENTS: dict[str, frozenset[TaskStatus]] = {
    "accepted": frozenset({TaskStatus.ACCEPTED}),
    "rejected": frozenset({TaskStatus.REJECTED}),
    "status-changed": frozenset(
        {TaskStatus.IN_PROGRESS, TaskStatus.ON_HOLD, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    "completed": frozenset({TaskStatus.COMPLETED}),
}


class Move(StrEnum):
    """What a status event does to a track."""

    APPLY = "apply"
    SAME = "same"  # the track already has this status: a duplicate or a late copy
    ILLEGAL = "illegal"  # FHIR Task forbids it (e.g. out of a terminal status, or out of order)


def judge_move(current: str, target: str) -> Move:
    """Whether a track in `current` moves to `target` (the shared FHIR Task state machine)."""
    if current == target:
        return Move.SAME
    return Move.APPLY if tasks.can_move(current, target) else Move.ILLEGAL


def business_status_for(status: str) -> BusinessStatus:
    """Where a track sits: routed while requested, assigned while worked on, closed at the end."""
    if tasks.is_terminal(status):
        return BusinessStatus.CLOSED
    if status == TaskStatus.REQUESTED:
        return BusinessStatus.ROUTED
    return BusinessStatus.ASSIGNED


def is_open(status: str) -> bool:
    """A track that may still be cancelled (not in a terminal status)."""
    return not tasks.is_terminal(status)


def consent_grants(consent: ConsentFacts | None, purpose: Purpose, *, now: datetime) -> bool:
    """Whether `consent` is active and current now, and grants `purpose`."""
    if consent is None:
        return False
    now = as_utc(now)
    return (
        consent.status == ConsentStatus.ACTIVE
        and purpose.value in consent.purposes
        and (consent.valid_from is None or as_utc(consent.valid_from) <= now)
        and (consent.valid_until is None or now < as_utc(consent.valid_until))
    )


def consent_allows_feedback(consent: ConsentFacts | None, *, now: datetime) -> bool:
    """F6: status reason, outcome and progress go back to the NGO only under an active, current
    consent that grants `feedback`."""
    return consent_grants(consent, Purpose.FEEDBACK, now=now)


class TrackFacts(Protocol):
    track_id: Any
    agency: str
    consent_id: str


def joint_review_partners(
    track: TrackFacts,
    candidates: Iterable[TrackFacts],
    consents: Mapping[str, ConsentFacts],
    *,
    now: datetime,
) -> list[TrackFacts]:
    """The other agency's tracks for the same person that `track` may be reviewed with (F5, F6).

    Only while *both* consents, the one `track` went under and the partner's, are active,
    current and grant `joint_review`: the person agreed, for each agency, that the two may see
    each other's track. Without it ICAM and Fedasil cannot join their cases at all.
    """
    if not consent_grants(consents.get(track.consent_id), Purpose.JOINT_REVIEW, now=now):
        return []
    return [
        partner
        for partner in candidates
        if partner.agency != track.agency
        and consent_grants(consents.get(partner.consent_id), Purpose.JOINT_REVIEW, now=now)
    ]


def outcome_category(outcome: str | None) -> OutcomeCategory | None:
    return OUTCOME_CATEGORY[Outcome(outcome)] if outcome else None
