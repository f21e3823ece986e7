"""Inbox / idempotent consumer: durable JetStream pull consumers that apply each event once.

The processed event id is inserted in the same transaction as the handler's effect, and the
message is acked only after that commit. A redelivered or duplicated event finds its id in the
inbox and is acked without a second effect; a crash before commit leaves no id, so the broker
redelivers after `ack_wait` and the event is applied then.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel

from twoline_shared.db import UtcDateTime, utcnow
from twoline_shared.errors import Invalid
from twoline_shared.events import Event, InvalidEvent, decode
from twoline_shared.telemetry import context_from_headers, serving, tracer

log = logging.getLogger("twoline.inbox")

Handler = Callable[[Session, Event], None]

# Errors a handler raises when the event itself is wrong (not the moment): never retried.
PERMANENT = (Invalid, ValidationError)


class InboxRecord(SQLModel, table=True):
    """An event a consumer has applied (or deliberately skipped)."""

    __tablename__ = "inbox"

    consumer: str = Field(primary_key=True, max_length=64)
    event_id: str = Field(primary_key=True, max_length=64)
    event_type: str = Field(max_length=255)
    outcome: str = Field(default="applied", max_length=16)
    processed_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class DeadLetter(SQLModel, table=True):
    """A message given up on: undecodable, or still failing after `max_deliver` attempts."""

    __tablename__ = "dead_letter"

    id: int | None = Field(default=None, primary_key=True)
    consumer: str = Field(max_length=64)
    stream_seq: int
    event_id: str | None = Field(default=None, max_length=64)
    event_type: str | None = Field(default=None, max_length=255)
    error: str = Field(max_length=255)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


@dataclass
class ConsumerBinding:
    """A durable consumer provisioned in `broker.CONSUMERS`, and what this service does per type.

    A handler key is an exact event type, or a prefix ending in `.>` (NATS wildcard style) that
    matches every type below it; the exact key wins, then the longest prefix.
    """

    stream: str
    durable: str
    handlers: dict[str, Handler]
    connection: str = "default"
    batch: int = 32

    def handler_for(self, event_type: str) -> Handler | None:
        if event_type in self.handlers:
            return self.handlers[event_type]
        prefixes = [k for k in self.handlers if k.endswith(".>") and event_type.startswith(k[:-1])]
        return self.handlers[max(prefixes, key=len)] if prefixes else None


@dataclass
class InboxConsumer:
    """Fetches from one durable pull consumer and applies events exactly once."""

    engine: Engine
    binding: ConsumerBinding
    js: JetStreamContext
    max_deliver: int = 10
    after_commit: Callable[[Session], None] | None = None
    fetch_timeout: float = 1.0
    # The service's own provider: its consume spans, and whatever the handler traces.
    tracer_provider: trace.TracerProvider | None = None
    applied: int = field(default=0, init=False)
    stopping: bool = field(default=False, init=False)

    @property
    def name(self) -> str:
        return f"{self.binding.stream}.{self.binding.durable}"

    def apply(self, event: Event) -> bool:
        """Apply `event` in one transaction with its inbox row; False if it was already applied."""
        handler = self.binding.handler_for(event.type)
        with Session(self.engine, expire_on_commit=False) as session:
            if session.get(InboxRecord, (self.name, event.id)) is not None:
                return False
            # The inbox row goes in first so a concurrent replica blocks on it, then fails.
            session.add(
                InboxRecord(
                    consumer=self.name,
                    event_id=event.id,
                    event_type=event.type,
                    outcome="applied" if handler else "ignored",
                )
            )
            try:
                session.flush()
                if handler is not None:
                    handler(session, event)
                session.commit()
            except IntegrityError:
                session.rollback()
                if self._seen(event.id):
                    return False
                raise
            if self.after_commit is not None:
                self.after_commit(session)
        return handler is not None

    def _seen(self, event_id: str) -> bool:
        with Session(self.engine) as session:
            return session.get(InboxRecord, (self.name, event_id)) is not None

    def dead_letter(self, msg: Msg, error: str, event: Event | None = None) -> None:
        with Session(self.engine) as session:
            session.add(
                DeadLetter(
                    consumer=self.name,
                    stream_seq=msg.metadata.sequence.stream,
                    event_id=event.id if event else None,
                    event_type=event.type if event else None,
                    error=error[:255],
                )
            )
            session.commit()

    async def handle(self, msg: Msg) -> None:
        """Process one message: decode, apply in a transaction, then ack."""
        try:
            event = decode(msg.data)
        except InvalidEvent:
            await asyncio.to_thread(self.dead_letter, msg, "undecodable message")
            await msg.term()
            return
        parent = context_from_headers(msg.headers)
        with (
            serving(self.tracer_provider),
            tracer("twoline.inbox", self.tracer_provider).start_as_current_span(
                f"consume {event.type}",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "nats",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": msg.subject,
                    "messaging.message.id": event.id,
                    "messaging.consumer.group.name": self.binding.durable,
                },
                # F8: an exception's message may hold the event's data; only its type is kept.
                record_exception=False,
            ) as span,
        ):
            try:
                if await asyncio.to_thread(self.apply, event):
                    self.applied += 1
            except PERMANENT as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(trace.StatusCode.ERROR)
                # The event breaks its contract: retrying cannot help, so set it aside at once.
                await asyncio.to_thread(self.dead_letter, msg, type(exc).__name__, event)
                await msg.term()
                return
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(trace.StatusCode.ERROR)
                # No commit happened: the broker redelivers; give up after max_deliver.
                delivered = msg.metadata.num_delivered
                log.warning(
                    "%s: %s failed (%s), delivery %s",
                    self.name,
                    event.type,
                    type(exc).__name__,
                    delivered,
                )
                if delivered >= self.max_deliver:
                    await asyncio.to_thread(self.dead_letter, msg, type(exc).__name__, event)
                    await msg.term()
                else:
                    await msg.nak(delay=min(2.0**delivered, 30.0))
                return
        await msg.ack_sync(timeout=5.0)

    async def run(self) -> None:
        """Bind to the durable consumer and process messages until cancelled."""
        subscription = await self.js.pull_subscribe_bind(
            durable=self.binding.durable, stream=self.binding.stream
        )
        # A flag, not only cancellation: on Python 3.11 a cancel that lands as fetch's own
        # timeout fires comes back as TimeoutError, which this loop treats as "nothing yet".
        while not self.stopping:
            try:
                messages = await subscription.fetch(self.binding.batch, timeout=self.fetch_timeout)
            except TimeoutError:
                continue
            except nats.errors.Error as exc:
                log.warning("%s: fetch failed: %s", self.name, type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            for msg in messages:
                try:
                    await self.handle(msg)
                except (nats.errors.Error, TimeoutError) as exc:
                    # Ack lost: the event is redelivered and the inbox makes it a no-op.
                    log.warning("%s: ack failed: %s", self.name, type(exc).__name__)
