"""Audit records: id-only facts about who did what, published on `audit.<service>.<action>`.

A record is an event in the outbox, so it commits with the effect it describes. It carries ids,
roles, codes and categories, never personal data (F8).
"""

from typing import Any

from sqlmodel import Session

from twoline_shared.auth import Principal
from twoline_shared.events import new_event
from twoline_shared.outbox import add_event
from twoline_shared.telemetry import current_traceparent


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
    traceparent = current_traceparent()
    data: dict[str, Any] = {
        "action": action,
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
    event = new_event(
        source=f"twoline/{service}",
        type=f"audit.{service}.{resource_type}.{action}",
        subject=resource_id,
        **data,
    )
    add_event(session, event)
