"""CloudEvents 1.0 envelope in structured content mode (JSON event format), and the NATS headers
that travel with it.

The NATS protocol binding reads a message whose `content-type` is a CloudEvents media type as
structured mode, and a message with `ce-` headers as binary mode. twoline publishes structured
mode only: the whole event in the body, `content-type: application/cloudevents+json`, and no
header named `ce-…` (one would make a binding-aware receiver look for the attributes there).

`decode` accepts every spec-valid event in the JSON format — with or without `time`, `subject`
or `datacontenttype`, with `dataschema`, with extension attributes, with `data` of any JSON
type or `data_base64` — and refuses anything else as `InvalidEvent`. Whether an event's payload
is what its type promises is the consumer's check, not the envelope's.
"""

import base64
import binascii
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONTENT_TYPE = "application/cloudevents+json"
SPECVERSION = "1.0"

# Context attribute names: lower-case ASCII letters and digits (CloudEvents 1.0, 2. Notations).
_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]{1,20}")
# RFC 3339 date-time, as the `time` attribute requires.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
# An absolute URI (`dataschema`): a scheme, then anything but whitespace.
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_REQUIRED = ("specversion", "id", "source", "type")
_OPTIONAL = ("datacontenttype", "dataschema", "subject", "time", "data", "data_base64")


class InvalidEvent(ValueError):
    """A message that is not a CloudEvents 1.0 JSON envelope."""


class Event(BaseModel):
    """A fact in the past tense. `type` is also the NATS subject: `zone.service.entity.verb`.

    Extension attributes (spec-valid names, scalar values) are kept as extra fields.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: str = SPECVERSION
    # Bounded as the inbox and dead-letter tables keep them: longer is refused, not truncated.
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=64)
    source: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=255)
    time: str | None = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    subject: str | None = Field(default=None, min_length=1)
    datacontenttype: str | None = "application/json"
    dataschema: str | None = None
    # Any JSON value in the JSON format; twoline's own events carry an object.
    data: Any = Field(default_factory=dict)
    data_base64: str | None = None

    @model_validator(mode="after")
    def _spec(self) -> "Event":
        if self.specversion != SPECVERSION:
            raise ValueError(f"unsupported specversion {self.specversion!r}")
        if self.time is not None and not _RFC3339.fullmatch(self.time):
            raise ValueError("time must be an RFC 3339 timestamp")
        if self.dataschema is not None and not _ABSOLUTE_URI.fullmatch(self.dataschema):
            raise ValueError("dataschema must be an absolute URI")
        if self.data_base64 is not None:
            try:
                base64.b64decode(self.data_base64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("data_base64 is not base64") from exc
        for name, value in (self.model_extra or {}).items():
            if not _ATTRIBUTE_NAME.fullmatch(name):
                raise ValueError("an extension attribute's name is lower-case letters and digits")
            if not isinstance(value, str | int | bool):
                raise ValueError("an extension attribute's value is a string, integer or boolean")
        return self

    @property
    def extensions(self) -> dict[str, Any]:
        """The extension attributes it carries (none on twoline's own events)."""
        return dict(self.model_extra or {})


def new_event(*, source: str, type: str, subject: str | None = None, **data: Any) -> Event:
    """Make an event; keyword arguments become `data` (ids, codes and categories only)."""
    return Event(source=source, type=type, subject=subject, data=data)


def encode(event: Event) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def decode(payload: bytes) -> Event:
    """The event in a structured-mode message body; `InvalidEvent` unless it is spec-valid."""
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise InvalidEvent("not JSON") from exc
    if not isinstance(document, dict):
        raise InvalidEvent("not a JSON object")
    missing = [name for name in _REQUIRED if not isinstance(document.get(name), str)]
    if missing:
        raise InvalidEvent("a required context attribute is missing or not a string")
    for name in _OPTIONAL:
        if name in document and document[name] is None:
            # JSON format: an absent attribute is left out, never null.
            raise InvalidEvent("a context attribute is null")
    if "data" in document and "data_base64" in document:
        raise InvalidEvent("an event has data or data_base64, not both")
    if "data" not in document:
        document = {**document, "data": None}
    if "time" not in document:
        document = {**document, "time": None}
    if "datacontenttype" not in document:
        document = {**document, "datacontenttype": None}
    try:
        return Event.model_validate(document)
    except (ValueError, ValidationError) as exc:
        raise InvalidEvent("not a CloudEvents 1.0 JSON envelope") from exc


def headers_for(event: Event, traceparent: str | None = None) -> dict[str, str]:
    """`Nats-Msg-Id` = event id (broker de-duplication), the structured-mode content type and
    the W3C trace context; never a `ce-` header (that would say binary mode)."""
    headers = {"Nats-Msg-Id": event.id, "Content-Type": CONTENT_TYPE}
    if traceparent:
        headers["traceparent"] = traceparent
    return headers
