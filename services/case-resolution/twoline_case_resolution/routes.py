"""Case-resolution routes (zone B): ICAM coaches and Fedasil return counsellors, per office.

Every route needs a second-line role; which of the two may act on a track is the service's rule
(the track's performer), so a coach on a return track gets 403 `not-your-track`.
"""

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, status

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
    CaseDecision,
    CaseDetailPublic,
    CaseDisclosureRequest,
    CasePublic,
    CaseReturnStep,
    CaseSession,
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
from twoline_shared.idempotency import IdempotencyDep, respond_once
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


def _row_id(what: str, example: str) -> Any:
    return Annotated[
        uuid.UUID,
        Path(description=f"The {what}'s id, as its `Location` names it.", examples=[example]),
    ]


StepId = _row_id("return step", "5c4b3a29-1807-4f6e-9d5c-4b3a29180716")
SessionId = _row_id("counselling session", "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d")
DecisionId = _row_id("decision", "2b3c4d5e-6f70-4812-9a3b-4c5d6e7f8091")
RequestId = _row_id("disclosure request", "0b7e5a3c-2d4f-4e6a-8b9c-1d2e3f4a5b6c")

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
def accept_track(
    track: TrackPath,
    case: CurrentCase,
    response: Response,
    session: SessionDep,
    principal: SecondLine,
    idempotency: IdempotencyDep,
):
    """Accept the case's track (only from `requested`); you become its assignee."""
    return _move_once(
        idempotency,
        session,
        response,
        principal,
        lambda: service.change_status(
            session, principal=principal, case=case, track=track, target=TaskStatus.ACCEPTED
        ),
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
    response: Response,
    session: SessionDep,
    principal: SecondLine,
    idempotency: IdempotencyDep,
):
    """Reject the case's track (only from `requested`), with a reason code."""
    return _move_once(
        idempotency,
        session,
        response,
        principal,
        lambda: service.change_status(
            session,
            principal=principal,
            case=case,
            track=track,
            target=TaskStatus.REJECTED,
            reason=body.reason,
            note=body.note,
        ),
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
    response: Response,
    session: SessionDep,
    principal: SecondLine,
    idempotency: IdempotencyDep,
):
    """Move the track to in-progress, on-hold, failed or cancelled (the last three with a reason)."""
    return _move_once(
        idempotency,
        session,
        response,
        principal,
        lambda: service.change_status(
            session,
            principal=principal,
            case=case,
            track=track,
            target=body.status,
            reason=body.reason,
            note=body.note,
        ),
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
    response: Response,
    session: SessionDep,
    principal: SecondLine,
    idempotency: IdempotencyDep,
):
    """Complete the track with its outcome code."""
    return _move_once(
        idempotency,
        session,
        response,
        principal,
        lambda: service.change_status(
            session,
            principal=principal,
            case=case,
            track=track,
            target=TaskStatus.COMPLETED,
            outcome=body.outcome,
            note=body.note,
        ),
    )


def _move_once(
    idempotency: IdempotencyDep,
    session: SessionDep,
    response: Response,
    principal: SecondLine,
    move: Callable[[], Case],
) -> Case:
    """A status change done once per Idempotency-Key; a retry answers the case as it is now."""

    def act() -> tuple[Case, str]:
        case = move()
        return case, str(case.case_id)

    return respond_once(
        idempotency,
        session,
        response,
        act=act,
        replay=lambda cid: service.load_case(session, principal=principal, case_id=uuid.UUID(cid)),
        status_code=200,
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
    response: Response,
    session: SessionDep,
    principal: SecondLine,
    idempotency: IdempotencyDep,
):
    """Move an active return track to its next step."""

    def act() -> tuple[CaseReturnStep, str]:
        row = service.move_return_step(
            session, principal=principal, case=case, track=track, body=body
        )
        return row, str(row.id)

    return respond_once(
        idempotency,
        session,
        response,
        act=act,
        replay=lambda rid: service.read_work(
            session,
            principal=principal,
            case=case,
            model=CaseReturnStep,
            row_id=uuid.UUID(rid),
            track=track,
        ),
        location=lambda rid: f"/v1/cases/{case.case_id}/tracks/{track.value}/steps/{rid}",
    )


@router.get(
    "/cases/{case_id}/tracks/{track}/steps/{step_id}",
    response_model=ReturnStepPublic,
    responses=problems(*NOT_PERFORMER),
)
def read_return_step(
    track: TrackPath,
    step_id: StepId,
    case: CurrentCase,
    session: SessionDep,
    principal: SecondLine,
):
    """Read one move of a return track of your office's case."""
    return service.read_work(
        session, principal=principal, case=case, model=CaseReturnStep, row_id=step_id, track=track
    )


