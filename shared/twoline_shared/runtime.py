"""Service runtime: one `create_service_app` for all five services (DB, NATS, relay, consumers)."""

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import text
from sqlmodel import Session
from starlette.types import Receive, Scope, Send

from twoline_shared.auth import TokenVerifier
from twoline_shared.broker import NatsCredential, connect_until_up
from twoline_shared.calls import Responder, call, serve
from twoline_shared.db import OUTBOX_DIRTY, create_db_engine
from twoline_shared.errors import Unavailable, install_error_handlers, problem
from twoline_shared.inbox import ConsumerBinding, InboxConsumer
from twoline_shared.limits import RequestSizeLimit
from twoline_shared.migrations import upgrade
from twoline_shared.openapi import (
    NOT_READY,
    Liveness,
    Readiness,
    install_api_description,
    problems,
)
from twoline_shared.outbox import OutboxRelay
from twoline_shared.settings import ServiceSettings
from twoline_shared.telemetry import serving, setup_tracing

log = logging.getLogger("twoline.runtime")


@dataclass
class ServiceSpec:
    """What makes a service itself; everything else is the same for all five."""

    name: str
    title: str
    description: str
    routers: Sequence[APIRouter]
    migrations: Path
    # subject prefix -> NATS link name that publishes it (the referral bridge has two links)
    publishes: dict[str, str]
    consumers: Sequence[ConsumerBinding] = ()
    credentials: Callable[[Any], dict[str, NatsCredential]] | None = None
    # Call subjects this service answers (request/reply inside a zone account).
    responders: Sequence[Responder] = ()
    tags: list[dict[str, str]] = field(default_factory=list)


def default_credentials(settings: ServiceSettings) -> dict[str, NatsCredential]:
    user = settings.nats_user
    return {
        "default": NatsCredential(
            user=user,
            password=settings.nats_password.get_secret_value(),
            inbox_prefix="_INBOX_" + user.replace("-", "_"),
        )
    }


