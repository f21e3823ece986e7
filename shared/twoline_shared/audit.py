"""Audit records: id-only facts about who did what, published on `audit.<service>.<action>`.

A record is an event in the outbox, so it commits with the effect it describes. It carries ids,
roles, codes and categories, never personal data (F8). The fields follow FHIR AuditEvent / IHE
BALP: `code` is the AuditEvent action (C, R, U, D or E) and `subtype` the service's own verb
(`disclose`, `accept`, `withdraw`, ...), also the last part of the event type.

A refusal (401, 403, a consent decision that denies) is recorded in a transaction of its own
(`record_refusal`), since the request's transaction rolls back with the error.
"""

import contextlib
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from twoline_shared.auth import Principal
from twoline_shared.db import session_scope
from twoline_shared.events import Event, new_event
from twoline_shared.outbox import add_event
from twoline_shared.telemetry import current_traceparent

# FHIR AuditEvent.action for each verb services record; any other verb is an execute (E).
_CODE = {
    "create": "C",
    "read": "R",
    "search": "R",
    "update": "U",
    "delete": "D",
    "purge": "D",
    "destroy": "D",
}


def audit_code(action: str) -> str:
    """The FHIR AuditEvent action code of a service verb."""
    return _CODE.get(action, "E")


def audit_event(
    *,
    service: str,
    action: str,
    actor: Principal | None,
    resource_type: str,
    resource_id: str,
    outcome: str = "success",
    **fields: Any,
) -> Event:
    """An audit record as an event on `audit.<service>.<resource_type>.<action>`."""
    traceparent = current_traceparent()
    data: dict[str, Any] = {
        "service": service,
        "action": action,
        "code": audit_code(action),
        "subtype": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "outcome": outcome,
        "actor": actor.sub if actor else None,
        "roles": sorted(actor.roles) if actor else [],
        "org": actor.org if actor else None,
        "agency": actor.agency if actor else None,
        "office": actor.office if actor else None,
        "trace_id": traceparent.split("-")[1] if traceparent else None,
    }
    data.update(fields)
    return new_event(
        source=f"twoline/{service}",
        type=f"audit.{service}.{resource_type}.{action}",
        subject=resource_id,
        **data,
    )


def record_audit(
    session: Session,
    *,
    service: str,
    action: str,
    actor: Principal | None,
    resource_type: str,
    resource_id: str,
    outcome: str = "success",
    **fields: Any,
) -> None:
    """Queue an audit record in the caller's transaction (ids and codes only)."""
    add_event(
        session,
        audit_event(
            service=service,
            action=action,
            actor=actor,
            resource_type=resource_type,
            resource_id=resource_id,
            outcome=outcome,
            **fields,
        ),
    )


def refusal_event(
    *,
    service: str,
    action: str,
    actor: Principal | None,
    resource_type: str,
    resource_id: str,
    reason: str,
    **fields: Any,
) -> Event:
    """The audit record of a denied access: `outcome` `denied`, with the reason (a slug)."""
    return audit_event(
        service=service,
        action=action,
        actor=actor,
        resource_type=resource_type,
        resource_id=resource_id,
        outcome="denied",
        reason=reason,
        **fields,
    )


def record_refusal(
    engine: Engine, event: Event, *, after_commit: Callable[[Session], None] | None = None
) -> None:
    """Queue a refusal's record in a transaction of its own (the request's rolls back)."""
    with contextlib.contextmanager(session_scope)(engine, after_commit) as session:
        add_event(session, event)
