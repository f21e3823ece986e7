"""Consent use cases: load, apply the rule, save, queue events and audit records."""

import logging
import uuid
from datetime import datetime

from sqlmodel import Session

from twoline_consent import domain, repository
from twoline_consent.clients import ClientCheck
from twoline_consent.models import (
    MAX_ANSWERED,
    ActiveConsentsQuery,
    ClientRegistered,
    Consent,
    ConsentCreate,
    ConsentFacts,
    ConsentPublic,
    ConsentReceipt,
    ConsentsAnswer,
    ConsentStatusQuery,
    KnownClient,
)
from twoline_shared.audit import record_audit
from twoline_shared.auth import Principal
from twoline_shared.codes import ConsentStatus
from twoline_shared.db import insert_or_ignore, utcnow
from twoline_shared.errors import Conflict, NotFound
from twoline_shared.events import new_event
from twoline_shared.outbox import add_event

SOURCE = "twoline/consent"

log = logging.getLogger("twoline.consent")


def record_client(session: Session, *, data: ClientRegistered) -> None:
    """Remember which org owns a client; a repeated registration changes nothing."""
    # Not a get-then-add: a grant that asked intake may be remembering the same client now.
    if insert_or_ignore(session, KnownClient(client_ref=data.client_ref, org=data.org)):
        return
    known = repository.get_known_client(session, client_ref=data.client_ref)
    if known is not None and known.org != data.org:
        # A client never changes org: keep the first owner, so no event can hand a client to
        # another NGO (F7).
        log.warning("client.registered names another org for a known client; ignored")


def holds_client(session: Session, *, client_ref: str, org: str, confirm: ClientCheck) -> bool:
    """Whether `org` holds the client, read your writes: what the service already learnt, and
    for a client it has not heard of yet, intake's own answer now (then remembered)."""
    known = repository.get_known_client(session, client_ref=client_ref)
    if known is not None:
        # A client never changes org, so what was learnt once stays true.
        return known.org == org
    if not confirm(client_ref, org):
        return False
    insert_or_ignore(session, KnownClient(client_ref=client_ref, org=org))
    return True


def grant_consent(
    session: Session, *, principal: Principal, data: ConsentCreate, confirm: ClientCheck
) -> Consent:
    """Record a grant for one client of the caller's org and one recipient agency."""
    org = principal.org or ""
    if not holds_client(session, client_ref=data.client_ref, org=org, confirm=confirm):
        # Another org's client is indistinguishable from no client at all (F7).
        raise NotFound(f"No client {data.client_ref!r} in your organisation.")
    consent = Consent.model_validate(
        data.model_dump(),
        update={
            "purposes": domain.canonical(data.purposes),
            "categories": domain.canonical(data.categories),
            "org": org,
            "obtained_by": principal.sub,
        },
    )
    repository.add_consent(session, consent=consent)
    add_event(
        session,
        new_event(
            source=SOURCE,
            type="firstline.consent.consent.granted",
            subject=str(consent.consent_id),
            consent_id=str(consent.consent_id),
            client_ref=consent.client_ref,
            org=consent.org,
            recipient=str(consent.recipient),
            purposes=domain.canonical(consent.purposes),
            categories=domain.canonical(consent.categories),
            valid_from=consent.created_at.isoformat(),
            valid_until=consent.valid_until.isoformat() if consent.valid_until else None,
        ),
    )
    _audit(session, action="create", principal=principal, consent=consent)
    return consent


def read_consent(session: Session, *, principal: Principal, consent_id: uuid.UUID) -> Consent:
    """One consent of the caller's org; the read is audited."""
    consent = _load(session, principal=principal, consent_id=consent_id)
    _audit(session, action="read", principal=principal, consent=consent)
    return consent


def list_consents(
    session: Session, *, principal: Principal, client_ref: str, offset: int, limit: int
) -> tuple[list[Consent], int]:
    """One client's consents in the caller's org, newest first; each one returned is audited."""
    rows, count = repository.list_consents(
        session, org=principal.org or "", client_ref=client_ref, offset=offset, limit=limit
    )
    for consent in rows:
        _audit(session, action="read", principal=principal, consent=consent)
    return rows, count


