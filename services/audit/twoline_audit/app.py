"""Audit service: the merged, hash-chained audit trail of every service (oversight)."""

from pathlib import Path

from fastapi import FastAPI

from twoline_audit.config import Settings, get_settings
from twoline_audit.consumers import BINDINGS
from twoline_audit.routes import router
from twoline_shared.runtime import ServiceSpec, create_service_app

SPEC = ServiceSpec(
    name="audit",
    title="twoline audit",
    description=(
        "Oversight. Every service's audit records (ids and codes, never personal data) in one "
        "append-only hash chain that auditors can read and verify."
    ),
    routers=[router],
    migrations=Path(__file__).parent / "migrations",
    # It publishes nothing: its NATS user may only fetch from AUDIT/audit.
    publishes={},
    consumers=BINDINGS,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings or get_settings())
