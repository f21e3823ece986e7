"""Referral routes (the bridge's NGO-facing API): NGO caseworkers of one org only."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from twoline_referral import service
from twoline_referral.config import Settings
from twoline_referral.consents import ConsentSource, consent_service
from twoline_referral.disclosure import Fetcher, intake_fetcher
from twoline_referral.models import (
    AccessLogPublic,
    DisclosureRefuse,
    DisclosureRequestPublic,
    DisclosureRequestsPublic,
    DisclosureRequestStatus,
    ReferralCancel,
    ReferralCreate,
    ReferralPublic,
    ReferralsPublic,
)
from twoline_shared.auth import NgoCaseworker
from twoline_shared.db import SessionDep
from twoline_shared.idempotency import IdempotencyDep, respond_once
from twoline_shared.openapi import CALL_FAILED, CALL_UNAVAILABLE, ProblemType, problems
from twoline_shared.pagination import PageDep

router = APIRouter(prefix="/referrals", tags=["referrals"])

ReferralId = Annotated[
    uuid.UUID,
    Path(description="The referral's id.", examples=["8c4f2e1a-7b6d-4c3e-9f8a-2b1c0d9e8f7a"]),
]
RequestId = Annotated[
    uuid.UUID,
    Path(
        description="The step-up request's id.", examples=["0b7e5a3c-2d4f-4e6a-8b9c-1d2e3f4a5b6c"]
    ),
]
ClientRefQuery = Annotated[
    str,
    Query(
        min_length=1,
        max_length=64,
        description="The pseudonym of the client whose referrals to list.",
        examples=["C-5A7B63FF22E4"],
    ),
]
CONSENT_MISSING = ProblemType(
    422,
    "consent-missing",
    "The request is not valid",
    "The client has no active `referral` consent for the agency of a track asked for; "
    "`missing_consent` names the agencies. Nothing is stored or routed (F0).",
)
CONSENT_WITHDRAWN = ProblemType(
    409,
    "consent-withdrawn",
    "Conflict with the current state",
    "A consent the referral would go under was withdrawn meanwhile; nothing was routed.",
)
REFERRAL_CLOSED = ProblemType(
    409,
    "referral-closed",
    "Conflict with the current state",
    "Every track of the referral is already closed.",
)
TRACK_CHANGED = ProblemType(
    409,
    "track-changed",
    "Conflict with the current state",
    "A track changed while the request was handled; reload it and decide again.",
)
REQUEST_DECIDED = ProblemType(
    409,
    "disclosure-request-decided",
    "Conflict with the current state",
    "The request was already released by a new consent, or refused.",
)
disclosure_requests = APIRouter(prefix="/disclosure-requests", tags=["disclosure-requests"])


def get_service_settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


def get_disclosure_fetcher(request: Request) -> Fetcher:
    """Intake's disclosure package, asked over the running service's first-line link."""
    runtime = request.app.state.runtime
    return intake_fetcher(runtime, timeout=runtime.settings.disclosure_timeout_seconds)


def get_consent_source(request: Request) -> ConsentSource:
    """The consent service's own state, asked over the running service's first-line link."""
    runtime = request.app.state.runtime
    return consent_service(runtime, timeout=runtime.settings.consent_timeout_seconds)


SettingsDep = Annotated[Settings, Depends(get_service_settings)]
DisclosureFetcherDep = Annotated[Fetcher, Depends(get_disclosure_fetcher)]
ConsentSourceDep = Annotated[ConsentSource, Depends(get_consent_source)]


@router.post(
    "",
    status_code=201,
    response_model=ReferralPublic,
    # The consent service and intake are asked while the referral is made.
    responses=problems(404, CONSENT_MISSING, CONSENT_WITHDRAWN, CALL_UNAVAILABLE, CALL_FAILED),
)
def create_referral(
    body: ReferralCreate,
    response: Response,
    session: SessionDep,
    principal: NgoCaseworker,
    settings: SettingsDep,
    fetch_disclosure: DisclosureFetcherDep,
    consents: ConsentSourceDep,
    idempotency: IdempotencyDep,
):
    """Refer a client to the second line for one or both tracks, under the client's consent."""

    def create() -> tuple[ReferralPublic, str]:
        referral = service.create_referral(
            session,
            principal=principal,
            body=body,
            offices=settings.routing_offices,
            default_office=settings.routing_default_office,
            fetch_disclosure=fetch_disclosure,
            consents=consents,
        )
        return referral, str(referral.referral_id)

    return respond_once(
        idempotency,
        session,
        response,
        act=create,
        replay=lambda referral_id: service.read_referral(
            session, principal=principal, referral_id=uuid.UUID(referral_id)
        ),
        location=lambda referral_id: f"/v1/referrals/{referral_id}",
    )