def withdraw_consent(
    session: Session, *, principal: Principal, consent_id: uuid.UUID, reason: str | None
) -> Consent:
    """Withdraw an active consent: recorded on the grant, announced by id only (F4)."""
    consent = _load(session, principal=principal, consent_id=consent_id)
    now = utcnow()
    domain.ensure_withdrawable(consent, now)
    if not repository.mark_withdrawn(
        session, consent=consent, at=now, by=principal.sub, reason=reason
    ):
        raise Conflict("The consent is already withdrawn.", slug="consent-inactive")
    add_event(
        session,
        new_event(
            source=SOURCE,
            type="firstline.consent.consent.withdrawn",
            subject=str(consent.consent_id),
            consent_id=str(consent.consent_id),
            client_ref=consent.client_ref,
            org=consent.org,
            recipient=str(consent.recipient),
            withdrawn_at=now.isoformat(),
        ),
    )
    # The reason is free text: it stays on the grant in zone A, never in the audit record (F8).
    _audit(session, action="withdraw", principal=principal, consent=consent)
    return consent


def consent_receipt(
    session: Session, *, principal: Principal, consent_id: uuid.UUID
) -> ConsentReceipt:
    """The receipt of one consent of the caller's org; reading it is audited."""
    consent = read_consent(session, principal=principal, consent_id=consent_id)
    return domain.receipt(consent, utcnow())


def active_consents(
    session: Session, *, query: ActiveConsentsQuery, confirm: ClientCheck
) -> ConsentsAnswer:
    """The bridge's consent check at the moment it decides a referral (F0): the client's
    consents in that org that are active now, and whether the client exists at all.

    Answered from this service's own table, never from a projection: a grant answered `201`
    is in it, and so is a withdrawal answered `200`.
    """
    checked_at = utcnow()  # before the read: every commit acknowledged before it is seen
    rows = repository.active_consents_of_client(
        session, org=query.org, client_ref=query.client_ref, now=checked_at, limit=MAX_ANSWERED
    )
    active = [c for c in rows if domain.status_at(c, checked_at) is ConsentStatus.ACTIVE]
    # A consent is only ever recorded for a client its org holds; without one, ask.
    known = bool(active) or holds_client(
        session, client_ref=query.client_ref, org=query.org, confirm=confirm
    )
    return ConsentsAnswer(
        checked_at=checked_at,
        client_known=known,
        consents=[_facts(c, checked_at) for c in active],
    )


def consent_status(session: Session, *, query: ConsentStatusQuery) -> ConsentsAnswer:
    """What some consents are now (active or inactive), for the bridge to decide on a release
    towards the second line (F0, F4); unknown ids are left out."""
    checked_at = utcnow()
    rows = repository.consents_by_id(session, consent_ids=query.consent_ids)
    return ConsentsAnswer(checked_at=checked_at, consents=[_facts(c, checked_at) for c in rows])


def _facts(consent: Consent, now: datetime) -> ConsentFacts:
    return ConsentFacts(
        consent_id=consent.consent_id,
        client_ref=consent.client_ref,
        org=consent.org,
        recipient=consent.recipient,
        purposes=domain.canonical(consent.purposes),
        categories=domain.canonical(consent.categories),
        valid_from=consent.created_at,
        valid_until=consent.valid_until,
        status=domain.status_at(consent, now),
        withdrawn_at=consent.withdrawn_at,
    )


def to_public(consent: Consent) -> ConsentPublic:
    """The API view, with the status as of now (expiry needs no background job)."""
    return ConsentPublic.model_validate(
        consent, update={"status": domain.status_at(consent, utcnow())}
    )


def _load(session: Session, *, principal: Principal, consent_id: uuid.UUID) -> Consent:
    consent = repository.get_consent(session, org=principal.org or "", consent_id=consent_id)
    if consent is None:
        raise NotFound(f"No consent {str(consent_id)!r} in your organisation.")
    return consent


def _audit(session: Session, *, action: str, principal: Principal, consent: Consent) -> None:
    record_audit(
        session,
        service="consent",
        action=action,
        actor=principal,
        resource_type="consent",
        resource_id=str(consent.consent_id),
        consent_id=str(consent.consent_id),
        recipient=str(consent.recipient),
        purposes=domain.canonical(consent.purposes),
        categories=domain.canonical(consent.categories),
    )
