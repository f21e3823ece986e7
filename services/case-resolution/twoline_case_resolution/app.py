"""Case-resolution service: second-line cases, one per referral and agency (zone B)."""

from pathlib import Path

from fastapi import FastAPI

from twoline_case_resolution.config import Settings, get_settings
from twoline_case_resolution.consumers import BINDINGS
from twoline_case_resolution.routes import router
from twoline_shared.runtime import ServiceSpec, create_service_app

SPEC = ServiceSpec(
    name="case-resolution",
    title="twoline case-resolution",
    description=(
        "Zone B. Cases of ICAM coaches and Fedasil return counsellors, one per routed track; "
        "each office sees only its own agency's queue."
    ),
    routers=[router],
    migrations=Path(__file__).parent / "migrations",
    publishes={"secondline.case.": "default", "audit.case-resolution.": "default"},
    consumers=BINDINGS,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings or get_settings())