class ServiceRuntime:
    """Holds what a running replica needs; nothing in it is state that matters beyond a restart."""

    def __init__(self, spec: ServiceSpec, settings: ServiceSettings) -> None:
        self.spec = spec
        self.settings = settings
        # This service's own tracer provider (service.name = spec.name), even with five
        # services in one process; requests, relay, consumers and calls all trace through it.
        self.tracer_provider = setup_tracing(spec.name)
        self.engine = create_db_engine(settings.database_url)
        self.verifier = TokenVerifier(
            jwks_url=settings.auth_jwks_url,
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            algorithms=settings.auth_algorithms,
        )
        self.connections: dict[str, NATS] = {}
        self.relay = OutboxRelay(
            self.engine,
            self.js_for,
            lease_seconds=settings.outbox_lease_seconds,
            poll_seconds=settings.outbox_poll_seconds,
            tracer_provider=self.tracer_provider,
        )
        self.consumers: list[InboxConsumer] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def js_for(self, subject: str) -> JetStreamContext | None:
        """The JetStream context allowed to publish `subject`, if that link is up."""
        for prefix, link in self.spec.publishes.items():
            if subject.startswith(prefix):
                nc = self.connections.get(link)
                return nc.jetstream() if nc is not None and nc.is_connected else None
        return None

    def after_commit(self, session: Session) -> None:
        if session.info.pop(OUTBOX_DIRTY, False):
            self.relay.wake()

    def call(
        self, link: str, subject: str, payload: dict[str, Any], *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """A blocking service call for route and consumer code (which runs in worker threads)."""
        if self._loop is None:
            raise Unavailable(f"No broker link for {subject}.", slug="call-unavailable")
        future = asyncio.run_coroutine_threadsafe(
            call(
                self.connections.get(link),
                subject,
                payload,
                wait=timeout,
                tracer_provider=self.tracer_provider,
                # The caller's span (request or consume) lives in this worker thread.
                parent=otel_context.get_current(),
            ),
            self._loop,
        )
        try:
            return future.result(timeout + 1.0)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise Unavailable(
                f"Nobody answered {subject} in time.", slug="call-unavailable"
            ) from exc

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(upgrade, self.engine, self.spec.migrations)
        if self.settings.nats_enabled:
            self._tasks.append(asyncio.create_task(self._bring_up_messaging()))

    async def _bring_up_messaging(self) -> None:
        credentials = (self.spec.credentials or default_credentials)(self.settings)
        for link, credential in credentials.items():
            self.connections[link] = await connect_until_up(
                self.settings.nats_url, credential, name=f"{self.spec.name}:{link}"
            )
        for responder in self.spec.responders:
            await serve(
                self.connections[responder.connection],
                responder,
                queue=self.spec.name,
                engine=self.engine,
                after_commit=self.after_commit,
                tracer_provider=self.tracer_provider,
            )
        self._tasks.append(asyncio.create_task(self.relay.run()))
        for binding in self.spec.consumers:
            consumer = InboxConsumer(
                engine=self.engine,
                binding=binding,
                js=self.connections[binding.connection].jetstream(),
                max_deliver=self.settings.consumer_max_deliver,
                after_commit=self.after_commit,
                tracer_provider=self.tracer_provider,
            )
            self.consumers.append(consumer)
            self._tasks.append(asyncio.create_task(self._supervise(consumer)))

    async def _supervise(self, consumer: InboxConsumer) -> None:
        """Restart a consumer loop that fails (e.g. its durable is not provisioned yet)."""
        while not consumer.stopping:
            try:
                await consumer.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "consumer %s stopped (%s); restarting", consumer.name, type(exc).__name__
                )
                await asyncio.sleep(2.0)

    async def stop(self) -> None:
        self.relay.stop()
        for consumer in self.consumers:
            consumer.stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: shutdown must not hang on a loop that swallowed its cancellation.
            _, pending = await asyncio.wait(self._tasks, timeout=5.0)
            for task in pending:
                log.warning("task %s did not stop in time", task.get_name())
        self._tasks.clear()
        # close, not drain: nats-py's drain can wait its whole timeout on a pull subscription's
        # leftover messages. Nothing is lost — relay and consumers are already stopped, unacked
        # messages are redelivered, and unsent outbox rows are retried by the next replica.
        for nc in self.connections.values():
            with contextlib.suppress(Exception):
                await nc.close()
        self.connections.clear()
        self.engine.dispose()
        # Hand the spans of this run to their exporters (bounded; no exporter by default).
        await asyncio.to_thread(self.tracer_provider.force_flush, 5000)

    def check_database(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def nats_ready(self) -> bool:
        if not self.settings.nats_enabled:
            return True
        expected = (self.spec.credentials or default_credentials)(self.settings)
        return all(
            link in self.connections and self.connections[link].is_connected for link in expected
        )


health = APIRouter(tags=["health"])


@health.get("/healthz", response_model=Liveness)
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@health.get(
    "/readyz",
    response_model=None,
    responses={200: {"model": Readiness}, **problems(NOT_READY)},
)
async def readyz(request: Request) -> dict[str, Any] | JSONResponse:
    """Readiness: the database answers and every NATS link is connected."""
    runtime: ServiceRuntime = request.app.state.runtime
    checks = {
        "database": await asyncio.to_thread(runtime.check_database),
        "nats": runtime.nats_ready(),
    }
    if all(checks.values()):
        return {"status": "ready", "checks": checks}
    failing = ", ".join(name for name, ok in checks.items() if not ok)
    response = problem(
        503, "not-ready", "Not ready", f"Not ready: {failing}.", request, checks=checks
    )
    response.headers["Retry-After"] = str(Unavailable.retry_after_seconds)
    return response


def _skip_health(scope: Any) -> bool:
    return scope.get("path") in ("/healthz", "/readyz")


# A caller's own trace context: the trace starts at the service instead (see ServiceApp).
_CALLER_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


class ServiceApp(FastAPI):
    """A service's FastAPI app, run on behalf of its service: code that traces during a request
    or the lifespan (e.g. `telemetry.resume_trace`) uses the service's own provider.

    F8: a caller's trace context is not taken over — its trace id could be derived from anything,
    and it would travel with the referral into zone B — so each request starts a trace of the
    service's own (the headers go before FastAPI's telemetry reads them).
    """

    def __init__(self, *, tracer_provider: TracerProvider, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tracer_provider = tracer_provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = scope.get("headers") or []
            if any(name in _CALLER_TRACE_HEADERS for name, _ in headers):
                scope = {
                    **scope,
                    "headers": [(n, v) for n, v in headers if n not in _CALLER_TRACE_HEADERS],
                }
        with serving(self.tracer_provider):
            await super().__call__(scope, receive, send)


def create_service_app(spec: ServiceSpec, settings: ServiceSettings) -> FastAPI:
    """Build a service's FastAPI app: routes under /v1, problem+json, health, lifespan."""
    runtime = ServiceRuntime(spec, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = ServiceApp(
        tracer_provider=runtime.tracer_provider,
        title=spec.title,
        description=spec.description,
        version="0.1.0",
        lifespan=lifespan,
        openapi_tags=spec.tags or None,
        # The kernel's description and docs pages instead (openapi.install_api_description).
        docs_url=None,
        redoc_url=None,
        # Built-in OpenTelemetry spans through the service's own provider; its log records carry
        # rejected input values, so they stay off (F8), as do per-dependency operation spans.
        # Export is the provider's (OTEL_*), so FastAPI adds no exporter of its own.
        telemetry={
            "tracer_provider": runtime.tracer_provider,
            "auto_configure": False,
            "tracing": True,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "exclude": _skip_health,
        },
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(health)
    for router in spec.routers:
        app.include_router(router, prefix="/v1")
    app.add_middleware(RequestSizeLimit)
    install_api_description(app)
    return app
