"""Case-resolution routes (zone B): ICAM coaches and Fedasil return counsellors, per office."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

from twoline_case_resolution import service
from twoline_case_resolution.models import (
    Case,
    CasePublic,
    QueueItemPublic,
    QueuePublic,
)
from twoline_shared.auth import SecondLine
from twoline_shared.codes import Track
from twoline_shared.db import SessionDep
from twoline_shared.pagination import PageDep


def get_current_case(case_id: uuid.UUID, session: SessionDep, principal: SecondLine) -> Case:
    return service.load_case(session, principal=principal, case_id=case_id)


# A case of the caller's agency, in their office or assigned to them; else 404 (F7).
CurrentCase = Annotated[Case, Depends(get_current_case)]

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


@router.get("/cases/{case_id}", response_model=CasePublic)
def read_case(case: CurrentCase, session: SessionDep, principal: SecondLine):
    """Read one case of your office, or one assigned to you."""
    return service.read_case(session, principal=principal, case=case)


@router.post("/cases/{case_id}/tracks/{track}/accept", response_model=CasePublic)
def accept_track(track: Track, case: CurrentCase, session: SessionDep, principal: SecondLine):
    """Accept the case's track (only from `requested`); you become its assignee."""
    return service.accept_track(session, principal=principal, case=case, track=track)
