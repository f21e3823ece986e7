"""All referral queries. Every read of a referral is scoped to the caller's org (F7)."""

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from twoline_referral.models import (
    AccessLogEntry,
    ConsentView,
    DataKey,
    DisclosureRequest,
    DisclosureRequestStatus,
    Referral,
    ReferralTrack,
    TrackStatusEntry,
)
from twoline_shared.codes import ConsentStatus
from twoline_shared.db import insert_or_ignore, utcnow


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


def adopt_consent(session: Session, *, view: ConsentView) -> None:
    """Add a consent the projection has not heard of yet; a row it holds stays as it is (a
    withdrawn one stays withdrawn, and its grant event finds this one)."""
    insert_or_ignore(session, view)


def lock_consents(session: Session, *, consent_ids: Iterable[str]) -> list[ConsentView]:
    """The consents, re-read and locked until the transaction ends (Postgres `FOR UPDATE`).

    A referral holds the consents it goes under while it routes, so a withdrawal being applied
    meanwhile either comes first (and the referral sees it) or waits and then finds the new
    tracks to cancel (F0, F4). SQLite has one writer at a time and needs no lock.
    """
    ids = sorted(set(consent_ids))
    if not ids:
        return []
    return list(
        session.exec(
            select(ConsentView)
            .where(ConsentView.consent_id.in_(ids))  # type: ignore[attr-defined]
            .order_by(ConsentView.consent_id)  # one lock order for every referral: no deadlock
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()
    )


def save(
    session: Session,
    row: AccessLogEntry
    | ConsentView
    | Referral
    | ReferralTrack
    | TrackStatusEntry
    | DisclosureRequest,
) -> None:
    session.add(row)
    session.flush()


def get_referral(session: Session, *, org: str, referral_id: uuid.UUID) -> Referral | None:
    return session.exec(
        select(Referral).where(Referral.org == org, Referral.referral_id == referral_id)
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
    """Insert a referral with its tracks."""
    session.add(referral)
    session.flush()
    return referral


def get_track(session: Session, *, track_id: uuid.UUID) -> ReferralTrack | None:
    return session.get(ReferralTrack, track_id)


def client_tracks(
    session: Session, *, org: str, client_ref: str, agency: str
) -> list[ReferralTrack]:
    """Every track of one client of one org to one agency, newest first (for joint review)."""
    return list(
        session.exec(
            select(ReferralTrack)
            .join(Referral)
            .where(
                Referral.org == org,
                Referral.client_ref == client_ref,
                ReferralTrack.agency == agency,
            )
            .order_by(ReferralTrack.created_at.desc(), ReferralTrack.track_id)  # type: ignore[attr-defined]
        ).all()
    )


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


# ---------------------------------------------------------------- data keys (F4)


def get_data_key(session: Session, *, key_id: str) -> DataKey | None:
    return session.get(DataKey, key_id)


def data_key_of(session: Session, *, consent_id: str) -> DataKey | None:
    return session.exec(select(DataKey).where(DataKey.consent_id == consent_id)).first()


def ensure_data_key(session: Session, *, consent_id: str, key_id: str, key: bytes) -> DataKey:
    """The consent's data key; `key` under `key_id` becomes it if the consent has none yet.

    `INSERT ... ON CONFLICT DO NOTHING` on the unique consent_id: of two referrals creating the
    first key of one consent at once, both end up with the same key.
    """
    existing = data_key_of(session, consent_id=consent_id)
    if existing is not None:
        return existing
    dialect = session.connection().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.exec(  # type: ignore[call-overload]
        insert(DataKey)
        .values(key_id=key_id, consent_id=consent_id, key_bytes=key, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["consent_id"])
    )
    created = data_key_of(session, consent_id=consent_id)
    if created is None:  # pragma: no cover - the insert or a concurrent one made it
        raise RuntimeError("the data key was neither created nor found")
    return created


def destroy_data_key(session: Session, *, consent_id: str, at: datetime) -> DataKey | None:
    """Crypto-shredding: drop the consent's key bytes (F4); the key row if this destroyed it."""
    result = session.exec(  # type: ignore[call-overload]
        update(DataKey)
        .where(DataKey.consent_id == consent_id, DataKey.destroyed_at.is_(None))  # type: ignore[union-attr]
        .values(key_bytes=None, destroyed_at=at)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    destroyed = data_key_of(session, consent_id=consent_id)
    if destroyed is not None:
        session.refresh(destroyed)
    return destroyed


# ---------------------------------------------------------------- step-up requests (F5)


def get_access_log_entry(session: Session, *, read_id: str) -> AccessLogEntry | None:
    return session.get(AccessLogEntry, read_id)


def access_log(
    session: Session, *, referral_id: uuid.UUID, offset: int, limit: int
) -> tuple[list[AccessLogEntry], int]:
    """The reads of a referral's disclosures, oldest first."""
    query = select(AccessLogEntry).where(AccessLogEntry.referral_id == referral_id)
    count = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(AccessLogEntry.read_at, AccessLogEntry.read_id)  # type: ignore[arg-type]
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), count


def get_disclosure_request(session: Session, *, request_id: str) -> DisclosureRequest | None:
    return session.get(DisclosureRequest, request_id)


def get_own_disclosure_request(
    session: Session, *, org: str, request_id: str
) -> DisclosureRequest | None:
    return session.exec(
        select(DisclosureRequest).where(
            DisclosureRequest.org == org, DisclosureRequest.request_id == request_id
        )
    ).first()


def list_disclosure_requests(
    session: Session, *, org: str, status: str | None, offset: int, limit: int
) -> tuple[list[DisclosureRequest], int]:
    query = select(DisclosureRequest).where(DisclosureRequest.org == org)
    if status is not None:
        query = query.where(DisclosureRequest.status == status)
    count = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(DisclosureRequest.created_at.desc(), DisclosureRequest.request_id)  # type: ignore[attr-defined]
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), count


def pending_requests_for(
    session: Session, *, org: str, client_ref: str, agency: str
) -> list[DisclosureRequest]:
    """The pending step-up requests of one client for one agency, oldest first."""
    return list(
        session.exec(
            select(DisclosureRequest)
            .where(
                DisclosureRequest.org == org,
                DisclosureRequest.client_ref == client_ref,
                DisclosureRequest.agency == agency,
                DisclosureRequest.status == DisclosureRequestStatus.PENDING.value,
            )
            .order_by(DisclosureRequest.created_at, DisclosureRequest.request_id)  # type: ignore[arg-type]
        ).all()
    )


def decide_disclosure_request(
    session: Session, *, row: DisclosureRequest, status: str, at: datetime, **values: object
) -> bool:
    """Move a pending request to `status`; False if it was decided meanwhile."""
    result = session.exec(  # type: ignore[call-overload]
        update(DisclosureRequest)
        .where(
            DisclosureRequest.request_id == row.request_id,  # type: ignore[arg-type]
            DisclosureRequest.status == DisclosureRequestStatus.PENDING.value,  # type: ignore[arg-type]
        )
        .values(status=status, decided_at=at, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.refresh(row)
    return True


def move_track_consent(
    session: Session, *, track: ReferralTrack, expected: str, consent_id: str
) -> bool:
    """Put a track under another consent (a step-up release); False if it moved meanwhile."""
    result = session.exec(  # type: ignore[call-overload]
        update(ReferralTrack)
        .where(
            ReferralTrack.track_id == track.track_id,  # type: ignore[arg-type]
            ReferralTrack.consent_id == expected,  # type: ignore[arg-type]
        )
        .values(consent_id=consent_id)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.refresh(track)
    return True
