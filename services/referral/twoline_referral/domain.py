"""Referral rules without I/O: which agency a track goes to, which consent permits it, where it is
routed, how a track's status may move, and how the consent projection folds its events."""

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from twoline_referral.models import (
    ReferralCreate,
    as_utc,
)
from twoline_shared.auth import Agency
from twoline_shared.codes import TRACK_AGENCY, ConsentStatus, Purpose, TaskStatus, Track

AGENCY_FOR_TRACK: dict[Track, Agency] = TRACK_AGENCY


class ConsentFacts(Protocol):
    consent_id: str
    client_ref: str
    org: str
    recipient: str
    purposes: list[str]
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


def route_office(agency: Agency, *, default_office: Mapping[str, str]) -> str:
    """The office queue a track goes to (the next issue adds municipality and language rules)."""
    return default_office[agency.value]


def status_after_grant(current: str | None) -> ConsentStatus:
    """A grant activates a consent, unless it was already withdrawn: a late grant never revives it."""
    if current == ConsentStatus.INACTIVE:
        return ConsentStatus.INACTIVE
    return ConsentStatus.ACTIVE


def status_after_withdrawal(_current: str | None) -> ConsentStatus:
    """Withdrawal always wins, whatever arrived before (F4)."""
    return ConsentStatus.INACTIVE


# Performer-set transitions handled so far (HL7 Gravity: the second line accepts a requested task).
# The full FHIR Task state machine comes with the next issue.
TRACK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.REQUESTED: frozenset({TaskStatus.ACCEPTED}),
}


def can_transition(current: str, target: TaskStatus) -> bool:
    """True when a track in `current` may move to `target`."""
    try:
        state = TaskStatus(current)
    except ValueError:
        return False
    return target in TRACK_TRANSITIONS.get(state, frozenset())


def request_fingerprint(body: ReferralCreate) -> str:
    """A stable hash of what was asked, for Idempotency-Key replays (track order does not matter)."""
    canonical = {
        "client_ref": body.client_ref,
        "tracks": sorted(track.value for track in body.tracks),
        "urgency": body.urgency.value,
        "note": body.note,
    }
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()
