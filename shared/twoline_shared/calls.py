"""Service-to-service calls over NATS request/reply, inside one zone account.

The broker authenticates both ends: only a user whose permissions allow publishing on a call
subject can ask, and only the user allowed to subscribe to it can answer (with
`allow_responses`). Call subjects live under `svc.` so that no stream captures them: a request
or a reply is never stored by the broker.

A reply is `{"ok": true, "data": {...}}` or `{"ok": false, "status", "slug", "detail"}`; the
caller turns an error reply back into the same `ServiceError` the responder raised.

A call carries the caller's W3C `traceparent` in its headers (nothing else of the trace
context), and the responder answers in a server span under it: a call is part of the trace of
whatever asked.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry import context, trace
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from twoline_shared.db import session_scope
from twoline_shared.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServiceError,
    Unavailable,
)
from twoline_shared.telemetry import context_from_headers, serving, trace_headers, tracer

log = logging.getLogger("twoline.calls")

# Every service's reply inbox starts with this (twoline_shared.broker / NatsCredential).
REPLY_PREFIX = "_INBOX_"

# (session, request payload) -> reply data; runs in a worker thread inside one transaction.
CallHandler = Callable[[Session, dict[str, Any]], dict[str, Any]]

_BY_STATUS: dict[int, type[ServiceError]] = {
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Invalid,
}


@dataclass
class Responder:
    """A call subject this service answers, on one of its NATS links, in a queue group."""

    subject: str
    handler: CallHandler
    connection: str = "default"


def error_reply(exc: ServiceError) -> dict[str, Any]:
    return {"ok": False, "status": exc.status, "slug": exc.slug, "detail": exc.detail}


def raise_for_reply(reply: dict[str, Any], *, subject: str) -> dict[str, Any]:
    """The reply's data, or the responder's error raised again on the caller's side."""
    if reply.get("ok") is True and isinstance(reply.get("data"), dict):
        return reply["data"]
    status = reply.get("status")
    if reply.get("ok") is False and status in _BY_STATUS:
        error_type = _BY_STATUS[status]
        raise error_type(str(reply.get("detail") or error_type.title), slug=reply.get("slug"))
    raise Unavailable(f"The call {subject} failed.", slug="call-failed")


def _span_attributes(subject: str, operation: str) -> dict[str, str]:
    return {
        "messaging.system": "nats",
        "messaging.operation.type": operation,
        "messaging.destination.name": subject,
    }


async def call(
    nc: NATS | None,
    subject: str,
    payload: dict[str, Any],
    *,
    wait: float,
    tracer_provider: trace.TracerProvider | None = None,
    parent: context.Context | None = None,
) -> dict:
    """Ask the responder of `subject` and return its reply's data (503 if nobody answers).

    The call is a client span under `parent` (default: the current context), and its
    traceparent travels in the request's headers.
    """
    with tracer("twoline.calls", tracer_provider).start_as_current_span(
        f"call {subject}",
        context=parent,
        kind=trace.SpanKind.CLIENT,
        attributes=_span_attributes(subject, "send"),
        # F8: an error's message may hold what the call carried; only its type is recorded.
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            return await _ask(nc, subject, payload, wait=wait, headers=trace_headers())
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(trace.StatusCode.ERROR)
            raise


async def _ask(
    nc: NATS | None, subject: str, payload: dict[str, Any], *, wait: float, headers: dict[str, str]
) -> dict:
    if nc is None or not nc.is_connected:
        raise Unavailable(f"No broker link for {subject}.", slug="call-unavailable")
    try:
        msg = await nc.request(
            subject, json.dumps(payload).encode(), timeout=wait, headers=headers or None
        )
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError) as exc:
        raise Unavailable(
            f"Nobody answered {subject} ({type(exc).__name__}).", slug="call-unavailable"
        ) from exc
    try:
        reply = json.loads(msg.data)
    except ValueError as exc:
        raise Unavailable(f"The reply to {subject} is not JSON.", slug="call-failed") from exc
    if not isinstance(reply, dict):
        raise Unavailable(f"The reply to {subject} is not an object.", slug="call-failed")
    return raise_for_reply(reply, subject=subject)


def answer(
    engine: Engine,
    handler: CallHandler,
    data: bytes,
    after_commit: Callable[[Session], None] | None = None,
) -> dict[str, Any]:
    """Run `handler` on one request in its own transaction and build the reply."""
    try:
        payload = json.loads(data)
        if not isinstance(payload, dict):
            raise Invalid("A call payload is a JSON object.")
        with contextlib.contextmanager(session_scope)(engine, after_commit) as session:
            return {"ok": True, "data": handler(session, payload)}
    except ServiceError as exc:
        return error_reply(exc)
    except (ValueError, ValidationError) as exc:
        # ValidationError is a ValueError; neither message is echoed (it may hold the input).
        return error_reply(Invalid(f"The call payload is not valid ({type(exc).__name__})."))
    except Exception as exc:
        # The type only: a traceback's message could hold the data the call carried (F8).
        log.error("call handler failed (%s)", type(exc).__name__)
        return error_reply(Unavailable("The call failed on the responder's side."))


async def serve(
    nc: NATS,
    responder: Responder,
    *,
    queue: str,
    engine: Engine,
    after_commit: Callable[[Session], None] | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Any:
    """Subscribe `responder` in queue group `queue` so that replicas share the calls.

    Each call is answered in a server span whose parent is the caller's traceparent.
    """
    calls_tracer = tracer("twoline.calls", tracer_provider)

    async def on_request(msg: Msg) -> None:
        # A reply goes only to a caller's inbox. `allow_responses` would let the responder publish
        # on any reply subject the caller names — e.g. a stream subject, where a disclosure
        # package or a data key would be stored for good — so anything else is not answered.
        if not msg.reply.startswith(REPLY_PREFIX):
            log.warning("call on %s with a reply subject outside an inbox; ignored", msg.subject)
            return
        with (
            serving(tracer_provider),
            calls_tracer.start_as_current_span(
                f"answer {msg.subject}",
                context=context_from_headers(msg.headers),
                kind=trace.SpanKind.SERVER,
                attributes=_span_attributes(msg.subject, "process"),
                record_exception=False,
            ) as span,
        ):
            reply = await asyncio.to_thread(
                answer, engine, responder.handler, msg.data, after_commit
            )
            if reply.get("ok") is not True:
                # The stable slug of the error (a code), never its detail.
                span.set_attribute("error.type", str(reply.get("slug") or "error"))
            await msg.respond(json.dumps(reply).encode())

    return await nc.subscribe(responder.subject, queue=queue, cb=on_request)
