"""All referral queries. Every read of a referral is scoped to the caller's org (F7)."""

import uuid

from sqlalchemy import func
from sqlmodel import Session, select

from twoline_referral.models import (
    ConsentView,
    KnownClient,
    Referral,
    ReferralTrack,
)
from twoline_shared.codes import ConsentStatus


def get_known_client(session: Session, *, client_ref: str) -> KnownClient | None:
    return session.get(KnownClient, client_ref)


def get_consent(session: Session, *, consent_id: str) -> ConsentView | None:
    return session.get(ConsentView, consent_id)


def active_consents(session: Session, *, org: str, client_ref: str) -> list[ConsentView]:
    """The client's active consents given through this org; the domain decides which permit what."""
    return list(
        session.exec(
            select(ConsentView).where(
                ConsentView.org == org,
                ConsentView.client_ref == client_ref,
                ConsentView.status == ConsentStatus.ACTIVE.value,
            )
        ).all()
    )


def save(session: Session, row: KnownClient | ConsentView | ReferralTrack) -> None:
    session.add(row)
    session.flush()


def get_referral(session: Session, *, org: str, referral_id: uuid.UUID) -> Referral | None:
    return session.exec(
        select(Referral).where(Referral.org == org, Referral.referral_id == referral_id)
    ).first()


def get_referral_by_key(session: Session, *, org: str, idempotency_key: str) -> Referral | None:
    return session.exec(
        select(Referral).where(Referral.org == org, Referral.idempotency_key == idempotency_key)
    ).first()


def list_referrals(
    session: Session, *, org: str, client_ref: str, offset: int, limit: int
) -> tuple[list[Referral], int]:
    query = select(Referral).where(Referral.org == org, Referral.client_ref == client_ref)
    count = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(Referral.created_at.desc(), Referral.referral_id)  # type: ignore[attr-defined]
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), count


def add_referral(session: Session, *, referral: Referral) -> Referral:
    """Insert a referral with its tracks; raises IntegrityError on a reused Idempotency-Key."""
    session.add(referral)
    session.flush()
    return referral


def get_track(session: Session, *, track_id: uuid.UUID) -> ReferralTrack | None:
    return session.get(ReferralTrack, track_id)
