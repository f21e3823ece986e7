"""Consent service: consent grants per recipient agency, withdrawal and receipts (zone A)."""

from pathlib import Path

from fastapi import FastAPI

from twoline_consent.config import Settings, get_settings
from twoline_consent.consumers import BINDINGS
from twoline_consent.routes import router
from twoline_shared.runtime import ServiceSpec, create_service_app

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
    return create_service_app(SPEC, settings or get_settings())
