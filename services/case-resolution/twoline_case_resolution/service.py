"""Case use cases: load, apply the rule, save, queue events and audit records."""

import functools
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from opentelemetry import trace
from sqlmodel import Session

from twoline_case_resolution import domain, repository
from twoline_case_resolution.disclosure import KeyFetcher, LinkFinder
from twoline_case_resolution.domain import ClientDecision, LegalStayOption, ReturnStep
from twoline_case_resolution.models import (
    AssessOption,
    Case,
    CaseDecision,
    CaseDetailPublic,
    CaseDisclosureRequest,
    CaseOption,
    CaseOptionAssessment,
    CasePendingCancel,
    CaseReturnStep,
    CaseSession,
    DecisionCreate,
    DecisionPublic,
    DisclosureRefused,
    DisclosureReleased,
    DisclosureRequestCreate,
    DisclosureRequestPublic,
    DisclosureStatus,
    JointReviewPublic,
    JointReviewStatus,
    LinkedTrackPublic,
    MoveReturnStep,
    OptionPublic,
    ReturnStepPublic,
    SessionCreate,
    SessionPublic,
    TrackCancelled,
    TrackRouted,
    new_case_ref,
)
from twoline_shared import crypto
from twoline_shared.audit import record_audit
from twoline_shared.auth import Principal
from twoline_shared.codes import Outcome, StatusReason, TaskStatus, Track
from twoline_shared.db import utcnow
from twoline_shared.errors import Invalid, NotFound, ServiceError
from twoline_shared.events import new_event
from twoline_shared.outbox import add_event
from twoline_shared.telemetry import current_traceparent, resume_trace

SERVICE = "case-resolution"
SOURCE = "twoline/case-resolution"
DISCLOSURE_REQUESTED = "secondline.case.disclosure.requested"
DISCLOSURE_READ = "secondline.case.disclosure.read"

log = logging.getLogger("twoline.case_resolution")

# The event each performer status announces (docs/events.md); the rest are `status-changed`.
_EVENT_VERB = {
    TaskStatus.ACCEPTED: "accepted",
    TaskStatus.REJECTED: "rejected",
    TaskStatus.COMPLETED: "completed",
}
_AUDIT_ACTION = {
    TaskStatus.ACCEPTED: "accept",
    TaskStatus.REJECTED: "reject",
    TaskStatus.COMPLETED: "complete",
}


P = ParamSpec("P")
R = TypeVar("R")


