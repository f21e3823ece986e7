"""Case-resolution routes (zone B): ICAM coaches and Fedasil return counsellors, per office.

Every route needs a second-line role; which of the two may act on a track is the service's rule
(the track's performer), so a coach on a return track gets 403 `not-your-track`.
"""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status

from twoline_case_resolution import service
from twoline_case_resolution.disclosure import (
    KeyFetcher,
    LinkFinder,
    bridge_key_fetcher,
    bridge_link_finder,
)
from twoline_case_resolution.domain import (
    CategoryAlreadyDisclosed,
    DisclosureRequestPending,
    IllegalStep,
    IllegalTransition,
    LegalStayOption,
    NotYourTrack,
    OutcomeNotAllowed,
    ReasonNotAllowed,
    ReasonRequired,
    TrackNotActive,
)
from twoline_case_resolution.models import (
    AssessOption,
    Case,
    CaseDetailPublic,
    CasePublic,
    ChangeStatus,
    CompleteTrack,
    DecisionCreate,
    DecisionPublic,
    DisclosureRequestCreate,
    DisclosureRequestPublic,
    MoveReturnStep,
    OptionPublic,
    QueueItemPublic,
    QueuePublic,
    RejectTrack,
    ReturnStepPublic,
    SessionCreate,
    SessionPublic,
)
from twoline_shared.auth import SecondLine
from twoline_shared.codes import TaskStatus, Track
from twoline_shared.db import SessionDep
from twoline_shared.openapi import problems
from twoline_shared.pagination import PageDep

CaseId = Annotated[
    uuid.UUID,
    Path(
        description="The case's id (one case per referral and agency).",
        examples=["1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"],
    ),
]
TrackPath = Annotated[
    Track,
    Path(
        description="The case's track: `legal_stay` (ICAM coaches) or `return` (Fedasil return "
        "counsellors); only its performer acts on it."
    ),
]
OptionPath = Annotated[LegalStayOption, Path(description="The legal-stay option assessed.")]

# What acting on a track may be refused for, besides the case itself (404).
NOT_PERFORMER = (404, NotYourTrack)
STATUS_CHANGE = (
    *NOT_PERFORMER,
    IllegalTransition,
    ReasonRequired,
    ReasonNotAllowed,
    OutcomeNotAllowed,
)
TRACK_WORK = (*NOT_PERFORMER, TrackNotActive)


def get_current_case(case_id: CaseId, session: SessionDep, principal: SecondLine) -> Case:
    return service.load_case(session, principal=principal, case_id=case_id)


def get_key_fetcher(request: Request) -> KeyFetcher:
    """The data key of a sealed package, asked of the bridge over the running service's link."""
    runtime = request.app.state.runtime
    return bridge_key_fetcher(runtime, timeout=runtime.settings.bridge_call_timeout_seconds)


def get_link_finder(request: Request) -> LinkFinder:
    """The tracks a case may be reviewed with (joint review), asked of the bridge likewise."""
    runtime = request.app.state.runtime
    return bridge_link_finder(runtime, timeout=runtime.settings.bridge_call_timeout_seconds)


# A case of the caller's agency, in their office or assigned to them; else 404 (F7).
CurrentCase = Annotated[Case, Depends(get_current_case)]
KeyFetcherDep = Annotated[KeyFetcher, Depends(get_key_fetcher)]
LinkFinderDep = Annotated[LinkFinder, Depends(get_link_finder)]

router = APIRouter(tags=["cases"])


@router.get("/queue", response_model=QueuePublic)
def read_queue(
    session: SessionDep,
    principal: SecondLine,
    page: PageDep,
):
    """Your office's queue of requested cases: urgent first, then oldest first."""
    rows, count = service.read_queue(
        session, principal=principal, offset=page.offset, limit=page.limit
    )
    return QueuePublic(data=[QueueItemPublic.model_validate(r) for r in rows], count=count)


@router.get("/cases/{case_id}", response_model=CaseDetailPublic, responses=problems(404))
def read_case(
    case: CurrentCase,
    session: SessionDep,
    principal: SecondLine,
    fetch_key: KeyFetcherDep,
    find_links: LinkFinderDep,
):
    """Read one case of your office, or one assigned to you, with its disclosure and, under
    `joint_review`, the other agency's track (audited)."""
    return service.read_case(
        session, principal=principal, case=case, fetch_key=fetch_key, find_links=find_links
    )


