"""Referral use cases: fold zone-A facts into projections, check consent, route, follow status."""

import logging
import uuid
from collections.abc import Mapping

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from twoline_referral import domain, repository
from twoline_referral.models import (
    ClientRegistered,
    ConsentGranted,
    ConsentView,
    ConsentWithdrawn,
    KnownClient,
    Referral,
    ReferralCreate,
    ReferralTrack,
    TrackAccepted,
)
from twoline_shared.audit import record_audit
from twoline_shared.auth import Principal
from twoline_shared.codes import TaskStatus
from twoline_shared.db import utcnow
from twoline_shared.errors import Conflict, Invalid, NotFound
from twoline_shared.events import new_event
from twoline_shared.outbox import add_event

log = logging.getLogger("twoline.referral")

SERVICE = "referral"
SOURCE = "twoline/referral"
TRACK_ROUTED = "secondline.referral.track.routed"


# ---------------------------------------------------------------- projections (consumers)


def record_client(session: Session, *, data: ClientRegistered) -> None:
    """Remember which org owns a client_ref; the first registration wins."""
    known = repository.get_known_client(session, client_ref=data.client_ref)
    if known is None:
        repository.save(session, KnownClient(client_ref=data.client_ref, org=data.org))
    elif known.org != data.org:
        log.warning("client.registered for a known client_ref from another org; ignored")


def record_consent_granted(session: Session, *, data: ConsentGranted) -> None:
    """Project a grant; a consent already withdrawn stays inactive (a late grant never revives it)."""
    consent = repository.get_consent(session, consent_id=data.consent_id)
    current = consent.status if consent is not None else None
    if consent is None:
        consent = ConsentView(
            consent_id=data.consent_id,
            client_ref=data.client_ref,
            org=data.org,
            recipient=data.recipient,
        )
    elif (consent.client_ref, consent.org, consent.recipient) != (
        data.client_ref,
        data.org,
        data.recipient,
    ):
        # A consent never changes whom it is about or whom it is for: keep the first version.
        log.warning("consent.granted contradicts the consent already recorded; ignored")
        return
    consent.purposes = sorted(set(data.purposes))
    consent.categories = sorted(set(data.categories))
    consent.valid_from = data.valid_from
    consent.valid_until = data.valid_until
    consent.status = domain.status_after_grant(current).value
    consent.updated_at = utcnow()
    repository.save(session, consent)


def record_consent_withdrawn(session: Session, *, data: ConsentWithdrawn) -> None:
    """Project a withdrawal, also when it overtakes its grant (F4: withdrawal always wins)."""
    consent = repository.get_consent(session, consent_id=data.consent_id)
    if consent is None:
        consent = ConsentView(
            consent_id=data.consent_id,
            client_ref=data.client_ref,
            org=data.org,
            recipient=data.recipient,
        )
    consent.status = domain.status_after_withdrawal(consent.status).value
    consent.withdrawn_at = consent.withdrawn_at or data.withdrawn_at or utcnow()
    consent.updated_at = utcnow()
    repository.save(session, consent)


def record_track_accepted(session: Session, *, data: TrackAccepted) -> None:
    """The second line accepted a track: `requested` -> `accepted`; anything else is left as is."""
    track = repository.get_track(session, track_id=data.track_id)
    if track is None or track.agency != data.agency:
        log.warning("track.accepted for an unknown track or another agency; ignored")
        return
    if not domain.can_transition(track.status, TaskStatus.ACCEPTED):
        log.info("track.accepted ignored: track is %s", track.status)
        return
    previous = track.status
    track.status = TaskStatus.ACCEPTED.value
    track.status_changed_at = data.at or utcnow()
    repository.save(session, track)
    record_audit(
        session,
        service=SERVICE,
        action="update",
        actor=None,
        resource_type="track",
        resource_id=str(track.track_id),
        referral_id=str(track.referral_id),
        agency=track.agency,
        office=track.office,
        previous_status=previous,
        status=track.status,
    )


# ---------------------------------------------------------------- referrals (API)


