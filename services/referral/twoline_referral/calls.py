"""Calls the bridge answers over NATS request/reply (`twoline_shared.calls`), each a call into
`service.py`. The broker config lets only case-resolution ask, on the SECONDLINE account, and
only the bridge's `referral-sl` user answer."""

import contextlib
from typing import Any

from sqlmodel import Session

from twoline_referral import service
from twoline_referral.consents import ConsentSource
from twoline_referral.models import DisclosureKeyRequest, JointReviewRequest
from twoline_shared.calls import Responder
from twoline_shared.db import session_scope
from twoline_shared.errors import Conflict, NotFound

DISCLOSURE_KEY = "svc.referral.disclosure-key"
JOINT_REVIEW = "svc.referral.joint-review"


def _record_refusal(session: Session, **refusal: Any) -> None:
    # The call's own transaction rolls back with the error: the refusal is recorded in one of
    # its own, so that zone B asking for what it may not have leaves a trace.
    with contextlib.contextmanager(session_scope)(session.get_bind()) as own:  # type: ignore[arg-type]
        service.record_call_refusal(own, **refusal)


def responders(*, consents: ConsentSource) -> list[Responder]:
    """The bridge's two answers to zone B, on the second-line link (zone B asks in its own
    account, never in zone A's); `consents` is the consent service, asked before each release."""

    def on_disclosure_key(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
        """The data key of one routed track's package, while its consent is active (F4)."""
        request = DisclosureKeyRequest.model_validate(payload)
        try:
            return service.release_data_key(session, request=request, consents=consents)
        except (NotFound, Conflict) as refused:
            _record_refusal(
                session,
                action="release",
                resource_type="disclosure-key",
                resource_id=request.key_id,
                status=refused.status,
                slug=refused.slug,
                key_id=request.key_id,
                track_id=str(request.track_id),
            )
            raise

    def on_joint_review(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
        """The other agency's tracks a track's case may be reviewed with, under `joint_review`."""
        request = JointReviewRequest.model_validate(payload)
        try:
            return service.release_joint_review(session, request=request, consents=consents)
        except NotFound as refused:
            _record_refusal(
                session,
                action="disclose",
                resource_type="joint-review",
                resource_id=str(request.track_id),
                status=refused.status,
                slug=refused.slug,
                track_id=str(request.track_id),
            )
            raise

    return [
        Responder(DISCLOSURE_KEY, on_disclosure_key, connection="secondline"),
        Responder(JOINT_REVIEW, on_joint_review, connection="secondline"),
    ]
