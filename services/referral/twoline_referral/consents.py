"""The bridge's calls into the consent service: a client's consents active now
(`svc.consent.active`) and what some consents are now (`svc.consent.status`).

F0: nothing goes towards the second line without an *active* consent — not an eventually
active one. The bridge's projection of the FIRSTLINE stream learns of a grant or a withdrawal
only after the consent service has answered the NGO, so every decision that lets something
reach zone B (a referral, a data key, a joint-review link, a step-up release) is taken from the
consent service's own state at that moment. If the consent service does not answer, nothing is
released (`503`, never a stale yes). The service layer gets a `ConsentSource` of plain
callables and stays free of NATS; this module makes one from the running service's first-line
link.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from twoline_referral.models import ConsentsAnswer
from twoline_shared.errors import Unavailable
from twoline_shared.runtime import ServiceRuntime

ACTIVE_CALL = "svc.consent.active"
STATUS_CALL = "svc.consent.status"


@dataclass(frozen=True)
class ConsentSource:
    """`active(client_ref, org)`: the client's consents active now and whether the client
    exists; `status(consent_ids)`: those consents as they are now (unknown ones left out)."""

    active: Callable[[str, str], ConsentsAnswer]
    status: Callable[[list[str]], ConsentsAnswer]


def checked(reply: dict[str, Any]) -> ConsentsAnswer:
    """The consent service's answer, if it is one; anything else is a 503."""
    try:
        return ConsentsAnswer.model_validate(reply)
    except ValidationError as exc:
        raise Unavailable("The consent service's answer is malformed.", slug="call-failed") from exc


def consent_service(runtime: ServiceRuntime, *, timeout: float) -> ConsentSource:
    """A `ConsentSource` asking over the bridge's first-line link (blocking; worker threads)."""

    def active(client_ref: str, org: str) -> ConsentsAnswer:
        payload = {"client_ref": client_ref, "org": org}
        answer = checked(runtime.call("firstline", ACTIVE_CALL, payload, timeout=timeout))
        if answer.client_known is None or any(
            (c.client_ref, c.org) != (client_ref, org) for c in answer.consents
        ):
            raise Unavailable(
                "The consent service answered about another client.", slug="call-failed"
            )
        return answer

    def status(consent_ids: list[str]) -> ConsentsAnswer:
        payload = {"consent_ids": sorted(set(consent_ids))}
        answer = checked(runtime.call("firstline", STATUS_CALL, payload, timeout=timeout))
        if not {c.consent_id for c in answer.consents} <= set(consent_ids):
            raise Unavailable(
                "The consent service answered about other consents.", slug="call-failed"
            )
        return answer

    return ConsentSource(active=active, status=status)