def _continues_referral_trace(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run a case worker's use case in the referral's trace (the case's `trace_parent`), linked to
    the request's own span, so the events it queues reach the bridge in that trace."""

    def decorate(use_case: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(use_case)
        def traced(*args: P.args, **kwargs: P.kwargs) -> R:
            case = kwargs["case"]
            assert isinstance(case, Case)
            # F8: ids and codes only.
            attributes = {
                "twoline.case.id": str(case.case_id),
                "twoline.track.id": case.track_id,
                "twoline.track": str(case.track),
            }
            with resume_trace(case.trace_parent, name, attributes=attributes):
                return use_case(*args, **kwargs)

        return traced

    return decorate


def _fresh_case_ref(session: Session) -> str:
    # 40 random bits: a clash is rare; the unique constraint is the last guard (the consumer then
    # retries the event and draws again).
    for _ in range(5):
        case_ref = new_case_ref()
        if not repository.case_ref_taken(session, case_ref=case_ref):
            return case_ref
    return new_case_ref()


# ---------------------------------------------------------------- events from the bridge


def open_case(session: Session, *, routed: TrackRouted) -> Case:
    """Open the case for a routed track; routing the same track again changes nothing.

    A track whose cancel came first opens cancelled and never enters the queue; after a
    withdrawal its package is never stored (F4).
    """
    repository.lock_track(session, track_id=routed.track_id)
    existing = repository.get_case_by_track(session, track_id=routed.track_id)
    if existing is not None:
        return existing
    if domain.agency_for(routed.track) != routed.agency:
        raise Invalid(f"A {routed.track.value!r} track cannot go to {routed.agency.value!r}.")
    sealed = routed.disclosure
    categories = list(sealed.categories) if sealed else []
    # F2: known categories, each once, or nothing is stored (the event is dead-lettered). That
    # the package holds exactly these is checked each time it is opened (`read_case`).
    domain.check_categories(categories)
    case = Case(
        # F5: a fresh pseudonym, derived from nothing that zone A knows.
        case_ref=_fresh_case_ref(session),
        track_id=routed.track_id,
        track=routed.track,
        agency=routed.agency,
        office=routed.office,
        urgency=routed.urgency,
        routed_at=routed.routed_at,
        purposes=[p.value for p in routed.purposes],
        disclosed_categories=categories,
        # F4: only the sealed form; the key stays with the bridge.
        disclosure_key_id=sealed.key_id if sealed else None,
        disclosure_nonce=sealed.nonce if sealed else None,
        disclosure_ciphertext=sealed.ciphertext if sealed else None,
        disclosure_status=DisclosureStatus.DISCLOSED,
        # The routed event's consume span: the referral's trace goes on from here.
        trace_parent=current_traceparent(),
    )
    early = repository.pop_pending_cancels(session, track_id=routed.track_id)
    if any(pending.agency != routed.agency for pending in early):
        # A cancel naming another agency breaks its contract, as it would after the track.
        log.warning("an early cancel of track %s names another agency; dropped", routed.track_id)
        early = [pending for pending in early if pending.agency == routed.agency]
    if early:
        reason, withheld = domain.cancel_on_arrival(
            reasons=[StatusReason(pending.reason) for pending in early]
        )
        case.status = TaskStatus.CANCELLED
        case.status_reason = reason
        case.closed_at = early[0].at
        if withheld:
            # F4: the package is dropped here, before it is ever written; the categories stay.
            case.disclosure_key_id = case.disclosure_nonce = case.disclosure_ciphertext = None
            case.disclosure_status = DisclosureStatus.WITHDRAWN
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
        reason=case.status_reason,
        disclosure_status=case.disclosure_status,
        categories=categories,
    )
    return case


def cancel_by_requester(session: Session, *, cancelled: TrackCancelled) -> Case | None:
    """The requester cancelled the track: close the case; on withdrawal purge the package (F4).

    A cancel that comes before its track is kept until the track is routed (`open_case`).
    No event goes back: the bridge sent this one. Applying it twice changes nothing more.
    """
    repository.lock_track(session, track_id=cancelled.track_id)
    case = repository.get_case_by_track(session, track_id=cancelled.track_id)
    if case is None:
        _remember_cancel(session, cancelled=cancelled)
        return None
    if case.agency != cancelled.agency:
        raise Invalid("The cancelled track belongs to another agency.")
    current = TaskStatus(case.status)
    target = TaskStatus.CANCELLED
    at = utcnow()
    if current not in domain.TERMINAL:
        domain.check_may_set(party=domain.Party.REQUESTER, target=target)
        domain.check_transition(current=current, target=target, reason=cancelled.reason)
        if not repository.set_status(
            session,
            case=case,
            expected=current,
            status=target,
            assignee=case.assignee,
            status_reason=cancelled.reason,
            closed_at=cancelled.at,
            at=at,
        ):
            # A case worker changed it meanwhile: raising retries the event on the new state.
            raise domain.IllegalTransition("The task changed meanwhile.")
        record_audit(
            session,
            service=SERVICE,
            action="cancel",
            actor=None,
            resource_type="case",
            resource_id=str(case.case_id),
            track_id=case.track_id,
            track=case.track,
            previous_status=current,
            status=target,
            reason=cancelled.reason,
        )
    # F4: withdrawal purges the package whatever the task's status; the metadata stays.
    if cancelled.reason == StatusReason.CONSENT_WITHDRAWN and repository.purge_disclosure(
        session, case=case, at=at
    ):
        record_audit(
            session,
            service=SERVICE,
            action="purge",
            actor=None,
            resource_type="case-disclosure",
            resource_id=str(case.case_id),
            track_id=case.track_id,
            categories=list(case.disclosed_categories),
            reason=cancelled.reason,
        )
    return case


def _remember_cancel(session: Session, *, cancelled: TrackCancelled) -> None:
    """Keep a cancel that came before its track, once per reason (ids and codes only)."""
    track_id, reason = cancelled.track_id, cancelled.reason
    # The log line names the track only: whether consent was withdrawn is not for the logs.
    log.info("track %s was cancelled before it was routed; kept until it is", track_id)
    if repository.get_pending_cancel(session, track_id=track_id, reason=reason) is not None:
        return
    pending = CasePendingCancel(
        track_id=track_id, reason=reason, agency=cancelled.agency, at=cancelled.at
    )
    repository.add_pending_cancel(session, pending=pending)
    record_audit(
        session,
        service=SERVICE,
        action="create",
        actor=None,
        resource_type="case-pending-cancel",
        resource_id=track_id,
        track_id=track_id,
        reason=reason,
    )


# ---------------------------------------------------------------- step-up requests (F5)


@_continues_referral_trace("case request-disclosure")
def request_disclosure(
    session: Session, *, principal: Principal, case: Case, body: DisclosureRequestCreate
) -> CaseDisclosureRequest:
    """Ask the NGO, through the bridge, for categories not disclosed yet (F5: step-up).

    Only the track's performer, on an active track, one pending request per case. The request
    carries codes only; only a new consent from the NGO releases anything (F0).
    """
    at = _start_work(session, principal=principal, case=case, track=Track(case.track))
    categories = sorted(c.value for c in body.categories)
    # The case row is held by `_start_work` until commit: two requests cannot both be first.
    domain.check_step_up(
        requested=categories,
        disclosed=case.disclosed_categories,
        pending=repository.pending_disclosure_request(session, case_id=case.case_id) is not None,
    )
    row = CaseDisclosureRequest(
        case_id=case.case_id,
        categories=categories,
        reason=body.reason,
        requested_by=principal.sub,
        requested_at=at,
    )
    repository.add_disclosure_request(session, row=row)
    # F5: the track id only; the bridge knows whose track it is.
    add_event(
        session,
        new_event(
            source=SOURCE,
            type=DISCLOSURE_REQUESTED,
            subject=case.track_id,
            request_id=str(row.request_id),
            track_id=case.track_id,
            categories=categories,
            reason=row.reason.value,
            at=at.isoformat(),
        ),
    )
    _audit_work(
        session,
        principal=principal,
        case=case,
        action="create",
        kind="case-disclosure-request",
        request_id=str(row.request_id),
        categories=categories,
        reason=row.reason.value,
    )
    return row


def _request_of(
    session: Session, *, request_id: uuid.UUID, track_id: str
) -> tuple[CaseDisclosureRequest, Case] | None:
    repository.lock_track(session, track_id=track_id)
    row = repository.get_disclosure_request(session, request_id=request_id)
    case = repository.get_case_by_track(session, track_id=track_id)
    if row is None or case is None or row.case_id != case.case_id:
        log.warning(
            "a decision on disclosure request %s of another or no case; ignored", request_id
        )
        return None
    return row, case


def record_disclosure_released(session: Session, *, released: DisclosureReleased) -> None:
    """A new consent released the requested categories: the updated package (sealed under that
    consent's key) replaces the case's, and the request is released. Applied once."""
    found = _request_of(session, request_id=released.request_id, track_id=released.track_id)
    if found is None:
        return
    row, case = found
    sealed = released.disclosure
    categories = list(sealed.categories)
    domain.check_categories(categories)
    at = utcnow()
    if not repository.decide_disclosure_request(
        session, row=row, status=domain.DisclosureRequestStatus.RELEASED, at=released.at
    ):
        return
    # F4: after a withdrawal the package stays gone; the request is still marked released.
    stored = repository.replace_disclosure(
        session,
        case=case,
        categories=categories,
        key_id=sealed.key_id,
        nonce=sealed.nonce,
        ciphertext=sealed.ciphertext,
        at=at,
    )
    record_audit(
        session,
        service=SERVICE,
        action="update",
        actor=None,
        resource_type="case-disclosure",
        resource_id=str(case.case_id),
        track_id=case.track_id,
        request_id=str(row.request_id),
        categories=categories,
        stored=stored,
    )


def record_disclosure_refused(session: Session, *, refused: DisclosureRefused) -> None:
    """The NGO refused the request: the case worker sees it refused. Applied once."""
    found = _request_of(session, request_id=refused.request_id, track_id=refused.track_id)
    if found is None:
        return
    row, case = found
    if repository.decide_disclosure_request(
        session, row=row, status=domain.DisclosureRequestStatus.REFUSED, at=refused.at
    ):
        record_audit(
            session,
            service=SERVICE,
            action="refuse",
            actor=None,
            resource_type="case-disclosure-request",
            resource_id=str(row.request_id),
            track_id=case.track_id,
            request_id=str(row.request_id),
        )


# ---------------------------------------------------------------- reading


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


def _open_disclosure(
    case: Case, *, fetch_key: KeyFetcher
) -> tuple[dict[str, Any] | None, DisclosureStatus]:
    """The case's package, opened in memory with the key the bridge hands out for this read.

    F4: once the consent is withdrawn the bridge refuses the key and nothing is shown, even
    before the cancel reaches this service. Anything else that keeps the package closed (the
    bridge does not answer, the package does not open or breaks F2) shows the case without it,
    `unavailable`, and leaves an id-only log line.
    """
    if case.disclosure_status == DisclosureStatus.WITHDRAWN:
        return None, DisclosureStatus.WITHDRAWN
    held = case.sealed_disclosure()
    if held is None:
        # Routed without a package: nothing was disclosed. With categories but no package (a
        # plaintext package dropped by migration 0004) there is nothing to show.
        if case.disclosed_categories:
            return None, DisclosureStatus.UNAVAILABLE
        return {}, DisclosureStatus.DISCLOSED
    key_id, sealed = held
    try:
        key = fetch_key(case.track_id, key_id)
    except domain.DisclosureWithdrawn:
        return None, DisclosureStatus.WITHDRAWN
    except ServiceError as exc:
        log.warning("case %s: the bridge handed out no key (%s)", case.case_id, exc.slug)
        return None, DisclosureStatus.UNAVAILABLE
    try:
        # F2: bound to this track (the associated data), and exactly the disclosed categories.
        package = crypto.open_sealed(sealed, key=key, aad=case.track_id)
        domain.check_disclosure(categories=list(case.disclosed_categories), package=package)
    except (crypto.CannotOpen, domain.InvalidDisclosure) as exc:
        log.warning(
            "case %s: the package did not open as disclosed (%s)", case.case_id, type(exc).__name__
        )
        return None, DisclosureStatus.UNAVAILABLE
    return package, DisclosureStatus.DISCLOSED


def _joint_review(
    session: Session, case: Case, *, find_links: LinkFinder
) -> tuple[JointReviewPublic, list[Case]]:
    """The other agency's tracks this case may be reviewed with, as the bridge says now.

    Zone B keeps no link between an ICAM and a Fedasil case (F5): the bridge is asked on every
    read, and answers with tracks only while both consents grant `joint_review`. A track of
    this case's own agency is never shown, whatever the answer.
    """
    try:
        linked = find_links(case.track_id)
    except ServiceError as exc:
        log.warning("case %s: the bridge gave no joint-review answer (%s)", case.case_id, exc.slug)
        return JointReviewPublic(status=JointReviewStatus.UNAVAILABLE), []
    if not linked:
        return JointReviewPublic(status=JointReviewStatus.NOT_CONSENTED), []
    others = [
        other
        for other in repository.cases_by_tracks(session, track_ids=linked)
        if other.agency != case.agency
    ]
    return JointReviewPublic(
        status=JointReviewStatus.LINKED,
        tracks=[LinkedTrackPublic.model_validate(other) for other in others],
    ), others


def read_case(
    session: Session,
    *,
    principal: Principal,
    case: Case,
    fetch_key: KeyFetcher,
    find_links: LinkFinder,
) -> CaseDetailPublic:
    """The case with its disclosure, track work and joint review; the read, its categories and
    any linked case shown are audited (F9)."""
    package, disclosure_status = _open_disclosure(case, fetch_key=fetch_key)
    joint_review, linked_cases = _joint_review(session, case, find_links=find_links)
    order = list(LegalStayOption)
    options = sorted(
        repository.list_options(session, case_id=case.case_id),
        key=lambda o: order.index(LegalStayOption(o.option)),
    )
    is_legal_stay, is_return = case.track == Track.LEGAL_STAY, case.track == Track.RETURN
    steps = repository.list_return_steps(session, case_id=case.case_id) if is_return else []
    detail = CaseDetailPublic.model_validate(
        case,
        update={
            "disclosure": package,
            "disclosure_status": disclosure_status,
            "options": [OptionPublic.model_validate(o) for o in options] if is_legal_stay else None,
            "return_steps": [ReturnStepPublic.model_validate(s) for s in steps]
            if is_return
            else None,
            "sessions": [
                SessionPublic.model_validate(s)
                for s in repository.list_sessions(session, case_id=case.case_id)
            ],
            "decisions": [
                DecisionPublic.model_validate(d)
                for d in repository.list_decisions(session, case_id=case.case_id)
            ],
            "disclosure_requests": [
                DisclosureRequestPublic.model_validate(r)
                for r in repository.list_disclosure_requests(session, case_id=case.case_id)
            ],
            "joint_review": joint_review,
        },
    )
    record_audit(
        session,
        service=SERVICE,
        action="read",
        actor=principal,
        resource_type="case",
        resource_id=str(case.case_id),
        track_id=case.track_id,
        # F9: which categories of personal data this read showed (codes, never values).
        categories=sorted(package) if package else [],
        disclosure_status=disclosure_status,
        joint_review=joint_review.status,
        linked_case_ids=[str(other.case_id) for other in linked_cases],
    )
    if package:
        _tell_the_ngo_who_read(session, principal=principal, case=case, categories=sorted(package))
    return detail


def _tell_the_ngo_who_read(
    session: Session, *, principal: Principal, case: Case, categories: list[str]
) -> None:
    """F9: the person can know who looked. Every read that showed disclosed data goes to the
    bridge as ids and codes: the reader's role, agency and office (never their name or `sub`),
    the categories shown and when. The NGO shows it per referral (its access log)."""
    at = utcnow()
    read_id = str(uuid.uuid4())
    add_event(
        session,
        new_event(
            source=SOURCE,
            type=DISCLOSURE_READ,
            subject=case.track_id,
            read_id=read_id,
            track_id=case.track_id,
            role=domain.reader_role(principal.roles, agency=case.agency),
            agency=principal.agency,
            office=principal.office,
            categories=categories,
            at=at.isoformat(),
        ),
    )


# ---------------------------------------------------------------- the task status


def _check_performer(principal: Principal, case: Case, track: Track) -> None:
    """403 unless the caller performs `track`; 404 unless the case holds it."""
    if not domain.performs(roles=principal.roles, agency=principal.agency, track=track):
        raise domain.NotYourTrack(f"You do not perform {track.value!r} tracks.")
    domain.check_track_in_path(case_track=Track(case.track), path_track=track)


@_continues_referral_trace("case change-status")
def change_status(
    session: Session,
    *,
    principal: Principal,
    case: Case,
    track: Track,
    target: TaskStatus,
    reason: StatusReason | None = None,
    outcome: Outcome | None = None,
    note: str | None = None,
) -> Case:
    """The performer moves the track's task; announced once, by ids and codes only (F6, F8)."""
    _check_performer(principal, case, track)
    current = TaskStatus(case.status)
    trace.get_current_span().set_attributes(
        {"twoline.task.previous_status": str(current), "twoline.task.status": str(target)}
    )
    domain.check_performer_change(current=current, target=target, reason=reason, outcome=outcome)
    at = utcnow()
    # Accepting makes the caller the assignee; later changes keep whoever accepted.
    assignee = principal.sub if target == TaskStatus.ACCEPTED else case.assignee
    if not repository.set_status(
        session,
        case=case,
        expected=current,
        status=target,
        assignee=assignee,
        status_reason=reason,
        status_note=note,
        outcome=outcome,
        closed_at=at if target in domain.TERMINAL else None,
        at=at,
    ):
        raise domain.IllegalTransition("The task changed meanwhile; reload it.")
    add_event(
        session,
        new_event(
            source=SOURCE,
            type=f"secondline.case.track.{_EVENT_VERB.get(target, 'status-changed')}",
            subject=case.track_id,
            track_id=case.track_id,
            case_id=str(case.case_id),
            track=case.track,
            agency=case.agency,
            office=case.office,
            previous_status=current,
            status=target,
            reason=reason,
            outcome=outcome,
            at=at.isoformat(),
        ),
    )
    record_audit(
        session,
        service=SERVICE,
        action=_AUDIT_ACTION.get(target, "update"),
        actor=principal,
        resource_type="case",
        resource_id=str(case.case_id),
        track_id=case.track_id,
        track=case.track,
        previous_status=current,
        status=target,
        reason=reason,
        # Not `outcome`: in an audit record that is whether the action succeeded.
        track_outcome=outcome,
    )
    return case


# ---------------------------------------------------------------- track work


def _start_work(
    session: Session,
    *,
    principal: Principal,
    case: Case,
    track: Track,
    check_kind: Callable[..., None] | None = None,
) -> datetime:
    """Check the caller may do this work on the track now, and hold the case row until commit."""
    _check_performer(principal, case, track)
    if check_kind is not None:
        check_kind(track=track)
    domain.check_track_work(status=TaskStatus(case.status))
    at = utcnow()
    if not repository.claim_active(session, case=case, at=at):
        raise domain.TrackNotActive("The track closed meanwhile; reload it.")
    return at


def _save_work(
    session: Session,
    *,
    principal: Principal,
    case: Case,
    row: CaseReturnStep | CaseSession | CaseDecision,
    action: str,
    kind: str,
    **codes: object,
) -> None:
    """Store one row of track work and its audit record, in the request's transaction."""
    repository.add_row(session, row=row)
    _audit_work(session, principal=principal, case=case, action=action, kind=kind, **codes)


def _audit_work(
    session: Session, *, principal: Principal, case: Case, action: str, kind: str, **codes: object
) -> None:
    """The audit record of a case worker's work on a case: ids and codes, never notes (F8)."""
    record_audit(
        session,
        service=SERVICE,
        action=action,
        actor=principal,
        resource_type=kind,
        resource_id=str(case.case_id),
        track_id=case.track_id,
        track=case.track,
        **codes,
    )


def read_work(
    session: Session,
    *,
    principal: Principal,
    case: Case,
    model: type[repository.WorkRow],
    row_id: uuid.UUID,
    track: Track | None = None,
) -> repository.WorkRow:
    """One row of the case's track work, for its performer; another case's row is a 404. The
    read is audited like any read in zone B (notes are the case worker's own, F8: ids only)."""
    _check_performer(principal, case, track or Track(case.track))
    row = repository.get_work_row(session, model=model, case_id=case.case_id, row_id=row_id)
    if row is None:
        raise NotFound(f"No such {_WORK_KIND[model]} in this case.")
    _audit_work(
        session,
        principal=principal,
        case=case,
        action="read",
        kind=f"case-{_WORK_KIND[model]}",
        row_id=str(row_id),
    )
    return row


def decision_view(session: Session, *, row: CaseDecision) -> DecisionPublic:
    """A decision with the return step it moved the case to, if any."""
    moved = repository.step_of_decision(session, decision_id=row.id)
    return DecisionPublic.model_validate(row, update={"return_step": moved.step if moved else None})


_WORK_KIND = {
    CaseReturnStep: "return-step",
    CaseSession: "session",
    CaseDecision: "decision",
    CaseDisclosureRequest: "disclosure-request",
}


@_continues_referral_trace("case assess-option")
def assess_option(
    session: Session,
    *,
    principal: Principal,
    case: Case,
    track: Track,
    option: LegalStayOption,
    body: AssessOption,
) -> CaseOption:
    """Set the current assessment of a legal-stay option, keeping every assessment made."""
    at = _start_work(
        session, principal=principal, case=case, track=track, check_kind=domain.check_has_options
    )
    current = repository.get_option(session, case_id=case.case_id, option=option)
    created = current is None
    if current is None:
        current = CaseOption(
            case_id=case.case_id,
            option=option,
            assessment=body.assessment,
            assessed_by=principal.sub,
            assessed_at=at,
        )
    current.assessment, current.note = body.assessment, body.note
    current.assessed_by, current.assessed_at = principal.sub, at
    history = CaseOptionAssessment(
        case_id=case.case_id,
        option=option,
        assessment=body.assessment,
        note=body.note,
        assessed_by=principal.sub,
        assessed_at=at,
    )
    repository.save_option(session, current=current, history=history)
    _audit_work(
        session,
        principal=principal,
        case=case,
        action="create" if created else "update",
        kind="case-option",
        option=option,
        assessment=body.assessment,
    )
    return current


def _move_step(
    session: Session,
    *,
    principal: Principal,
    case: Case,
    step: ReturnStep,
    at: datetime,
    preparation: dict[str, object] | None = None,
    note: str | None = None,
    decision_id: uuid.UUID | None = None,
) -> CaseReturnStep:
    """Write a move the caller has checked: the step machine's, or a client decision's."""
    current = ReturnStep(case.return_step) if case.return_step else None
    if not repository.set_return_step(session, case=case, expected=current, step=step, at=at):
        raise domain.IllegalStep("The return step changed meanwhile; reload it.")
    row = CaseReturnStep(
        case_id=case.case_id,
        step=step,
        previous_step=current,
        preparation=preparation,
        decision_id=decision_id,
        note=note,
        recorded_by=principal.sub,
        recorded_at=at,
    )
    _save_work(
        session,
        principal=principal,
        case=case,
        row=row,
        action="update",
        kind="case-return-step",
        previous_step=current,
        step=step,
        decision_id=str(decision_id) if decision_id else None,
    )
    return row


@_continues_referral_trace("case move-return-step")
def move_return_step(
    session: Session, *, principal: Principal, case: Case, track: Track, body: MoveReturnStep
) -> CaseReturnStep:
    """Move a return case to its next step (or update the preparation while preparing)."""
    at = _start_work(
        session, principal=principal, case=case, track=track, check_kind=domain.check_has_steps
    )
    # The case row is held since _start_work: the step read here is the one the move replaces.
    current = ReturnStep(case.return_step) if case.return_step else None
    domain.check_step(
        current=current, target=body.step, with_preparation=body.preparation is not None
    )
    return _move_step(
        session,
        principal=principal,
        case=case,
        step=body.step,
        at=at,
        preparation=body.preparation.model_dump(mode="json") if body.preparation else None,
        note=body.note,
    )


@_continues_referral_trace("case record-session")
def record_session(
    session: Session, *, principal: Principal, case: Case, body: SessionCreate
) -> CaseSession:
    """Record a counselling session on the case."""
    at = _start_work(session, principal=principal, case=case, track=Track(case.track))
    row = CaseSession(
        case_id=case.case_id,
        date=body.date,
        mode=body.mode,
        language=body.language,
        interpreter=body.interpreter,
        topics=list(body.topics),
        note=body.note,
        recorded_by=principal.sub,
        recorded_at=at,
    )
    _save_work(
        session,
        principal=principal,
        case=case,
        row=row,
        action="create",
        kind="case-session",
        session_id=str(row.id),
        mode=row.mode,
    )
    return row


@_continues_referral_trace("case record-decision")
def record_decision(
    session: Session, *, principal: Principal, case: Case, body: DecisionCreate
) -> DecisionPublic:
    """Record the person's own decision; on a return case it may move the return step."""
    at = _start_work(session, principal=principal, case=case, track=Track(case.track))
    domain.check_decision(decision=body.decision, option=body.option)
    row = CaseDecision(
        case_id=case.case_id,
        decision=body.decision,
        option=body.option,
        date=body.date,
        decided_by="client",
        note=body.note,
        recorded_by=principal.sub,
        recorded_at=at,
    )
    _save_work(
        session,
        principal=principal,
        case=case,
        row=row,
        action="create",
        kind="case-decision",
        decision_id=str(row.id),
        decision=ClientDecision(row.decision),
        option=row.option,
    )
    # The person's own decision has its own rule (it may register someone still informing).
    current = ReturnStep(case.return_step) if case.return_step else None
    step = domain.step_after_decision(
        track=Track(case.track), decision=body.decision, current=current
    )
    if step is not None:
        _move_step(session, principal=principal, case=case, step=step, at=at, decision_id=row.id)
    return DecisionPublic.model_validate(row, update={"return_step": step})