@router.post(
    "/cases/{case_id}/tracks/{track}/accept",
    response_model=CasePublic,
    responses=problems(*STATUS_CHANGE),
)
def accept_track(track: TrackPath, case: CurrentCase, session: SessionDep, principal: SecondLine):
    """Accept the case's track (only from `requested`); you become its assignee."""
    return service.change_status(
        session, principal=principal, case=case, track=track, target=TaskStatus.ACCEPTED
    )


@router.post(
    "/cases/{case_id}/tracks/{track}/reject",
    response_model=CasePublic,
    responses=problems(*STATUS_CHANGE),
)
def reject_track(
    track: TrackPath,
    body: RejectTrack,
    case: CurrentCase,
    session: SessionDep,
    principal: SecondLine,
):
    """Reject the case's track (only from `requested`), with a reason code."""
    return service.change_status(
        session,
        principal=principal,
        case=case,
        track=track,
        target=TaskStatus.REJECTED,
        reason=body.reason,
        note=body.note,
    )


@router.post(
    "/cases/{case_id}/tracks/{track}/status",
    response_model=CasePublic,
    responses=problems(*STATUS_CHANGE),
)
def change_track_status(
    track: TrackPath,
    body: ChangeStatus,
    case: CurrentCase,
    session: SessionDep,
    principal: SecondLine,
):
    """Move the track to in-progress, on-hold, failed or cancelled (the last three with a reason)."""
    return service.change_status(
        session,
        principal=principal,
        case=case,
        track=track,
        target=body.status,
        reason=body.reason,
        note=body.note,
    )


@router.post(
    "/cases/{case_id}/tracks/{track}/complete",
    response_model=CasePublic,
    responses=problems(*STATUS_CHANGE),
)
def complete_track(
    track: TrackPath,
    body: CompleteTrack,
    case: CurrentCase,
    session: SessionDep,
    principal: SecondLine,
):
    """Complete the track with its outcome code."""
    return service.change_status(
        session,
        principal=principal,
        case=case,
        track=track,
        target=TaskStatus.COMPLETED,
        outcome=body.outcome,
        note=body.note,
    )


@router.put(
    "/cases/{case_id}/tracks/{track}/options/{option}",
    response_model=OptionPublic,
    responses=problems(*TRACK_WORK),
)
def assess_option(
    track: TrackPath,
    option: OptionPath,
    body: AssessOption,
    case: CurrentCase,
    session: SessionDep,
    principal: SecondLine,
):
    """Assess one legal-stay option of an active legal-stay track (every assessment is kept)."""
    return service.assess_option(
        session, principal=principal, case=case, track=track, option=option, body=body
    )


@router.post(
    "/cases/{case_id}/tracks/{track}/steps",
    response_model=ReturnStepPublic,
    status_code=status.HTTP_201_CREATED,
    responses=problems(*TRACK_WORK, IllegalStep, 422),
)
def move_return_step(
    track: TrackPath,
    body: MoveReturnStep,
    case: CurrentCase,
    session: SessionDep,
    principal: SecondLine,
):
    """Move an active return track to its next step."""
    return service.move_return_step(session, principal=principal, case=case, track=track, body=body)


@router.post(
    "/cases/{case_id}/sessions",
    response_model=SessionPublic,
    status_code=status.HTTP_201_CREATED,
    responses=problems(*TRACK_WORK),
)
def record_session(
    body: SessionCreate, case: CurrentCase, session: SessionDep, principal: SecondLine
):
    """Record a counselling session on an active track."""
    return service.record_session(session, principal=principal, case=case, body=body)


@router.post(
    "/cases/{case_id}/decisions",
    response_model=DecisionPublic,
    status_code=status.HTTP_201_CREATED,
    responses=problems(*TRACK_WORK, IllegalStep, 422),
)
def record_decision(
    body: DecisionCreate, case: CurrentCase, session: SessionDep, principal: SecondLine
):
    """Record the person's own decision on an active track (it is theirs, not the case worker's)."""
    return service.record_decision(session, principal=principal, case=case, body=body)


@router.post(
    "/cases/{case_id}/disclosure-requests",
    response_model=DisclosureRequestPublic,
    status_code=status.HTTP_201_CREATED,
    responses=problems(*TRACK_WORK, CategoryAlreadyDisclosed, DisclosureRequestPending),
)
def request_disclosure(
    body: DisclosureRequestCreate, case: CurrentCase, session: SessionDep, principal: SecondLine
):
    """Ask the NGO for more data categories (step-up); only a new consent releases them."""
    return service.request_disclosure(session, principal=principal, case=case, body=body)
