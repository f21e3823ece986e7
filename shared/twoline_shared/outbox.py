"""Transactional outbox: events are rows written with the state change; a relay publishes them.

The relay claims rows with a lease (safe with several replicas), publishes each with
`Nats-Msg-Id` = event id, waits for the JetStream PubAck, and only then marks the row sent. If it
dies between publish and mark-sent, the row is published again after the lease and the broker
drops the duplicate inside the stream's duplicate window; consumers' inboxes catch anything later.
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from opentelemetry import trace
from sqlalchemy import Column, LargeBinary, Text, update
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, select

from twoline_shared.db import OUTBOX_DIRTY, UtcDateTime, utcnow
from twoline_shared.events import Event, encode, headers_for
from twoline_shared.telemetry import (
    context_from_headers,
    current_traceparent,
    trace_headers,
    tracer,
)

log = logging.getLogger("twoline.outbox")


class OutboxMessage(SQLModel, table=True):
    """An event waiting to be published (or published, with `sent_at`)."""

    __tablename__ = "outbox"

    seq: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, max_length=64)
    subject: str = Field(max_length=255)
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    headers: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    sent_at: datetime | None = Field(default=None, index=True, sa_type=UtcDateTime)
    attempts: int = 0
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_until: float | None = None
    last_error: str | None = Field(default=None, max_length=255)


def add_event(session: Session, event: Event) -> OutboxMessage:
    """Queue `event` in the caller's transaction; it is published only if that transaction commits."""
    message = OutboxMessage(
        event_id=event.id,
        subject=event.type,
        payload=encode(event),
        headers=json.dumps(headers_for(event, current_traceparent())),
    )
    session.add(message)
    session.info[OUTBOX_DIRTY] = True
    return message


Publisher = Callable[[str], JetStreamContext | None]


class OutboxRelay:
    """Publishes committed outbox rows to JetStream, oldest first, one replica per row at a time."""

    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        *,
        batch_size: int = 100,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        publish_timeout: float = 5.0,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.publish_timeout = publish_timeout
        self.tracer = tracer("twoline.outbox", tracer_provider)
        self.relay_id = uuid.uuid4().hex
        self._wake = asyncio.Event()
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def stop(self) -> None:
        self.stopping = True
        self.wake()

    def wake(self) -> None:
        """Ask the relay to look now (thread-safe; called after a commit that queued events)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def claim(self) -> list[OutboxMessage]:
        """Lease up to `batch_size` unsent rows to this relay; rows leased elsewhere are skipped."""
        now = time.time()
        unclaimed = OutboxMessage.sent_at.is_(None) & (  # type: ignore[union-attr]
            OutboxMessage.claimed_until.is_(None) | (OutboxMessage.claimed_until < now)  # type: ignore[union-attr,operator]
        )
        with Session(self.engine) as session:
            candidates = (
                select(OutboxMessage.seq)
                .where(unclaimed)
                .order_by(OutboxMessage.seq)  # type: ignore[arg-type]
                .limit(self.batch_size)
                .scalar_subquery()
            )
            # The lease condition is repeated in the outer WHERE: a concurrent replica's UPDATE
            # re-checks it on the row version it waited for, so a row is never leased twice.
            session.exec(  # type: ignore[call-overload]
                update(OutboxMessage)
                .where(OutboxMessage.seq.in_(candidates))  # type: ignore[union-attr]
                .where(unclaimed)
                .values(claimed_by=self.relay_id, claimed_until=now + self.lease_seconds)
            )
            session.commit()
            rows = session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.claimed_by == self.relay_id)
                .where(OutboxMessage.sent_at.is_(None))  # type: ignore[union-attr]
                .where(OutboxMessage.claimed_until > now)  # type: ignore[operator]
                .order_by(OutboxMessage.seq)  # type: ignore[arg-type]
            ).all()
            return list(rows)

    def mark_sent(self, seq: int) -> None:
        with Session(self.engine) as session:
            session.exec(  # type: ignore[call-overload]
                update(OutboxMessage)
                .where(OutboxMessage.seq == seq)
                .values(sent_at=utcnow(), claimed_by=None, claimed_until=None)
            )
            session.commit()

    def mark_failed(self, seq: int, error: str) -> None:
        with Session(self.engine) as session:
            row = session.get(OutboxMessage, seq)
            if row is not None and row.sent_at is None:
                row.attempts += 1
                row.last_error = error[:255]
                row.claimed_by = None
                row.claimed_until = None
                session.add(row)
                session.commit()

    def release(self, seqs: list[int | None]) -> None:
        if not seqs:
            return
        with Session(self.engine) as session:
            session.exec(  # type: ignore[call-overload]
                update(OutboxMessage)
                .where(OutboxMessage.seq.in_(seqs))  # type: ignore[union-attr]
                .where(OutboxMessage.claimed_by == self.relay_id)
                .values(claimed_by=None, claimed_until=None)
            )
            session.commit()

    async def publish(self, message: OutboxMessage) -> bool:
        """Publish one row and wait for its PubAck; True when the broker holds it."""
        js = self.publisher(message.subject)
        if js is None:
            await asyncio.to_thread(self.mark_failed, message.seq, "no connection for subject")
            return False
        headers = json.loads(message.headers)
        # The row's traceparent is the context the event was written in; the publish span is a
        # child of it, and the consumer's span a child of the publish span (W3C, ids only).
        with self.tracer.start_as_current_span(
            f"publish {message.subject}",
            context=context_from_headers(headers),
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "send",
                "messaging.destination.name": message.subject,
                "messaging.message.id": message.event_id,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            headers.update(trace_headers())
            try:
                await js.publish(
                    message.subject,
                    message.payload,
                    headers=headers,
                    timeout=self.publish_timeout,
                )
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(trace.StatusCode.ERROR)
                await asyncio.to_thread(self.mark_failed, message.seq, type(exc).__name__)
                log.warning("publish of outbox seq %s failed: %s", message.seq, type(exc).__name__)
                return False
        await asyncio.to_thread(self.mark_sent, message.seq)
        return True

    async def drain_once(self) -> int:
        """Publish what is pending now; returns how many rows were published."""
        published = 0
        claimed = await asyncio.to_thread(self.claim)
        for index, message in enumerate(claimed):
            if not await self.publish(message):
                # Keep order: hand the rest back at once so the next round retries from here.
                await asyncio.to_thread(self.release, [m.seq for m in claimed[index + 1 :]])
                break
            published += 1
        return published

    async def run(self) -> None:
        """Loop until cancelled: drain, then wait for a wake-up or the poll interval."""
        self._loop = asyncio.get_running_loop()
        # A flag as well as cancellation: Python 3.11's wait_for can turn a cancel into the
        # TimeoutError this loop expects from an idle poll.
        while not self.stopping:
            self._wake.clear()
            try:
                published = await self.drain_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the relay must outlive a database hiccup
                log.warning("outbox relay round failed: %s", type(exc).__name__)
                published = 0
            if published == self.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
