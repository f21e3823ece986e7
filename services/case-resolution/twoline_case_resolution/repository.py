"""All case queries. Reads are scoped to the caller's agency and office (F7)."""

import hashlib
import uuid
from datetime import datetime
from typing import TypeVar

from sqlalchemy import case as when
from sqlalchemy import func, null, or_, text, update
from sqlmodel import Session, col, select

from twoline_case_resolution.domain import ACTIVE, DisclosureRequestStatus, ReturnStep
from twoline_case_resolution.models import (
    Case,
    CaseDecision,
    CaseDisclosureRequest,
    CaseOption,
    CaseOptionAssessment,
    CasePendingCancel,
    CaseReturnStep,
    CaseSession,
    DisclosureStatus,
)
from twoline_shared.codes import Outcome, StatusReason, TaskStatus, Urgency

WorkRow = TypeVar("WorkRow", CaseReturnStep, CaseSession, CaseDecision, CaseDisclosureRequest)


def lock_track(session: Session, *, track_id: str) -> None:
    """Hold `track_id` until the transaction ends: its routed and cancelled events apply in turn.

    On Postgres two replicas could otherwise each miss the row the other is writing (the case,
    the early cancel) and open the case with its package after a withdrawal (F4). SQLite needs
    no lock: it has one writer at a time, and a consumer writes its inbox row first.
    """
    if session.connection().dialect.name != "postgresql":
        return
    digest = hashlib.blake2b(track_id.encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    session.connection().execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def get_case_by_track(session: Session, *, track_id: str) -> Case | None:
    return session.exec(select(Case).where(Case.track_id == track_id)).first()


def cases_by_tracks(session: Session, *, track_ids: list[str]) -> list[Case]:
    """The cases zone B holds for these tracks, oldest routed first."""
    if not track_ids:
        return []
    return list(
        session.exec(
            select(Case)
            .where(Case.track_id.in_(track_ids))  # type: ignore[attr-defined]
            .order_by(Case.routed_at, Case.case_id)  # type: ignore[arg-type]
        ).all()
    )


def case_ref_taken(session: Session, *, case_ref: str) -> bool:
    return session.exec(select(Case.case_id).where(Case.case_ref == case_ref)).first() is not None


def add_case(session: Session, *, case: Case) -> Case:
    session.add(case)
    session.flush()
    return case


def get_visible_case(
    session: Session, *, case_id: uuid.UUID, agency: str, office: str, sub: str
) -> Case | None:
    """The case if it is the caller's agency's and in their office or assigned to them."""
    return session.exec(
        select(Case).where(
            Case.case_id == case_id,
            Case.agency == agency,
            or_(Case.office == office, Case.assignee == sub),
        )
    ).first()


def office_queue(
    session: Session, *, agency: str, office: str, offset: int, limit: int
) -> tuple[list[Case], int]:
    """Requested cases of one agency's office: urgent first, then oldest first, and their count.

    The count is a subquery of the same statement, so page and count come from one snapshot
    even while the consumer is opening cases.
    """
    queued = (Case.agency == agency, Case.office == office, Case.status == TaskStatus.REQUESTED)
    total = select(func.count()).select_from(Case).where(*queued).correlate(None)
    urgent_first = when((Case.urgency == Urgency.URGENT, 0), else_=1)
    rows = session.exec(
        select(Case, total.scalar_subquery())
        .where(*queued)
        .order_by(urgent_first, Case.routed_at, Case.case_ref)
        .offset(offset)
        .limit(limit)
    ).all()
    if rows:
        return [case for case, _ in rows], rows[0][1]
    if offset == 0:
        # The statement's own snapshot saw no queued case: a second count could see a case the
        # consumer committed since, and report a count the page does not show.
        return [], 0
    # A page past the end carries no count of its own.
    return [], session.exec(total).one()


def get_pending_cancel(session: Session, *, track_id: str, reason: str) -> CasePendingCancel | None:
    return session.get(CasePendingCancel, (track_id, reason))


def add_pending_cancel(session: Session, *, pending: CasePendingCancel) -> None:
    session.add(pending)
    session.flush()


def pop_pending_cancels(session: Session, *, track_id: str) -> list[CasePendingCancel]:
    """The early cancels of `track_id`, oldest first; they are deleted (the case takes them)."""
    rows = list(
        session.exec(
            select(CasePendingCancel)
            .where(CasePendingCancel.track_id == track_id)
            .order_by(col(CasePendingCancel.at), col(CasePendingCancel.reason))
        ).all()
    )
    for row in rows:
        session.delete(row)
    session.flush()
    return rows


def _update_case(session: Session, case: Case, *conditions: object, **values: object) -> bool:
    """One conditional UPDATE of `case`; False when the conditions no longer hold.

    The condition sits in the UPDATE itself: on Postgres a concurrent writer waits for the row
    and re-checks it, so of two changes made from the same state only the first one wins.
    """
    result = session.exec(  # type: ignore[call-overload]
        update(Case)
        .where(Case.case_id == case.case_id, *conditions)  # type: ignore[arg-type]
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.refresh(case)
    return True


def set_status(
    session: Session,
    *,
    case: Case,
    expected: TaskStatus,
    status: TaskStatus,
    assignee: str | None,
    at: datetime,
    status_reason: StatusReason | None = None,
    status_note: str | None = None,
    outcome: Outcome | None = None,
    closed_at: datetime | None = None,
) -> bool:
    """Move `case` from `expected` to `status`; False if it is no longer in `expected`.

    Two case workers accepting at once cannot both win: the second one's UPDATE matches no row
    once the first has committed.
    """
    return _update_case(
        session,
        case,
        Case.status == expected,
        status=status,
        assignee=assignee,
        status_reason=status_reason,
        status_note=status_note,
        outcome=outcome,
        closed_at=closed_at,
        updated_at=at,
    )


def purge_disclosure(session: Session, *, case: Case, at: datetime) -> bool:
    """Drop the sealed package from the row and mark it withdrawn; False if it was already (F4).

    The bridge destroyed its key when the consent was withdrawn; this deletes zone B's copy too.
    """
    return _update_case(
        session,
        case,
        Case.disclosure_status == DisclosureStatus.DISCLOSED,
        disclosure_key_id=null(),
        disclosure_nonce=null(),
        disclosure_ciphertext=null(),
        disclosure_status=DisclosureStatus.WITHDRAWN,
        updated_at=at,
    )


def replace_disclosure(
    session: Session,
    *,
    case: Case,
    categories: list[str],
    key_id: str,
    nonce: str,
    ciphertext: str,
    at: datetime,
) -> bool:
    """Put an updated sealed package in place of the old one (step-up, F5); False if the case's
    disclosure was withdrawn meanwhile (F4: a withdrawn package never comes back)."""
    return _update_case(
        session,
        case,
        Case.disclosure_status == DisclosureStatus.DISCLOSED,
        disclosed_categories=categories,
        disclosure_key_id=key_id,
        disclosure_nonce=nonce,
        disclosure_ciphertext=ciphertext,
        updated_at=at,
    )


def claim_active(session: Session, *, case: Case, at: datetime) -> bool:
    """Touch the case if its track is still active; False otherwise.

    Track work calls this before it writes: the UPDATE holds the case row until the transaction
    ends, so a status change cannot close the track between the check and the write.
    """
    return _update_case(session, case, col(Case.status).in_(ACTIVE), updated_at=at)


def set_return_step(
    session: Session, *, case: Case, expected: ReturnStep | None, step: ReturnStep, at: datetime
) -> bool:
    """Move a return case from step `expected` to `step`; False if either moved meanwhile."""
    current = Case.return_step.is_(None) if expected is None else Case.return_step == expected  # type: ignore[union-attr]
    return _update_case(
        session, case, current, col(Case.status).in_(ACTIVE), return_step=step, updated_at=at
    )


# ---------------------------------------------------------------- track work


def get_option(session: Session, *, case_id: uuid.UUID, option: str) -> CaseOption | None:
    return session.get(CaseOption, (case_id, option))


def save_option(session: Session, *, current: CaseOption, history: CaseOptionAssessment) -> None:
    session.add(current)
    session.add(history)
    session.flush()


def add_row(session: Session, *, row: CaseReturnStep | CaseSession | CaseDecision) -> None:
    session.add(row)
    session.flush()


def list_options(session: Session, *, case_id: uuid.UUID) -> list[CaseOption]:
    return list(session.exec(select(CaseOption).where(CaseOption.case_id == case_id)).all())


def list_return_steps(session: Session, *, case_id: uuid.UUID) -> list[CaseReturnStep]:
    return list(
        session.exec(
            select(CaseReturnStep)
            .where(CaseReturnStep.case_id == case_id)
            .order_by(col(CaseReturnStep.recorded_at), col(CaseReturnStep.id))
        ).all()
    )


def list_sessions(session: Session, *, case_id: uuid.UUID) -> list[CaseSession]:
    return list(
        session.exec(
            select(CaseSession)
            .where(CaseSession.case_id == case_id)
            .order_by(col(CaseSession.date), col(CaseSession.recorded_at))
        ).all()
    )


def list_decisions(session: Session, *, case_id: uuid.UUID) -> list[CaseDecision]:
    return list(
        session.exec(
            select(CaseDecision)
            .where(CaseDecision.case_id == case_id)
            .order_by(col(CaseDecision.date), col(CaseDecision.recorded_at))
        ).all()
    )


# ---------------------------------------------------------------- step-up requests (F5)


def add_disclosure_request(session: Session, *, row: CaseDisclosureRequest) -> None:
    session.add(row)
    session.flush()


def pending_disclosure_request(
    session: Session, *, case_id: uuid.UUID
) -> CaseDisclosureRequest | None:
    return session.exec(
        select(CaseDisclosureRequest).where(
            CaseDisclosureRequest.case_id == case_id,
            CaseDisclosureRequest.status == DisclosureRequestStatus.PENDING,
        )
    ).first()


def get_disclosure_request(
    session: Session, *, request_id: uuid.UUID
) -> CaseDisclosureRequest | None:
    return session.get(CaseDisclosureRequest, request_id)


def get_work_row(
    session: Session, *, model: type[WorkRow], case_id: uuid.UUID, row_id: uuid.UUID
) -> WorkRow | None:
    """One row of track work (a step, a session, a decision, a step-up request) of one case."""
    row = session.get(model, row_id)
    return row if row is not None and row.case_id == case_id else None


def step_of_decision(session: Session, *, decision_id: uuid.UUID) -> CaseReturnStep | None:
    """The return step a client decision moved the case to, if it moved it."""
    return session.exec(
        select(CaseReturnStep).where(CaseReturnStep.decision_id == decision_id)
    ).first()


def decide_disclosure_request(
    session: Session,
    *,
    row: CaseDisclosureRequest,
    status: DisclosureRequestStatus,
    at: datetime,
) -> bool:
    """Move a pending request to `status`; False if it was decided already."""
    result = session.exec(  # type: ignore[call-overload]
        update(CaseDisclosureRequest)
        .where(
            CaseDisclosureRequest.request_id == row.request_id,  # type: ignore[arg-type]
            CaseDisclosureRequest.status == DisclosureRequestStatus.PENDING,  # type: ignore[arg-type]
        )
        .values(status=status, decided_at=at)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.refresh(row)
    return True


def list_disclosure_requests(
    session: Session, *, case_id: uuid.UUID
) -> list[CaseDisclosureRequest]:
    return list(
        session.exec(
            select(CaseDisclosureRequest)
            .where(CaseDisclosureRequest.case_id == case_id)
            .order_by(CaseDisclosureRequest.requested_at, CaseDisclosureRequest.request_id)  # type: ignore[arg-type]
        ).all()
    )
