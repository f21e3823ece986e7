"""Referral service: the bridge between zone A and zone B, and the only holder of both links."""

import dataclasses
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from twoline_referral.calls import responders
from twoline_referral.config import Settings, get_settings
from twoline_referral.consents import ConsentSource, consent_service
from twoline_referral.consumers import bindings
from twoline_referral.disclosure import intake_fetcher
from twoline_referral.routes import disclosure_requests, router
from twoline_shared.broker import NatsCredential
from twoline_shared.runtime import ServiceRuntime, ServiceSpec, create_service_app


def credentials(settings: Settings) -> dict[str, NatsCredential]:
    """Two NATS users: `referral-fl` in the FIRSTLINE account, `referral-sl` in SECONDLINE."""
    return {
        "firstline": NatsCredential(
            user=settings.nats_user,
            password=settings.nats_password.get_secret_value(),
            inbox_prefix="_INBOX_referral_fl",
        ),
        "secondline": NatsCredential(
            user=settings.nats_sl_user,
            password=settings.nats_sl_password.get_secret_value(),
            inbox_prefix="_INBOX_referral_sl",
        ),
    }


SPEC = ServiceSpec(
    name="referral",
    title="twoline referral",
    description=(
        "The bridge. Checks consent, routes track tasks to a second-line office queue under a "
        "track id only, with the disclosure package sealed under the consent's key, and follows "
        "their status back to the NGO."
    ),
    routers=[router, disclosure_requests],
    migrations=Path(__file__).parent / "migrations",
    # Routed tracks go out on the second-line link; audit records through the first-line import.
    publishes={"secondline.referral.": "secondline", "audit.referral.": "firstline"},
    credentials=credentials,
    tags=[
        {"name": "referrals", "description": "Consent-gated referrals and their track status."},
        {
            "name": "disclosure-requests",
            "description": "Zone B's requests for more categories (step-up): released only by a "
            "new consent, or refused.",
        },
    ],
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # The consumers and responders run in worker threads and ask intake and the consent service
    # with `ServiceRuntime.call`; the runtime is made by `create_service_app`, so these find it
    # when they are first called.
    runtime: list[ServiceRuntime] = []

    def fetch_disclosure(
        client_ref: str, org: str, categories: list[str]
    ) -> dict[str, dict[str, Any]]:
        fetch = intake_fetcher(runtime[0], timeout=settings.disclosure_timeout_seconds)
        return fetch(client_ref, org, categories)

    def consents() -> ConsentSource:
        return consent_service(runtime[0], timeout=settings.consent_timeout_seconds)

    source = ConsentSource(
        active=lambda client_ref, org: consents().active(client_ref, org),
        status=lambda consent_ids: consents().status(consent_ids),
    )
    spec = dataclasses.replace(
        SPEC,
        # A grant that releases a step-up asks intake over this replica's link (F5).
        consumers=bindings(fetch_disclosure=fetch_disclosure, consents=source),
        # Zone B asks for a routed package's data key and joint review on the second-line link.
        responders=responders(consents=source),
    )
    app = create_service_app(spec, settings)
    runtime.append(app.state.runtime)
    return app
