"""Referral use cases: fold zone-A facts into projections, check consent, disclose (sealed),
route, follow status, cancel, and release or destroy the data keys of the packages."""

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime

from sqlmodel import Session

from twoline_referral import domain, repository
from twoline_referral.consents import ConsentSource
from twoline_referral.disclosure import Fetcher
from twoline_referral.models import (
    AccessLogEntry,
    AccessLogEntryPublic,
    BusinessStatus,
    ConsentFacts,
    ConsentGranted,
    ConsentsAnswer,
    ConsentView,
    ConsentWithdrawn,
    DisclosureKeyRequest,
    DisclosureRead,
    DisclosureRefuse,
    DisclosureRequest,
    DisclosureRequested,
    DisclosureRequestPublic,
    DisclosureRequestStatus,
    JointReviewRequest,
    Referral,
    ReferralCancel,
    ReferralCreate,
    ReferralPublic,
    ReferralTrack,
    TrackProgressPublic,
    TrackPublic,
    TrackStatusChanged,
    TrackStatusEntry,
)
from twoline_shared import crypto
from twoline_shared.audit import record_audit
from twoline_shared.auth import Agency, Principal
from twoline_shared.codes import ConsentStatus, StatusReason, TaskStatus, Track
from twoline_shared.db import utcnow
from twoline_shared.errors import Conflict, Invalid, NotFound
from twoline_shared.events import Event, new_event
from twoline_shared.outbox import add_event

log = logging.getLogger("twoline.referral")

SERVICE = "referral"
SOURCE = "twoline/referral"
TRACK_ROUTED = "secondline.referral.track.routed"
TRACK_CANCELLED = "secondline.referral.track.cancelled"
DISCLOSURE_RELEASED = "secondline.referral.disclosure.released"
DISCLOSURE_REFUSED = "secondline.referral.disclosure.refused"
# The Conflict slug of a key request for a withdrawn consent (docs/events.md, Calls).
DISCLOSURE_WITHDRAWN = "disclosure-withdrawn"


# ---------------------------------------------------------------- projections (consumers)


