"""Referral service: the bridge between zone A and zone B, and the only holder of both links."""

from pathlib import Path

from fastapi import FastAPI

from twoline_referral.calls import RESPONDERS
from twoline_referral.config import Settings, get_settings
from twoline_referral.consumers import BINDINGS
from twoline_referral.routes import router
from twoline_shared.broker import NatsCredential
from twoline_shared.runtime import ServiceSpec, create_service_app


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
    routers=[router],
    migrations=Path(__file__).parent / "migrations",
    # Routed tracks go out on the second-line link; audit records through the first-line import.
    publishes={"secondline.referral.": "secondline", "audit.referral.": "firstline"},
    consumers=BINDINGS,
    credentials=credentials,
    # Zone B asks for a routed package's data key on the second-line link (F4).
    responders=RESPONDERS,
    tags=[{"name": "referrals", "description": "Consent-gated referrals and their track status."}],
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings or get_settings())