@router.get("", response_model=ReferralsPublic)
def list_referrals(
    session: SessionDep,
    principal: NgoCaseworker,
    client_ref: ClientRefQuery,
    page: PageDep,
):
    """List your organisation's referrals of one client, newest first."""
    rows, count = service.list_referrals(
        session, principal=principal, client_ref=client_ref, offset=page.offset, limit=page.limit
    )
    return ReferralsPublic(data=rows, count=count)


@router.get("/{referral_id}", response_model=ReferralPublic, responses=problems(404))
def read_referral(referral_id: ReferralId, session: SessionDep, principal: NgoCaseworker):
    """Read one referral of your organisation and the status of its tracks."""
    return service.read_referral(session, principal=principal, referral_id=referral_id)


@router.post(
    "/{referral_id}/cancel",
    response_model=ReferralPublic,
    responses=problems(404, REFERRAL_CLOSED, TRACK_CHANGED),
)
def cancel_referral(
    referral_id: ReferralId,
    body: ReferralCancel,
    response: Response,
    session: SessionDep,
    principal: NgoCaseworker,
    idempotency: IdempotencyDep,
):
    """Cancel every open track of a referral of your organisation (the note stays here)."""

    def cancel() -> tuple[ReferralPublic, str]:
        cancelled = service.cancel_referral(
            session, principal=principal, referral_id=referral_id, body=body
        )
        return cancelled, str(cancelled.referral_id)

    return respond_once(
        idempotency,
        session,
        response,
        act=cancel,
        replay=lambda rid: service.read_referral(
            session, principal=principal, referral_id=uuid.UUID(rid)
        ),
        status_code=200,
    )


@router.get("/{referral_id}/access-log", response_model=AccessLogPublic, responses=problems(404))
def read_access_log(
    referral_id: ReferralId, session: SessionDep, principal: NgoCaseworker, page: PageDep
):
    """Who in the second line read which categories of this referral's data, and when (by
    role, agency and office, never by name): what you can show the person."""
    rows, count = service.read_access_log(
        session, principal=principal, referral_id=referral_id, offset=page.offset, limit=page.limit
    )
    return AccessLogPublic(data=rows, count=count)


@disclosure_requests.get("", response_model=DisclosureRequestsPublic)
def list_disclosure_requests(
    session: SessionDep,
    principal: NgoCaseworker,
    page: PageDep,
    status: Annotated[
        DisclosureRequestStatus | None,
        Query(description="Only the requests in this status; all of them if left out."),
    ] = None,
):
    """List zone B's requests for more categories of your organisation's clients, newest first."""
    rows, count = service.list_disclosure_requests(
        session, principal=principal, status=status, offset=page.offset, limit=page.limit
    )
    return DisclosureRequestsPublic(data=rows, count=count)


@disclosure_requests.post(
    "/{request_id}/refuse",
    response_model=DisclosureRequestPublic,
    responses=problems(404, REQUEST_DECIDED, TRACK_CHANGED),
)
def refuse_disclosure_request(
    request_id: RequestId,
    body: DisclosureRefuse,
    response: Response,
    session: SessionDep,
    principal: NgoCaseworker,
    idempotency: IdempotencyDep,
):
    """Refuse a pending request (the client does not consent); the case worker sees it refused."""

    def refuse() -> tuple[DisclosureRequestPublic, str]:
        refused = service.refuse_disclosure_request(
            session, principal=principal, request_id=str(request_id), body=body
        )
        return refused, refused.request_id

    return respond_once(
        idempotency,
        session,
        response,
        act=refuse,
        replay=lambda rid: service.read_disclosure_request(
            session, principal=principal, request_id=rid
        ),
        status_code=200,
    )
