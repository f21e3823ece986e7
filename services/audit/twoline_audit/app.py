"""Audit service: the merged, hash-chained audit trail of every service (oversight)."""

import contextlib
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from twoline_audit import service
from twoline_audit.config import Settings, get_settings
from twoline_audit.consumers import BINDINGS
from twoline_audit.routes import router, stats_router, traces_router
from twoline_shared.db import session_scope
from twoline_shared.events import Event
from twoline_shared.runtime import ServiceSpec, create_service_app

SPEC = ServiceSpec(
    name="audit",
    title="twoline audit",
    description=(
        "Oversight. Every service's audit records (ids and codes, never personal data) in one "
        "append-only hash chain that auditors can read and verify."
    ),
    routers=[router, traces_router, stats_router],
    migrations=Path(__file__).parent / "migrations",
    # It publishes nothing: its NATS user may only fetch from AUDIT/audit.
    publishes={},
    consumers=BINDINGS,
)


def _own_refusals(engine: Engine) -> Callable[[Event], None]:
    """A refusal of the audit service's own routes (e.g. a coach asking for the log) is
    appended straight to its log: it publishes nothing, so it has no outbox to go through."""

    def record(event: Event) -> None:
        for attempt in range(5):
            try:
                with contextlib.contextmanager(session_scope)(engine) as session:
                    service.append(session, event=event)
                return
            except IntegrityError:
                # Another append took the index: read the new head and try again.
                if attempt == 4:
                    raise

    return record


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app(SPEC, settings or get_settings())
    app.state.record_refusal = _own_refusals(app.state.runtime.engine)
    return app