def create_referral(
    session: Session,
    *,
    principal: Principal,
    body: ReferralCreate,
    idempotency_key: str | None,
    default_office: Mapping[str, str],
) -> tuple[Referral, bool]:
    """Refer a client for one or both tracks; returns the referral and whether it is new.

    F0: every track needs an active `referral` consent for its agency; if one is missing the
    whole request is refused and nothing is stored or routed.
    """
    org = principal.org or ""
    fingerprint = domain.request_fingerprint(body)
    if idempotency_key is not None:
        existing = repository.get_referral_by_key(session, org=org, idempotency_key=idempotency_key)
        if existing is not None:
            return _replay(existing, fingerprint), False

    client = repository.get_known_client(session, client_ref=body.client_ref)
    if client is None or client.org != org:
        raise NotFound(f"No client {body.client_ref!r} in your organisation.")

    tracks = sorted(body.tracks)  # one stable order for the response, the events and the audit
    agencies = domain.agencies_for(tracks)
    chosen, missing = domain.choose_consents(
        agencies,
        repository.active_consents(session, org=org, client_ref=body.client_ref),
        org=org,
        client_ref=body.client_ref,
        now=utcnow(),
    )
    if missing:
        raise Invalid(
            "The client has no active consent to refer to: "
            + ", ".join(a.value for a in missing)
            + ".",
            slug="consent-missing",
            missing_consent=[a.value for a in missing],
        )

    now = utcnow()
    referral = Referral(
        org=org,
        client_ref=body.client_ref,
        urgency=body.urgency.value,
        note=body.note,
        created_by=principal.sub,
        created_at=now,
        idempotency_key=idempotency_key,
        request_hash=fingerprint if idempotency_key is not None else None,
    )
    referral.tracks = [
        ReferralTrack(
            # F5: a fresh id per referral and agency, so ICAM and Fedasil share no identifier.
            track_id=uuid.uuid4(),
            referral_id=referral.referral_id,
            track=track.value,
            agency=agency.value,
            office=domain.route_office(agency, default_office=default_office),
            consent_id=chosen[agency].consent_id,
            status_changed_at=now,
            created_at=now,
        )
        for track, agency in zip(tracks, agencies, strict=True)
    ]
    try:
        repository.add_referral(session, referral=referral)
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert: answer as a replay.
        session.rollback()
        if idempotency_key is None:
            raise
        existing = repository.get_referral_by_key(session, org=org, idempotency_key=idempotency_key)
        if existing is None:
            raise
        return _replay(existing, fingerprint), False

    for track in referral.tracks:
        # F5: zone B gets the track id, codes and the office, never referral_id, client_ref or note.
        add_event(
            session,
            new_event(
                source=SOURCE,
                type=TRACK_ROUTED,
                subject=str(track.track_id),
                track_id=str(track.track_id),
                track=track.track,
                agency=track.agency,
                office=track.office,
                urgency=referral.urgency,
                routed_at=now.isoformat(),
            ),
        )
    record_audit(
        session,
        service=SERVICE,
        action="create",
        actor=principal,
        resource_type="referral",
        resource_id=str(referral.referral_id),
        client_ref=referral.client_ref,
        urgency=referral.urgency,
        track_ids=[str(t.track_id) for t in referral.tracks],
        tracks=[t.track for t in referral.tracks],
        agencies=[t.agency for t in referral.tracks],
        offices=[t.office for t in referral.tracks],
        consent_ids=[t.consent_id for t in referral.tracks],
        purpose="referral",
    )
    return referral, True


def _replay(existing: Referral, fingerprint: str) -> Referral:
    if existing.request_hash != fingerprint:
        raise Conflict(
            "This Idempotency-Key was already used for a different request.",
            slug="idempotency-key-reused",
        )
    return existing


def read_referral(session: Session, *, principal: Principal, referral_id: uuid.UUID) -> Referral:
    """A referral of the caller's org; another org's is indistinguishable from none (F7)."""
    referral = repository.get_referral(session, org=principal.org or "", referral_id=referral_id)
    if referral is None:
        raise NotFound(f"No referral {referral_id} in your organisation.")
    record_audit(
        session,
        service=SERVICE,
        action="read",
        actor=principal,
        resource_type="referral",
        resource_id=str(referral.referral_id),
        track_ids=[str(t.track_id) for t in referral.tracks],
        agencies=[t.agency for t in referral.tracks],
    )
    return referral


def list_referrals(
    session: Session, *, principal: Principal, client_ref: str, offset: int, limit: int
) -> tuple[list[Referral], int]:
    """The caller's org's referrals for one client, newest first (empty for anyone else's)."""
    rows, count = repository.list_referrals(
        session, org=principal.org or "", client_ref=client_ref, offset=offset, limit=limit
    )
    record_audit(
        session,
        service=SERVICE,
        action="search",
        actor=principal,
        resource_type="referral",
        resource_id=client_ref,
        client_ref=client_ref,
        referral_ids=[str(r.referral_id) for r in rows],
    )
    return rows, count
