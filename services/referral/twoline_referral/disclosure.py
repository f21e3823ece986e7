"""The bridge's one synchronous call into zone A: intake's disclosure package (`svc.intake.disclosure`).

The service layer gets a plain callable (`Fetcher`) and stays free of NATS; this module makes one
from the running service's `firstline` link. The package lives only in memory until it is sealed
into the routed event: its plaintext is never stored in a bridge table or the outbox, logged or
audited (F2, F4, F8).
"""

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from twoline_referral.models import DisclosedPackage
from twoline_shared.errors import Unavailable
from twoline_shared.runtime import ServiceRuntime

DISCLOSURE_CALL = "svc.intake.disclosure"

# (client_ref, org, categories) -> {category: {field: value}} for exactly those categories.
Fetcher = Callable[[str, str, list[str]], dict[str, dict[str, Any]]]


def checked(reply: dict[str, Any], *, client_ref: str, asked: list[str]) -> dict[str, dict]:
    """The package in intake's reply, if it is the one asked for; anything else is a 503."""
    try:
        package = DisclosedPackage.model_validate(reply)
    except ValidationError as exc:
        raise Unavailable("Intake's disclosure reply is malformed.", slug="call-failed") from exc
    if package.client_ref != client_ref or set(package.categories) != set(asked):
        raise Unavailable("Intake disclosed other data than asked for.", slug="call-failed")
    return package.categories


def intake_fetcher(runtime: ServiceRuntime, *, timeout: float) -> Fetcher:
    """A `Fetcher` that asks intake over the bridge's first-line link (blocking; worker threads)."""

    def fetch(client_ref: str, org: str, categories: list[str]) -> dict[str, dict[str, Any]]:
        payload = {"client_ref": client_ref, "org": org, "categories": categories}
        # A call nobody answers in time is a 503 `call-unavailable` (ServiceRuntime.call).
        reply = runtime.call("firstline", DISCLOSURE_CALL, payload, timeout=timeout)
        return checked(reply, client_ref=client_ref, asked=categories)

    return fetch