@router.post(
    "/cases/{case_id}/sessions",
    response_model=SessionPublic,
    status_code=status.HTTP_201_CREATED,
    responses=problems(*TRACK_WORK),
)
def record_session(
    body: SessionCreate,
    case: CurrentCase,
    response: Response,
    session: SessionDep,
    principal: SecondLine,
    idempotency: IdempotencyDep,
):
    """Record a counselling session on an active track."""

    def act() -> tuple[CaseSession, str]:
        row = service.record_session(session, principal=principal, case=case, body=body)
        return row, str(row.id)

    return respond_once(
        idempotency,
        session,
        response,
        act=act,
        replay=lambda rid: service.read_work(
            session, principal=principal, case=case, model=CaseSession, row_id=uuid.UUID(rid)
        ),
        location=lambda rid: f"/v1/cases/{case.case_id}/sessions/{rid}",
    )


@router.get(
    "/cases/{case_id}/sessions/{session_id}",
    response_model=SessionPublic,
    responses=problems(*NOT_PERFORMER),
)
def read_session(
    session_id: SessionId, case: CurrentCase, session: SessionDep, principal: SecondLine
):
    """Read one counselling session of your office's case."""
    return service.read_work(
        session, principal=principal, case=case, model=CaseSession, row_id=session_id
    )


@router.post(
    "/cases/{case_id}/decisions",
    response_model=DecisionPublic,
    status_code=status.HTTP_201_CREATED,
    responses=problems(*TRACK_WORK, IllegalStep, 422),
)
def record_decision(
    body: DecisionCreate,
    case: CurrentCase,
    response: Response,
    session: SessionDep,
    principal: SecondLine,
    idempotency: IdempotencyDep,
):
    """Record the person's own decision on an active track (it is theirs, not the case worker's)."""

    def act() -> tuple[DecisionPublic, str]:
        decision = service.record_decision(session, principal=principal, case=case, body=body)
        return decision, str(decision.id)

    return respond_once(
        idempotency,
        session,
        response,
        act=act,
        replay=lambda rid: _decision(session, principal, case, uuid.UUID(rid)),
        location=lambda rid: f"/v1/cases/{case.case_id}/decisions/{rid}",
    )


def _decision(
    session: SessionDep, principal: SecondLine, case: Case, decision_id: uuid.UUID
) -> DecisionPublic:
    row = service.read_work(
        session, principal=principal, case=case, model=CaseDecision, row_id=decision_id
    )
    return service.decision_view(session, row=row)


@router.get(
    "/cases/{case_id}/decisions/{decision_id}",
    response_model=DecisionPublic,
    responses=problems(*NOT_PERFORMER),
)
def read_decision(
    decision_id: DecisionId, case: CurrentCase, session: SessionDep, principal: SecondLine
):
    """Read one of the person's decisions on your office's case."""
    return _decision(session, principal, case, decision_id)


@router.post(
    "/cases/{case_id}/disclosure-requests",
    response_model=DisclosureRequestPublic,
    status_code=status.HTTP_201_CREATED,
    responses=problems(*TRACK_WORK, CategoryAlreadyDisclosed, DisclosureRequestPending),
)
def request_disclosure(
    body: DisclosureRequestCreate,
    case: CurrentCase,
    response: Response,
    session: SessionDep,
    principal: SecondLine,
    idempotency: IdempotencyDep,
):
    """Ask the NGO for more data categories (step-up); only a new consent releases them."""

    def act() -> tuple[CaseDisclosureRequest, str]:
        row = service.request_disclosure(session, principal=principal, case=case, body=body)
        return row, str(row.request_id)

    return respond_once(
        idempotency,
        session,
        response,
        act=act,
        replay=lambda rid: service.read_work(
            session,
            principal=principal,
            case=case,
            model=CaseDisclosureRequest,
            row_id=uuid.UUID(rid),
        ),
        location=lambda rid: f"/v1/cases/{case.case_id}/disclosure-requests/{rid}",
    )


@router.get(
    "/cases/{case_id}/disclosure-requests/{request_id}",
    response_model=DisclosureRequestPublic,
    responses=problems(*NOT_PERFORMER),
)
def read_disclosure_request(
    request_id: RequestId, case: CurrentCase, session: SessionDep, principal: SecondLine
):
    """Read one of your requests to the NGO for more categories, with its status."""
    return service.read_work(
        session, principal=principal, case=case, model=CaseDisclosureRequest, row_id=request_id
    )
