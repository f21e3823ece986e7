"""The consent service's one synchronous call: does an org hold a client? (`svc.intake.client`)

Intake registers a client and answers `201` before the consent service has heard of it through
the FIRSTLINE stream. A grant recorded right after that must not be refused, so a client the
service does not know yet is asked of intake at that moment; what intake confirms is remembered
(a client never changes org). The service layer gets a plain callable (`ClientCheck`) and stays
free of NATS; this module makes one from the running service's link.
"""

from collections.abc import Callable

from twoline_shared.errors import NotFound, Unavailable
from twoline_shared.runtime import ServiceRuntime

CLIENT_CALL = "svc.intake.client"

# (client_ref, org) -> whether intake holds that client in that org. Raises `Unavailable` (503)
# when intake does not answer: the grant is then refused for now, never recorded on a guess.
ClientCheck = Callable[[str, str], bool]


def intake_client_check(runtime: ServiceRuntime, *, timeout: float) -> ClientCheck:
    """A `ClientCheck` that asks intake over the service's link (blocking; worker threads)."""

    def holds(client_ref: str, org: str) -> bool:
        payload = {"client_ref": client_ref, "org": org}
        try:
            reply = runtime.call("default", CLIENT_CALL, payload, timeout=timeout)
        except NotFound:
            return False
        if reply != payload:
            raise Unavailable("Intake's client reply is not about this client.", slug="call-failed")
        return True

    return holds
