"""All consent queries. Every read of a consent is scoped to the caller's org (F7)."""

import uuid
from datetime import datetime

from sqlalchemy import func, or_, update
from sqlmodel import Session, select

from twoline_consent.models import Consent, KnownClient


def get_known_client(session: Session, *, client_ref: str) -> KnownClient | None:
    return session.get(KnownClient, client_ref)


def get_consent(session: Session, *, org: str, consent_id: uuid.UUID) -> Consent | None:
    return session.exec(
        select(Consent).where(Consent.org == org, Consent.consent_id == consent_id)
    ).first()


def list_consents(
    session: Session, *, org: str, client_ref: str, offset: int, limit: int
) -> tuple[list[Consent], int]:
    query = select(Consent).where(Consent.org == org, Consent.client_ref == client_ref)
    count = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(Consent.created_at.desc(), Consent.consent_id).offset(offset).limit(limit)  # type: ignore[attr-defined]
    ).all()
    return list(rows), count


def active_consents_of_client(
    session: Session, *, org: str, client_ref: str, now: datetime, limit: int
) -> list[Consent]:
    """One client's grants in one org that are neither withdrawn nor expired at `now`, newest
    first."""
    return list(
        session.exec(
            select(Consent)
            .where(
                Consent.org == org,
                Consent.client_ref == client_ref,
                Consent.withdrawn_at.is_(None),  # type: ignore[union-attr]
                or_(Consent.valid_until.is_(None), Consent.valid_until > now),  # type: ignore[union-attr,operator]
            )
            .order_by(Consent.created_at.desc(), Consent.consent_id)  # type: ignore[attr-defined]
            .limit(limit)
        ).all()
    )


def consents_by_id(session: Session, *, consent_ids: list[uuid.UUID]) -> list[Consent]:
    return list(
        session.exec(
            select(Consent).where(Consent.consent_id.in_(sorted(set(consent_ids))))  # type: ignore[attr-defined]
        ).all()
    )


def add_consent(session: Session, *, consent: Consent) -> Consent:
    session.add(consent)
    session.flush()
    return consent


def mark_withdrawn(
    session: Session, *, consent: Consent, at: datetime, by: str, reason: str | None
) -> bool:
    """Record the withdrawal unless one is already recorded; False if another request was first.

    The condition is in the UPDATE itself: two concurrent withdrawals cannot both succeed, so the
    withdrawal (and its event) is recorded exactly once.
    """
    result = session.exec(  # type: ignore[call-overload]
        update(Consent)
        .where(Consent.consent_id == consent.consent_id)
        .where(Consent.withdrawn_at.is_(None))  # type: ignore[union-attr]
        .values(withdrawn_at=at, withdrawn_by=by, withdrawal_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.refresh(consent)
    return True
