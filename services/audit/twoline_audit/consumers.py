"""Events the audit service consumes: every service's audit records, whatever their type."""

from sqlmodel import Session

from twoline_audit import service
from twoline_shared.errors import Invalid
from twoline_shared.events import Event
from twoline_shared.inbox import ConsumerBinding, Handler

AUDIT_PREFIX = "audit."


def on_audit_record(session: Session, event: Event) -> None:
    """Any service recorded an audit fact: append it to the chain.

    A record is an object of fields with the time it was made; an envelope that is a valid
    CloudEvent but not that is set aside (dead-lettered at once), never appended.
    """
    if not isinstance(event.data, dict) or event.time is None or event.data_base64 is not None:
        raise Invalid("An audit record carries an object of fields and its time.")
    service.append(session, event=event)


class AuditHandlers(dict[str, Handler]):
    """A handler mapping that answers every `audit.*` type with `on_audit_record`.

    The kernel's InboxConsumer looks a handler up by the event's exact type
    (`handlers.get(event.type)`) and records events without a handler as ignored. Audit types are
    open-ended (`audit.<service>.<resource_type>.<action>`) and a record a service adds tomorrow
    must not be dropped today, so this mapping matches the prefix instead of a list of types.
    """

    def get(self, key: str, default: Handler | None = None) -> Handler | None:  # type: ignore[override]
        if key.startswith(AUDIT_PREFIX):
            return on_audit_record
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.startswith(AUDIT_PREFIX)

    def __getitem__(self, key: str) -> Handler:
        handler = self.get(key)
        if handler is None:
            raise KeyError(key)
        return handler


BINDINGS = [ConsumerBinding(stream="AUDIT", durable="audit", handlers=AuditHandlers())]
