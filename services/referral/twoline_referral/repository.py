"""All referral queries. Every read of a referral is scoped to the caller's org (F7)."""

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, update
from sqlmodel import Session, select

from twoline_referral.models import (
    ConsentView,
    KnownClient,
    Referral,
    ReferralTrack,
    TrackStatusEntry,
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


def consents_by_id(session: Session, *, consent_ids: Iterable[str]) -> dict[str, ConsentView]:
    """The consents tracks went under, whatever their status now (for the feedback gate)."""
    ids = sorted(set(consent_ids))
    if not ids:
        return {}
    rows = session.exec(select(ConsentView).where(ConsentView.consent_id.in_(ids))).all()  # type: ignore[attr-defined]
    return {row.consent_id: row for row in rows}


def save(
    session: Session, row: KnownClient | ConsentView | Referral | ReferralTrack | TrackStatusEntry
) -> None:
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


def tracks_under_consent(session: Session, *, consent_id: str) -> list[ReferralTrack]:
    """Every track that went under one consent, terminal or not, oldest first."""
    return list(
        session.exec(
            select(ReferralTrack)
            .where(ReferralTrack.consent_id == consent_id)
            .order_by(ReferralTrack.created_at, ReferralTrack.track_id)  # type: ignore[arg-type]
        ).all()
    )


def move_track(
    session: Session,
    *,
    track: ReferralTrack,
    expected: str,
    status: str,
    reason: str | None,
    outcome: str | None,
    business_status: str,
    at: datetime,
) -> bool:
    """Move `track` from `expected` to `status` and log it in its history; False if it is no longer
    in `expected` (a status event from zone B and the NGO's cancel cannot both win)."""
    result = session.exec(  # type: ignore[call-overload]
        update(ReferralTrack)
        .where(ReferralTrack.track_id == track.track_id, ReferralTrack.status == expected)  # type: ignore[arg-type]
        .values(
            status=status,
            status_reason=reason,
            outcome=outcome,
            business_status=business_status,
            status_changed_at=at,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.refresh(track)
    track.history.append(
        TrackStatusEntry(
            track_id=track.track_id, status=status, reason=reason, outcome=outcome, at=at
        )
    )
    session.flush()
    return True
