"""Consent service: consent grants per recipient agency, withdrawal and receipts (zone A)."""

import dataclasses
from pathlib import Path

from fastapi import FastAPI

from twoline_consent.calls import responders
from twoline_consent.clients import intake_client_check
from twoline_consent.config import Settings, get_settings
from twoline_consent.consumers import BINDINGS
from twoline_consent.routes import router
from twoline_shared.runtime import ServiceRuntime, ServiceSpec, create_service_app

SPEC = ServiceSpec(
    name="consent",
    title="twoline consent",
    description=(
        "Zone A. The client's consent, per recipient agency, recorded by their NGO caseworker; "
        "withdrawable at any time, never deleted."
    ),
    routers=[router],
    migrations=Path(__file__).parent / "migrations",
    publishes={"firstline.consent.": "default", "audit.consent.": "default"},
    consumers=BINDINGS,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # The bridge's consent check may need intake's word on a client; the runtime that asks is
    # made by `create_service_app`, so the check finds it when it is first called.
    runtime: list[ServiceRuntime] = []

    def confirm(client_ref: str, org: str) -> bool:
        check = intake_client_check(runtime[0], timeout=settings.intake_timeout_seconds)
        return check(client_ref, org)

    spec = dataclasses.replace(SPEC, responders=responders(confirm=confirm))
    app = create_service_app(spec, settings)
    runtime.append(app.state.runtime)
    return app
