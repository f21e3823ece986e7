"""Consent routes (zone A): NGO staff of one org read; their caseworkers record and withdraw."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response

from twoline_consent import service
from twoline_consent.clients import ClientCheck, intake_client_check
from twoline_consent.models import (
    ConsentCreate,
    ConsentPublic,
    ConsentReceipt,
    ConsentsPublic,
    ConsentWithdraw,
)
from twoline_shared.auth import NgoCaseworker, NgoStaff
from twoline_shared.db import SessionDep
from twoline_shared.idempotency import IdempotencyDep, respond_once
from twoline_shared.openapi import CALL_FAILED, CALL_UNAVAILABLE, ProblemType, problems
from twoline_shared.pagination import PageDep

router = APIRouter(prefix="/consents", tags=["consents"])

ConsentId = Annotated[
    uuid.UUID,
    Path(description="The consent's id.", examples=["6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b"]),
]
CONSENT_INACTIVE = ProblemType(
    409,
    "consent-inactive",
    "Conflict with the current state",
    "The consent is already withdrawn, or has expired: it stays on record as inactive.",
)


def get_client_check(request: Request) -> ClientCheck:
    """Intake's word on a client this service has not heard of yet, over the service's link."""
    runtime = request.app.state.runtime
    return intake_client_check(runtime, timeout=runtime.settings.intake_timeout_seconds)


ClientCheckDep = Annotated[ClientCheck, Depends(get_client_check)]


@router.post(
    "",
    status_code=201,
    response_model=ConsentPublic,
    # Intake is asked about a client this service has not heard of yet.
    responses=problems(404, CALL_UNAVAILABLE, CALL_FAILED),
)
def grant_consent(
    body: ConsentCreate,
    response: Response,
    session: SessionDep,
    principal: NgoCaseworker,
    confirm: ClientCheckDep,
    idempotency: IdempotencyDep,
):
    """Record a client's consent to disclose to one recipient agency."""

    def create() -> tuple[ConsentPublic, str]:
        consent = service.grant_consent(session, principal=principal, data=body, confirm=confirm)
        return service.to_public(consent), str(consent.consent_id)

    return respond_once(
        idempotency,
        session,
        response,
        act=create,
        replay=lambda consent_id: _read(session, principal, consent_id),
        location=lambda consent_id: f"/v1/consents/{consent_id}",
    )


def _read(session: SessionDep, principal: NgoStaff, consent_id: str) -> ConsentPublic:
    consent = service.read_consent(session, principal=principal, consent_id=uuid.UUID(consent_id))
    return service.to_public(consent)


@router.get("", response_model=ConsentsPublic)
def list_consents(
    session: SessionDep,
    principal: NgoStaff,
    client_ref: Annotated[
        str,
        Query(
            min_length=1,
            max_length=64,
            description="The pseudonym of the client whose consents to list.",
            examples=["C-5A7B63FF22E4"],
        ),
    ],
    page: PageDep,
):
    """List the consents of one client of your organisation, newest first."""
    rows, count = service.list_consents(
        session, principal=principal, client_ref=client_ref, offset=page.offset, limit=page.limit
    )
    return ConsentsPublic(data=[service.to_public(r) for r in rows], count=count)


@router.get("/{consent_id}", response_model=ConsentPublic, responses=problems(404))
def read_consent(consent_id: ConsentId, session: SessionDep, principal: NgoStaff):
    """Read one consent of your organisation, with its current status."""
    consent = service.read_consent(session, principal=principal, consent_id=consent_id)
    return service.to_public(consent)


@router.post(
    "/{consent_id}/withdraw",
    response_model=ConsentPublic,
    responses=problems(404, CONSENT_INACTIVE),
)
def withdraw_consent(
    consent_id: ConsentId,
    response: Response,
    session: SessionDep,
    principal: NgoCaseworker,
    idempotency: IdempotencyDep,
    body: Annotated[ConsentWithdraw | None, Body()] = None,
):
    """Withdraw an active consent at the client's request; it stays on record as inactive."""

    def withdraw() -> tuple[ConsentPublic, str]:
        consent = service.withdraw_consent(
            session,
            principal=principal,
            consent_id=consent_id,
            reason=body.reason if body is not None else None,
        )
        return service.to_public(consent), str(consent.consent_id)

    return respond_once(
        idempotency,
        session,
        response,
        act=withdraw,
        replay=lambda withdrawn: _read(session, principal, withdrawn),
        status_code=200,
    )


@router.get("/{consent_id}/receipt", response_model=ConsentReceipt, responses=problems(404))
def consent_receipt(consent_id: ConsentId, session: SessionDep, principal: NgoStaff):
    """The consent receipt (Kantara style) to hand to the client."""
    return service.consent_receipt(session, principal=principal, consent_id=consent_id)
