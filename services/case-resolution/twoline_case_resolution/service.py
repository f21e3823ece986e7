"""Case use cases: load, apply the rule, save, queue events and audit records."""

import uuid

from sqlmodel import Session

from twoline_case_resolution import domain, repository
from twoline_case_resolution.models import (
    Case,
    TrackRouted,
    new_case_ref,
)
from twoline_shared.audit import record_audit
from twoline_shared.auth import Principal
from twoline_shared.codes import TaskStatus, Track
from twoline_shared.db import utcnow
from twoline_shared.errors import Invalid, NotFound
from twoline_shared.events import new_event
from twoline_shared.outbox import add_event

SERVICE = "case-resolution"
SOURCE = "twoline/case-resolution"


def _fresh_case_ref(session: Session) -> str:
    # 40 random bits: a clash is rare; the unique constraint is the last guard (the consumer then
    # retries the event and draws again).
    for _ in range(5):
        case_ref = new_case_ref()
        if not repository.case_ref_taken(session, case_ref=case_ref):
            return case_ref
    return new_case_ref()


def open_case(session: Session, *, routed: TrackRouted) -> Case:
    """Open the case for a routed track; routing the same track again changes nothing."""
    existing = repository.get_case_by_track(session, track_id=routed.track_id)
    if existing is not None:
        return existing
    if domain.agency_for(routed.track) != routed.agency:
        raise Invalid(f"A {routed.track.value!r} track cannot go to {routed.agency.value!r}.")
    case = Case(
        # F5: a fresh pseudonym, derived from nothing that zone A knows.
        case_ref=_fresh_case_ref(session),
        track_id=routed.track_id,
        track=routed.track,
        agency=routed.agency,
        office=routed.office,
        urgency=routed.urgency,
        routed_at=routed.routed_at,
    )
    repository.add_case(session, case=case)
    record_audit(
        session,
        service=SERVICE,
        action="create",
        actor=None,
        resource_type="case",
        resource_id=str(case.case_id),
        track_id=case.track_id,
        track=case.track,
        status=case.status,
    )
    return case


def read_queue(
    session: Session, *, principal: Principal, offset: int, limit: int
) -> tuple[list[Case], int]:
    """The caller's own office queue of its own agency (F7)."""
    agency, office = principal.agency or "", principal.office or ""
    rows, count = repository.office_queue(
        session, agency=agency, office=office, offset=offset, limit=limit
    )
    record_audit(
        session,
        service=SERVICE,
        action="read",
        actor=principal,
        resource_type="queue",
        resource_id=f"{agency}/{office}",
        count=count,
    )
    return rows, count


def load_case(session: Session, *, principal: Principal, case_id: uuid.UUID) -> Case:
    """A case the caller may see; anything else is indistinguishable from no case (F7)."""
    case = repository.get_visible_case(
        session,
        case_id=case_id,
        agency=principal.agency or "",
        office=principal.office or "",
        sub=principal.sub,
    )
    if case is None:
        raise NotFound(f"No case {case_id} in your office.")
    return case


def read_case(session: Session, *, principal: Principal, case: Case) -> Case:
    record_audit(
        session,
        service=SERVICE,
        action="read",
        actor=principal,
        resource_type="case",
        resource_id=str(case.case_id),
        track_id=case.track_id,
    )
    return case


def accept_track(session: Session, *, principal: Principal, case: Case, track: Track) -> Case:
    """The performer accepts the track and becomes its assignee; announced by ids and codes."""
    target = TaskStatus.ACCEPTED
    performer = domain.performs(roles=principal.roles, agency=principal.agency, track=track)
    domain.check_may_set(party=domain.Party.PERFORMER if performer else None, target=target)
    if case.track != track:
        raise NotFound(f"Case {case.case_id} holds no {track.value!r} track.")
    current = TaskStatus(case.status)
    domain.check_transition(current=current, target=target)
    at = utcnow()
    if not repository.set_status(
        session, case=case, expected=current, status=target, assignee=principal.sub, at=at
    ):
        raise domain.IllegalTransition("The task changed meanwhile; reload it.")
    add_event(
        session,
        new_event(
            source=SOURCE,
            type="secondline.case.track.accepted",
            subject=case.track_id,
            track_id=case.track_id,
            case_id=str(case.case_id),
            track=case.track,
            agency=case.agency,
            office=case.office,
            status=target,
            at=at.isoformat(),
        ),
    )
    record_audit(
        session,
        service=SERVICE,
        action="accept",
        actor=principal,
        resource_type="case",
        resource_id=str(case.case_id),
        track_id=case.track_id,
        track=case.track,
        status=target,
    )
    return case
