"""Intake service: client records under a pseudonym (zone A)."""

from pathlib import Path

from fastapi import FastAPI

from twoline_intake.calls import RESPONDERS
from twoline_intake.config import Settings, get_settings
from twoline_intake.consumers import BINDINGS
from twoline_intake.routes import router
from twoline_shared.runtime import ServiceSpec, create_service_app

SPEC = ServiceSpec(
    name="intake",
    title="twoline intake",
    description="Zone A. NGO client records under a pseudonym; nothing here leaves without consent.",
    routers=[router],
    migrations=Path(__file__).parent / "migrations",
    publishes={"firstline.intake.": "default", "audit.intake.": "default"},
    consumers=BINDINGS,
    # The bridge asks for a client's disclosure package, only the categories a consent grants.
    responders=RESPONDERS,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings or get_settings())
