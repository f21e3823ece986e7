"""All case queries. Reads are scoped to the caller's agency and office (F7)."""

import uuid
from datetime import datetime

from sqlalchemy import case as when
from sqlalchemy import func, or_, update
from sqlmodel import Session, select

from twoline_case_resolution.models import (
    Case,
)
from twoline_shared.codes import TaskStatus, Urgency


def get_case_by_track(session: Session, *, track_id: str) -> Case | None:
    return session.exec(select(Case).where(Case.track_id == track_id)).first()


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


def set_status(
    session: Session,
    *,
    case: Case,
    expected: TaskStatus,
    status: TaskStatus,
    assignee: str | None,
    at: datetime,
) -> bool:
    """Move `case` from `expected` to `status`; False if it is no longer in `expected`.

    The condition sits in the UPDATE itself so that two case workers accepting at once cannot
    both win: the second one's UPDATE matches no row once the first has committed.
    """
    result = session.exec(  # type: ignore[call-overload]
        update(Case)
        .where(Case.case_id == case.case_id, Case.status == expected)  # type: ignore[arg-type]
        .values(status=status, assignee=assignee, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.refresh(case)
    return True