def record_consent_granted(
    session: Session, *, data: ConsentGranted, fetch_disclosure: Fetcher, consents: ConsentSource
) -> None:
    """Project a grant; a consent already withdrawn stays inactive (a late grant never revives it).

    F5: a grant that covers a pending step-up request of its agency releases it (`_release`),
    if the consent service still holds it active.
    """
    consent = _projected(session, data=data)
    current = consent.status
    if (consent.client_ref, consent.org, consent.recipient) != (
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
    _release_step_ups(
        session, consent=consent, fetch_disclosure=fetch_disclosure, consents=consents
    )


def record_consent_withdrawn(session: Session, *, data: ConsentWithdrawn) -> None:
    """Project a withdrawal, also when it overtakes its grant (F4: withdrawal always wins), and
    cancel what went under it.

    F4: the consent's data key is destroyed in this same transaction (crypto-shredding: every
    copy of every package sealed under it becomes unreadable); every open track under the
    consent is cancelled with `consent_withdrawn`, and every track under it, open or not, gets a
    `track.cancelled` event so that zone B deletes its sealed copy too. A withdrawal of a consent
    already withdrawn emits nothing again.
    """
    consent = _projected(session, data=data)
    already_withdrawn = consent.withdrawn_at is not None
    consent.status = domain.status_after_withdrawal(consent.status).value
    consent.withdrawn_at = consent.withdrawn_at or data.withdrawn_at or utcnow()
    consent.updated_at = utcnow()
    repository.save(session, consent)
    now = utcnow()
    # Before the early return: a key made by a referral racing an earlier copy of this
    # withdrawal is destroyed by the redelivery.
    _destroy_data_key(session, consent=consent, at=now)
    if already_withdrawn:
        return
    reason = StatusReason.CONSENT_WITHDRAWN.value
    for track in repository.tracks_under_consent(session, consent_id=consent.consent_id):
        previous = track.status
        if domain.is_open(previous):
            _move(session, track, status=TaskStatus.CANCELLED, reason=reason, outcome=None, at=now)
        add_event(session, _track_cancelled(track, reason=reason, at=now))
        _audit_track(
            session,
            track,
            action="cancel",
            consent_id=consent.consent_id,
            previous_status=previous,
            status=track.status,
            reason=reason,
            purge_requested=True,
        )


def _projected(session: Session, *, data: ConsentGranted | ConsentWithdrawn) -> ConsentView:
    """The projection row of a consent, added (active) if this is the first the bridge hears of
    it, and held until commit: a referral adopting the same consent, or a replica applying
    another of its events, waits instead of failing on the key."""
    repository.adopt_consent(
        session,
        view=ConsentView(
            consent_id=data.consent_id,
            client_ref=data.client_ref,
            org=data.org,
            recipient=data.recipient,
        ),
    )
    [row] = repository.lock_consents(session, consent_ids=[data.consent_id])
    return row


def _destroy_data_key(session: Session, *, consent: ConsentView, at: datetime) -> None:
    destroyed = repository.destroy_data_key(session, consent_id=consent.consent_id, at=at)
    if destroyed is None:
        return
    record_audit(
        session,
        service=SERVICE,
        action="destroy",
        actor=None,
        resource_type="disclosure-key",
        resource_id=destroyed.key_id,
        key_id=destroyed.key_id,
        consent_id=consent.consent_id,
        agency=consent.recipient,
        reason=StatusReason.CONSENT_WITHDRAWN.value,
    )


def record_track_status(session: Session, *, verb: str, data: TrackStatusChanged) -> None:
    """A status fact from zone B (`secondline.case.track.<verb>`) moves the NGO-visible track.

    The same status again is a no-op (duplicates, late copies); a move the FHIR Task state machine
    forbids (out of a terminal status, or out of order) is ignored with an id-only log line.
    """
    allowed = domain.STATUS_EVENTS.get(verb)
    if allowed is None:
        log.info("secondline.case.track.%s carries no status for the bridge; ignored", verb)
        return
    if data.status not in allowed:
        raise Invalid(f"secondline.case.track.{verb} cannot carry status {data.status.value!r}.")
    track = repository.get_track(session, track_id=data.track_id)
    if track is None or track.agency != data.agency:
        log.warning("track status for an unknown track or another agency; ignored")
        return
    move = domain.judge_move(track.status, data.status)
    if move is domain.Move.SAME:
        return
    if move is domain.Move.ILLEGAL:
        log.info(
            "track %s: %s -> %s is not a legal move; ignored",
            track.track_id,
            track.status,
            data.status.value,
        )
        return
    previous = _move(
        session,
        track,
        status=data.status,
        reason=data.reason.value if data.reason else None,
        outcome=data.outcome.value if data.outcome else None,
        at=data.at or utcnow(),
    )
    _audit_track(
        session,
        track,
        action="update",
        previous_status=previous,
        status=track.status,
        reason=track.status_reason,
        # Not `outcome`: in an audit record that is whether the action succeeded.
        track_outcome=track.outcome,
    )


def _audit_track(
    session: Session,
    track: ReferralTrack,
    *,
    action: str,
    actor: Principal | None = None,
    resource_type: str = "track",
    **codes: object,
) -> None:
    """An audit record about one track: its ids, the agency and office it went to, and codes."""
    record_audit(
        session,
        service=SERVICE,
        action=action,
        actor=actor,
        resource_type=resource_type,
        resource_id=str(track.track_id),
        track_id=str(track.track_id),
        referral_id=str(track.referral_id),
        agency=track.agency,
        office=track.office,
        **codes,
    )


def _move(
    session: Session,
    track: ReferralTrack,
    *,
    status: TaskStatus,
    reason: str | None,
    outcome: str | None,
    at: datetime,
) -> str:
    """Apply one legal move to `track` and its history; returns the status it left."""
    previous = track.status
    moved = repository.move_track(
        session,
        track=track,
        expected=previous,
        status=status.value,
        reason=reason,
        outcome=outcome,
        business_status=domain.business_status_for(status).value,
        at=at,
    )
    if not moved:
        # Someone else moved it since it was read: the request fails, the consumer retries.
        raise Conflict("The track changed meanwhile; reload it.", slug="track-changed")
    return previous


def _track_cancelled(track: ReferralTrack, *, reason: str, at: datetime) -> Event:
    """The event that tells zone B a track is cancelled (and, for consent_withdrawn, to purge)."""
    return new_event(
        source=SOURCE,
        type=TRACK_CANCELLED,
        subject=str(track.track_id),
        track_id=str(track.track_id),
        agency=track.agency,
        status=TaskStatus.CANCELLED.value,
        reason=reason,
        at=at.isoformat(),
    )


# ---------------------------------------------------------------- who looked (F9)


def record_disclosure_read(session: Session, *, data: DisclosureRead) -> None:
    """Zone B showed a track's disclosure to a case worker: keep it for the person (once).

    A read of an unknown track, or one by another agency than the track's, is ignored with an
    id-only log line: it cannot belong to any referral.
    """
    if repository.get_access_log_entry(session, read_id=data.read_id) is not None:
        return
    track = repository.get_track(session, track_id=data.track_id)
    if track is None or track.agency != data.agency:
        log.warning(
            "disclosure read %s of an unknown track or another agency; ignored", data.read_id
        )
        return
    repository.save(
        session,
        AccessLogEntry(
            read_id=data.read_id,
            track_id=track.track_id,
            referral_id=track.referral_id,
            track=track.track,
            role=data.role,
            agency=data.agency,
            office=data.office,
            categories=sorted(c.value for c in data.categories),
            read_at=data.at,
        ),
    )


def read_access_log(
    session: Session, *, principal: Principal, referral_id: uuid.UUID, offset: int, limit: int
) -> tuple[list[AccessLogEntryPublic], int]:
    """Who in the second line read which categories of a referral's disclosures, and when:
    what the caseworker shows the person (F9). The NGO's own referral only (F7)."""
    referral = _own_referral(session, principal=principal, referral_id=referral_id)
    rows, count = repository.access_log(
        session, referral_id=referral.referral_id, offset=offset, limit=limit
    )
    record_audit(
        session,
        service=SERVICE,
        action="read",
        actor=principal,
        resource_type="access-log",
        resource_id=str(referral.referral_id),
        referral_id=str(referral.referral_id),
        count=count,
    )
    return [AccessLogEntryPublic.model_validate(r, from_attributes=True) for r in rows], count


# ---------------------------------------------------------------- step-up requests (F5)


def record_disclosure_request(session: Session, *, data: DisclosureRequested) -> None:
    """Zone B asks for more categories of one track: keep it for the NGO (once per request).

    The request names only the track; the bridge knows whose it is. Nothing is disclosed here:
    only a new consent does that (F0).
    """
    if repository.get_disclosure_request(session, request_id=data.request_id) is not None:
        return
    track = repository.get_track(session, track_id=data.track_id)
    if track is None or track.referral is None:
        log.warning("disclosure request for an unknown track; ignored")
        return
    categories = sorted(c.value for c in data.categories)
    row = DisclosureRequest(
        request_id=data.request_id,
        track_id=track.track_id,
        referral_id=track.referral_id,
        org=track.referral.org,
        client_ref=track.referral.client_ref,
        agency=track.agency,
        track=track.track,
        categories=categories,
        reason=data.reason,
        created_at=data.at or utcnow(),
    )
    repository.save(session, row)
    record_audit(
        session,
        service=SERVICE,
        action="create",
        actor=None,
        resource_type="disclosure-request",
        resource_id=row.request_id,
        track_id=str(track.track_id),
        referral_id=str(track.referral_id),
        agency=track.agency,
        categories=categories,
        reason=row.reason,
    )


def _request_view(row: DisclosureRequest) -> DisclosureRequestPublic:
    return DisclosureRequestPublic.model_validate(row, from_attributes=True)


def list_disclosure_requests(
    session: Session,
    *,
    principal: Principal,
    status: DisclosureRequestStatus | None,
    offset: int,
    limit: int,
) -> tuple[list[DisclosureRequestPublic], int]:
    """The step-up requests for the caller's org's clients, newest first (F7)."""
    rows, count = repository.list_disclosure_requests(
        session,
        org=principal.org or "",
        status=status.value if status else None,
        offset=offset,
        limit=limit,
    )
    record_audit(
        session,
        service=SERVICE,
        action="search",
        actor=principal,
        resource_type="disclosure-request",
        resource_id=principal.org or "",
        status=status.value if status else None,
        request_ids=[r.request_id for r in rows],
    )
    return [_request_view(r) for r in rows], count


def read_disclosure_request(
    session: Session, *, principal: Principal, request_id: str
) -> DisclosureRequestPublic:
    """One step-up request for a client of the caller's org; another org's is none (F7)."""
    row = repository.get_own_disclosure_request(
        session, org=principal.org or "", request_id=request_id
    )
    if row is None:
        raise NotFound(f"No disclosure request {request_id} in your organisation.")
    return _request_view(row)


def refuse_disclosure_request(
    session: Session, *, principal: Principal, request_id: str, body: DisclosureRefuse
) -> DisclosureRequestPublic:
    """The NGO refuses a pending request; zone B hears it by track id (409 unless pending)."""
    row = repository.get_own_disclosure_request(
        session, org=principal.org or "", request_id=request_id
    )
    if row is None:
        raise NotFound(f"No disclosure request {request_id} in your organisation.")
    now = utcnow()
    reason = body.reason.value if body.reason else None
    if not repository.decide_disclosure_request(
        session,
        row=row,
        status=DisclosureRequestStatus.REFUSED.value,
        at=now,
        refuse_reason=reason,
    ):
        raise Conflict(
            f"The disclosure request is {row.status}, not pending.",
            slug="disclosure-request-decided",
        )
    add_event(
        session,
        new_event(
            source=SOURCE,
            type=DISCLOSURE_REFUSED,
            subject=str(row.track_id),
            request_id=row.request_id,
            track_id=str(row.track_id),
            at=now.isoformat(),
        ),
    )
    record_audit(
        session,
        service=SERVICE,
        action="refuse",
        actor=principal,
        resource_type="disclosure-request",
        resource_id=row.request_id,
        track_id=str(row.track_id),
        referral_id=str(row.referral_id),
        agency=row.agency,
        categories=list(row.categories),
        reason=reason,
    )
    return _request_view(row)


def _release_step_ups(
    session: Session, *, consent: ConsentView, fetch_disclosure: Fetcher, consents: ConsentSource
) -> None:
    """Release every pending step-up request a new grant covers (F5), all or nothing.

    For each pending request of this client and agency on an open track whose categories the
    consent all grants (and which permits referral, F0): the package of exactly the consent's
    categories is sealed under the consent's key and bound to the track, the track moves under
    the consent (so its withdrawal cancels the track and shreds the package, F4), and zone B
    gets the package. If intake does not answer, this raises: the consumer retries the whole
    grant, and nothing is half done.
    """
    try:
        agency = Agency(consent.recipient)
    except ValueError:
        return
    now = utcnow()
    if not domain.consent_permits_referral(
        consent, org=consent.org, client_ref=consent.client_ref, agency=agency, now=now
    ):
        return
    covered: list[tuple[DisclosureRequest, ReferralTrack]] = []
    for row in repository.pending_requests_for(
        session, org=consent.org, client_ref=consent.client_ref, agency=agency.value
    ):
        track = repository.get_track(session, track_id=row.track_id)
        if track is None or not domain.is_open(track.status):
            continue
        if track.consent_id != consent.consent_id and domain.consent_covers(
            row.categories, consent
        ):
            covered.append((row, track))
    if not covered:
        return
    # F0: the grant may have been withdrawn since it was announced; release nothing then.
    answer = consents.status([consent.consent_id])
    current = {c.consent_id: c for c in answer.consents}.get(consent.consent_id)
    if current is None or not domain.consent_permits_referral(
        current, org=consent.org, client_ref=consent.client_ref, agency=agency, now=now
    ):
        return
    categories = domain.disclosed_categories(consent.categories)
    # In memory only: it leaves sealed in the released events, never stored in plaintext.
    package = domain.package_for(
        categories, fetch_disclosure(consent.client_ref, consent.org, categories)
    )
    # The consent row was just written in this transaction, so a withdrawal applied by another
    # replica waits for this commit and then finds the moved tracks and destroys the key (F4).
    key_id, key = _data_key(session, consent=consent)
    for row, track in covered:
        previous_consent = track.consent_id
        if not repository.move_track_consent(
            session, track=track, expected=previous_consent, consent_id=consent.consent_id
        ):
            raise Conflict("The track changed meanwhile; reload it.", slug="track-changed")
        if not repository.decide_disclosure_request(
            session,
            row=row,
            status=DisclosureRequestStatus.RELEASED.value,
            at=now,
            consent_id=consent.consent_id,
        ):
            raise Conflict("The request changed meanwhile.", slug="disclosure-request-decided")
        sealed = crypto.seal(package, key=key, aad=str(track.track_id))
        add_event(
            session,
            new_event(
                source=SOURCE,
                type=DISCLOSURE_RELEASED,
                subject=str(track.track_id),
                request_id=row.request_id,
                track_id=str(track.track_id),
                disclosure={
                    "categories": categories,
                    "key_id": key_id,
                    "nonce": sealed.nonce,
                    "ciphertext": sealed.ciphertext,
                },
                at=now.isoformat(),
            ),
        )
        # F2: every disclosure is an audit record: to whom, under which consent, which categories.
        _audit_track(
            session,
            track,
            action="disclose",
            request_id=row.request_id,
            consent_id=consent.consent_id,
            previous_consent_id=previous_consent,
            key_id=key_id,
            categories=categories,
            purpose="referral",
        )


# ---------------------------------------------------------------- referrals (API)


def create_referral(
    session: Session,
    *,
    principal: Principal,
    body: ReferralCreate,
    offices: Mapping[str, Mapping[str, domain.OfficeFacts]],
    default_office: Mapping[str, str],
    fetch_disclosure: Fetcher,
    consents: ConsentSource,
) -> ReferralPublic:
    """Refer a client for one or both tracks.

    F0: every track needs an active `referral` consent for its agency; if one is missing the
    whole request is refused and nothing is stored or routed. The consents are the consent
    service's own, asked now: a grant it answered `201` a moment ago counts, a withdrawal it
    answered `200` a moment ago refuses. If it does not answer, the referral is refused (503).
    F2: intake is asked once for what the chosen consents grant together; each track's package
    holds exactly what its own agency's consent grants. If intake cannot answer, nothing is stored.
    """
    org = principal.org or ""
    tracks = sorted(body.tracks)  # one stable order for the response, the events and the audit
    agencies = domain.agencies_for(tracks)
    answer = consents.active(body.client_ref, org)
    if not answer.client_known:
        raise NotFound(f"No client {body.client_ref!r} in your organisation.")
    now = utcnow()
    chosen, missing = domain.choose_consents(
        agencies, answer.consents, org=org, client_ref=body.client_ref, now=now
    )
    if missing:
        raise _consent_missing(
            client_ref=body.client_ref, missing=missing, tracks=tracks, answer=answer
        )

    union = domain.union_of_categories(chosen.values())
    disclosed = fetch_disclosure(body.client_ref, org, union) if union else {}
    categories = {a: domain.disclosed_categories(chosen[a].categories) for a in agencies}
    # In memory only: the packages leave sealed in the routed events, never stored in plaintext.
    packages = {a: domain.package_for(categories[a], disclosed) for a in agencies}

    # The writes start here, after both calls: the consents the tracks go under enter the
    # projection (if its stream has not brought them yet), locked until commit and checked again.
    views = _lock_and_check_again(
        session, chosen=chosen, org=org, client_ref=body.client_ref, now=now, answer=answer
    )
    referral = Referral(
        org=org,
        client_ref=body.client_ref,
        urgency=body.urgency.value,
        note=body.note,
        created_by=principal.sub,
        created_at=now,
    )
    referral.tracks = [
        ReferralTrack(
            # F5: a fresh id per referral and agency, so ICAM and Fedasil share no identifier.
            track_id=uuid.uuid4(),
            referral_id=referral.referral_id,
            track=track.value,
            agency=agency.value,
            office=domain.route_office(
                agency,
                categories=categories[agency],
                package=packages[agency],
                offices=offices,
                default_office=default_office,
            ),
            consent_id=views[agency].consent_id,
            status_changed_at=now,
            created_at=now,
        )
        for track, agency in zip(tracks, agencies, strict=True)
    ]
    for row in referral.tracks:
        row.history = [TrackStatusEntry(track_id=row.track_id, status=row.status, at=now)]
    repository.add_referral(session, referral=referral)

    _record_consent_decisions(
        session, principal=principal, chosen=views, client_ref=body.client_ref, answer=answer
    )
    keys = {agency: _data_key(session, consent=views[agency]) for agency in agencies}
    for track in referral.tracks:
        agency = Agency(track.agency)
        consent = views[agency]
        key_id, key = keys[agency]
        # F2, F4: the package travels sealed under its consent's key and bound to this track;
        # the plaintext is in no event, outbox row or table.
        sealed = crypto.seal(packages[agency], key=key, aad=str(track.track_id))
        # F5: zone B gets the track id, codes, the office and the sealed package, never
        # referral_id, client_ref, note or consent_id.
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
                purposes=sorted(consent.purposes),
                disclosure={
                    "categories": categories[agency],
                    "key_id": key_id,
                    "nonce": sealed.nonce,
                    "ciphertext": sealed.ciphertext,
                },
            ),
        )
        # F2: every disclosure is an audit record: to whom, under which consent, which categories.
        _audit_track(
            session,
            track,
            action="disclose",
            actor=principal,
            consent_id=consent.consent_id,
            key_id=key_id,
            categories=categories[agency],
            purpose="referral",
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
    return _view(session, referral)


def _lock_and_check_again(
    session: Session,
    *,
    chosen: Mapping[Agency, ConsentFacts],
    org: str,
    client_ref: str,
    now: datetime,
    answer: ConsentsAnswer,
) -> dict[Agency, ConsentView]:
    """The projection rows of the chosen consents, added if the stream has not brought them yet,
    held until commit and checked again (F0, F4).

    A withdrawal the bridge applied while this referral was being built (the consent service
    or intake was being asked) either came first, and the referral is refused, or waits for this
    commit and then cancels the new tracks and destroys the key. A row added here never
    revives a withdrawn consent: a withdrawn row is kept as it is, and refuses.
    """
    for consent in chosen.values():
        repository.adopt_consent(session, view=_view_of(consent))
    locked = {
        row.consent_id: row
        for row in repository.lock_consents(
            session, consent_ids=[c.consent_id for c in chosen.values()]
        )
    }
    views: dict[Agency, ConsentView] = {}
    gone: list[Agency] = []
    for agency, consent in chosen.items():
        view = locked.get(consent.consent_id)
        if view is None or not domain.consent_permits_referral(
            view, org=org, client_ref=client_ref, agency=agency, now=now
        ):
            gone.append(agency)
        else:
            views[agency] = view
    if gone:
        raise _consent_missing(client_ref=client_ref, missing=gone, tracks=None, answer=answer)
    return views


def _view_of(consent: ConsentFacts) -> ConsentView:
    """A projection row for a consent the consent service holds active now."""
    return ConsentView(
        consent_id=consent.consent_id,
        client_ref=consent.client_ref,
        org=consent.org,
        recipient=consent.recipient,
        purposes=sorted(set(consent.purposes)),
        categories=sorted(set(consent.categories)),
        valid_from=consent.valid_from,
        valid_until=consent.valid_until,
        status=ConsentStatus.ACTIVE.value,
    )


def _record_consent_decisions(
    session: Session,
    *,
    principal: Principal,
    chosen: Mapping[Agency, ConsentView],
    client_ref: str,
    answer: ConsentsAnswer,
) -> None:
    """F0: the permitting consent decision, one per agency (the denying one is
    `_consent_missing`), with the moment of the consent service's state it was taken from."""
    for agency, consent in sorted(chosen.items()):
        record_audit(
            session,
            service=SERVICE,
            action="consent-decision",
            actor=principal,
            resource_type="consent",
            resource_id=consent.consent_id,
            consent_id=consent.consent_id,
            client_ref=client_ref,
            agency=agency.value,
            purpose="referral",
            categories=sorted(consent.categories),
            consent_checked_at=answer.checked_at.isoformat(),
        )


def _consent_missing(
    *, client_ref: str, missing: list[Agency], tracks: list[Track] | None, answer: ConsentsAnswer
) -> Invalid:
    """F0: the refusal of a referral without consent, and its denying consent decision (the
    kernel records it in a transaction of its own, since the request's rolls back)."""
    agencies = [a.value for a in missing]
    return Invalid(
        "The client has no active consent to refer to: " + ", ".join(agencies) + ".",
        slug="consent-missing",
        missing_consent=agencies,
        audit={
            "action": "consent-decision",
            "resource_type": "client",
            "resource_id": client_ref,
            "client_ref": client_ref,
            "agencies": agencies,
            "tracks": [t.value for t in tracks] if tracks else None,
            "purpose": "referral",
            "consent_checked_at": answer.checked_at.isoformat(),
        },
    )


def _data_key(session: Session, *, consent: ConsentView) -> tuple[str, bytes]:
    """The consent's data key (id, bytes), made at its first referral (the consent is locked
    and active)."""
    key = repository.ensure_data_key(
        session, consent_id=consent.consent_id, key_id=str(uuid.uuid4()), key=crypto.new_data_key()
    )
    if key.key_bytes is None:
        # Only a withdrawn consent's key is destroyed, and this one was just checked as active.
        raise Conflict("The consent's key was destroyed meanwhile.", slug="consent-withdrawn")
    return key.key_id, key.key_bytes


def _own_referral(session: Session, *, principal: Principal, referral_id: uuid.UUID) -> Referral:
    """A referral of the caller's org; another org's is indistinguishable from none (F7)."""
    referral = repository.get_referral(session, org=principal.org or "", referral_id=referral_id)
    if referral is None:
        raise NotFound(f"No referral {referral_id} in your organisation.")
    return referral


def read_referral(
    session: Session, *, principal: Principal, referral_id: uuid.UUID
) -> ReferralPublic:
    """A referral of the caller's org with what the NGO may see of its tracks (F6, F7)."""
    referral = _own_referral(session, principal=principal, referral_id=referral_id)
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
    return _view(session, referral)


def list_referrals(
    session: Session, *, principal: Principal, client_ref: str, offset: int, limit: int
) -> tuple[list[ReferralPublic], int]:
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
    return _views(session, rows), count


def cancel_referral(
    session: Session, *, principal: Principal, referral_id: uuid.UUID, body: ReferralCancel
) -> ReferralPublic:
    """The requester cancels every open track; zone B hears a `track.cancelled` per track.

    The reason is a code and travels; the note stays in the bridge (F8). 409 when no track is open.
    """
    referral = _own_referral(session, principal=principal, referral_id=referral_id)
    open_tracks = [t for t in referral.tracks if domain.is_open(t.status)]
    if not open_tracks:
        raise Conflict("Every track of this referral is already closed.", slug="referral-closed")
    now = utcnow()
    reason = body.reason.value
    previous: list[str] = []
    for track in open_tracks:
        previous.append(
            _move(session, track, status=TaskStatus.CANCELLED, reason=reason, outcome=None, at=now)
        )
        add_event(session, _track_cancelled(track, reason=reason, at=now))
    referral.cancel_reason = reason
    referral.cancel_note = body.note
    referral.cancelled_by = principal.sub
    referral.cancelled_at = now
    repository.save(session, referral)
    record_audit(
        session,
        service=SERVICE,
        action="cancel",
        actor=principal,
        resource_type="referral",
        resource_id=str(referral.referral_id),
        track_ids=[str(t.track_id) for t in open_tracks],
        agencies=[t.agency for t in open_tracks],
        previous_statuses=previous,
        reason=reason,
    )
    return _view(session, referral)


# ---------------------------------------------------------------- what the NGO sees (F6)


def _view(session: Session, referral: Referral) -> ReferralPublic:
    return _views(session, [referral])[0]


def _views(session: Session, referrals: list[Referral]) -> list[ReferralPublic]:
    """Referrals as the NGO sees them: status always; reason, outcome and progress only while the
    consent the track went under is active and grants `feedback` (F6)."""
    consents = repository.consents_by_id(
        session, consent_ids=[t.consent_id for r in referrals for t in r.tracks]
    )
    now = utcnow()

    def feedback(track: ReferralTrack) -> bool:
        return domain.consent_allows_feedback(consents.get(track.consent_id), now=now)

    return [
        ReferralPublic(
            referral_id=r.referral_id,
            client_ref=r.client_ref,
            urgency=r.urgency,
            note=r.note,
            created_at=r.created_at,
            cancel_reason=r.cancel_reason,
            cancel_note=r.cancel_note,
            cancelled_at=r.cancelled_at,
            tracks=[_track_view(t, feedback=feedback(t)) for t in r.tracks],
        )
        for r in referrals
    ]


def _track_view(track: ReferralTrack, *, feedback: bool) -> TrackPublic:
    shown = {
        "status_reason": track.status_reason,
        "outcome": track.outcome,
        "outcome_category": domain.outcome_category(track.outcome),
        "progress": [
            TrackProgressPublic(status=e.status, reason=e.reason, outcome=e.outcome, at=e.at)
            for e in track.history
        ],
    }
    return TrackPublic(
        track_id=track.track_id,
        track=track.track,
        agency=track.agency,
        office=track.office,
        status=track.status,
        business_status=BusinessStatus(track.business_status),
        status_changed_at=track.status_changed_at,
        feedback=feedback,
        **(shown if feedback else {}),
    )


# ---------------------------------------------------------------- the key call (F4)


def release_data_key(
    session: Session, *, request: DisclosureKeyRequest, consents: ConsentSource
) -> dict[str, str]:
    """The data key a routed track's package is sealed under, for zone B to open it in memory.

    404 for an unknown track or key, or a key the track was not routed under; 409
    `disclosure-withdrawn` once the track's consent is withdrawn (its key destroyed, F4) — as
    the consent service holds it now, also before the bridge has heard of the withdrawal.
    Every release is an audit record (ids only): a witness, outside zone B, of each read (F9).
    """
    track = repository.get_track(session, track_id=request.track_id)
    key = repository.get_data_key(session, key_id=request.key_id)
    decision = domain.judge_key_request(
        track_consent_id=track.consent_id if track else None,
        key=key,
        consent=repository.get_consent(session, consent_id=track.consent_id) if track else None,
        now=utcnow(),
    )
    if decision is domain.KeyDecision.RELEASE and track is not None:
        # F0: the projection may not have heard of a withdrawal yet; the consent service has.
        decision = domain.judge_key_request(
            track_consent_id=track.consent_id,
            key=key,
            consent=_current(consents, track.consent_id),
            now=utcnow(),
        )
    if decision is domain.KeyDecision.UNKNOWN or track is None or key is None:
        raise NotFound("No disclosure key for this track.")
    if decision is domain.KeyDecision.WITHDRAWN or key.key_bytes is None:
        raise Conflict(
            "The consent this disclosure went under was withdrawn.", slug=DISCLOSURE_WITHDRAWN
        )
    record_audit(
        session,
        service=SERVICE,
        action="release",
        actor=None,
        resource_type="disclosure-key",
        resource_id=key.key_id,
        key_id=key.key_id,
        track_id=str(track.track_id),
        consent_id=track.consent_id,
        agency=track.agency,
        office=track.office,
    )
    return {"key": crypto.encode_key(key.key_bytes)}


def release_joint_review(
    session: Session, *, request: JointReviewRequest, consents: ConsentSource
) -> dict[str, list[str]]:
    """The other agency's tracks for the same person that this track's case may be reviewed
    with: only while both consents grant `joint_review` (F5, F6); none otherwise.

    Asked on every read of a case, never cached in zone B: withdrawing either consent unlinks
    the two cases at the next read. A link handed out is an audit record (ids only).
    """
    track = repository.get_track(session, track_id=request.track_id)
    if track is None or track.referral is None:
        raise NotFound("No such track.")
    referral = track.referral
    candidates = [
        candidate
        for agency in Agency
        if agency.value != track.agency
        for candidate in repository.client_tracks(
            session, org=referral.org, client_ref=referral.client_ref, agency=agency.value
        )
    ]
    projected = repository.consents_by_id(
        session, consent_ids=[track.consent_id, *(c.consent_id for c in candidates)]
    )
    partners = domain.joint_review_partners(track, candidates, projected, now=utcnow())
    if partners:
        # F0: both sides as the consent service holds them now, not as the stream told it.
        current = consents.status(sorted({track.consent_id, *(p.consent_id for p in partners)}))
        partners = domain.joint_review_partners(
            track, partners, {c.consent_id: c for c in current.consents}, now=utcnow()
        )
    linked = [str(p.track_id) for p in partners]
    if linked:
        _audit_track(
            session,
            track,
            action="disclose",
            resource_type="joint-review",
            consent_id=track.consent_id,
            linked_track_ids=linked,
            linked_consent_ids=sorted({p.consent_id for p in partners}),
            purpose="joint_review",
        )
    return {"linked_track_ids": linked}


def _current(consents: ConsentSource, consent_id: str) -> ConsentFacts | None:
    """One consent as the consent service holds it now; None if it does not know it."""
    answer = consents.status([consent_id])
    return next((c for c in answer.consents if c.consent_id == consent_id), None)


def record_call_refusal(
    session: Session,
    *,
    action: str,
    resource_type: str,
    resource_id: str,
    status: int,
    slug: str,
    **ids: str,
) -> None:
    """A refused call from zone B is an audit record too (every denied access is): ids and codes."""
    record_audit(
        session,
        service=SERVICE,
        action=action,
        actor=None,
        resource_type=resource_type,
        resource_id=resource_id,
        outcome="denied",
        status=status,
        reason=slug,
        **ids,
    )
