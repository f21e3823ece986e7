"""CloudEvents 1.0 envelope (structured JSON) and the NATS headers that travel with it."""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONTENT_TYPE = "application/cloudevents+json"


class InvalidEvent(ValueError):
    """A message that is not a CloudEvents 1.0 JSON envelope."""


class Event(BaseModel):
    """A fact in the past tense. `type` is also the NATS subject: `zone.service.entity.verb`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: str = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str
    type: str
    time: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    subject: str | None = None
    datacontenttype: str = "application/json"
    data: dict[str, Any] = Field(default_factory=dict)


def new_event(*, source: str, type: str, subject: str | None = None, **data: Any) -> Event:
    """Make an event; keyword arguments become `data` (ids, codes and categories only)."""
    return Event(source=source, type=type, subject=subject, data=data)


def encode(event: Event) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def decode(payload: bytes) -> Event:
    try:
        event = Event.model_validate(json.loads(payload))
    except (ValueError, ValidationError) as exc:
        raise InvalidEvent("not a CloudEvents 1.0 JSON envelope") from exc
    if event.specversion != "1.0":
        raise InvalidEvent(f"unsupported specversion {event.specversion!r}")
    return event


def headers_for(event: Event, traceparent: str | None = None) -> dict[str, str]:
    """`Nats-Msg-Id` = event id (broker de-duplication) and the W3C trace context."""
    headers = {"Nats-Msg-Id": event.id, "Content-Type": CONTENT_TYPE, "ce-type": event.type}
    if traceparent:
        headers["traceparent"] = traceparent
    return headers
