"""Tracing: a provider per service, a hook for every provider, export only when OTEL_* asks,
and the W3C trace context carried across the project's own nats-server (outbox, inbox, calls)."""

import asyncio
import contextlib
import json

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlmodel import Session, SQLModel, select

from twoline.natsserver import credential
from twoline_shared import telemetry
from twoline_shared.broker import connect
from twoline_shared.calls import Responder, call, serve
from twoline_shared.db import create_db_engine, session_scope
from twoline_shared.errors import NotFound, Unavailable
from twoline_shared.events import Event, new_event
from twoline_shared.inbox import ConsumerBinding, DeadLetter, InboxConsumer, InboxRecord
from twoline_shared.outbox import OutboxMessage, OutboxRelay, add_event

TYPE = "firstline.intake.client.registered"
CALL = "svc.intake.disclosure"


@pytest.fixture
def no_otel_env(monkeypatch):
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def named(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in spans.get_finished_spans() if s.name == name]
    return span


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


# ---------------------------------------------------------------- providers


def test_each_service_provider_names_its_own_service(spans, no_otel_env):
    intake, audit = telemetry.setup_tracing("intake"), telemetry.setup_tracing("audit")
    intake.get_tracer("t").start_span("in intake").end()
    audit.get_tracer("t").start_span("in audit").end()

    assert service_of(named(spans, "in intake")) == "intake"
    assert service_of(named(spans, "in audit")) == "audit"
    # Code outside any service still traces, through the process-wide provider.
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    telemetry.tracer("t").start_span("outside").end()
    assert service_of(named(spans, "outside")) not in ("intake", "audit")


def test_code_run_for_a_service_traces_through_that_services_provider(spans, no_otel_env):
    consent = telemetry.setup_tracing("consent")
    with telemetry.serving(consent):
        assert telemetry.current_provider() is consent
        telemetry.tracer("t").start_span("for consent").end()
    assert telemetry.current_provider() is not consent
    assert service_of(named(spans, "for consent")) == "consent"


def test_the_hook_reaches_existing_and_future_providers_until_removed(no_otel_env):
    existing = telemetry.setup_tracing("referral")
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    telemetry.add_span_processor(processor)
    try:
        future = telemetry.setup_tracing("case-resolution")
        existing.get_tracer("t").start_span("old").end()
        future.get_tracer("t").start_span("new").end()
    finally:
        telemetry.remove_span_processor(processor)
    existing.get_tracer("t").start_span("after removal").end()

    assert sorted((s.name, service_of(s)) for s in exporter.get_finished_spans()) == [
        ("new", "case-resolution"),
        ("old", "referral"),
    ]


def test_nothing_is_exported_unless_otel_variables_ask(no_otel_env):
    assert telemetry.exporters_from_environment() == []
    no_otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    no_otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert telemetry.exporters_from_environment() == []


@pytest.mark.parametrize(
    "variables",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"},
        {"OTEL_TRACES_EXPORTER": "otlp"},
    ],
)
def test_otel_variables_select_the_otlp_exporter(no_otel_env, variables):
    for name, value in variables.items():
        no_otel_env.setenv(name, value)
    [exporter] = telemetry.exporters_from_environment()
    assert isinstance(exporter, OTLPSpanExporter)
    exporter.shutdown()
    # A provider built now carries it (constructed only: no span is sent).
    provider = telemetry.create_provider("intake")
    provider.shutdown()


def test_otel_sdk_disabled_exports_nothing(no_otel_env):
    no_otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    no_otel_env.setenv("OTEL_SDK_DISABLED", "true")
    assert telemetry.exporters_from_environment() == []


# ---------------------------------------------------------------- context, F8


def test_only_the_traceparent_crosses_never_baggage_or_tracestate(spans, no_otel_env):
    provider = telemetry.setup_tracing("intake")
    ctx = baggage.set_baggage("name", "cnry-display-name")
    token = otel_context.attach(ctx)
    try:
        with provider.get_tracer("t").start_as_current_span("request"):
            headers = telemetry.trace_headers()
            assert list(headers) == ["traceparent"]
            assert headers["traceparent"] == telemetry.current_traceparent()
    finally:
        otel_context.detach(token)
    remote = telemetry.context_from_headers(
        {**headers, "baggage": "name=cnry", "tracestate": "k=cnry"}
    )
    assert baggage.get_all(remote) == {}
    parent = trace.get_current_span(remote).get_span_context()
    assert parent.trace_id == named(spans, "request").context.trace_id
    assert not parent.trace_state


def test_a_query_string_reaches_no_span_with_its_values(spans, no_otel_env):
    provider = telemetry.setup_tracing("consent")
    provider.get_tracer("t").start_span(
        "GET /v1/consents", attributes={"url.query": "client_ref=cnry-name&limit=5"}
    ).end()
    assert named(spans, "GET /v1/consents").attributes["url.query"] == (
        "client_ref=REDACTED&limit=REDACTED"
    )


def test_resumed_work_joins_the_stored_trace_and_links_the_request(spans, no_otel_env):
    provider = telemetry.setup_tracing("case-resolution")
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("routed consume"):
        stored = telemetry.current_traceparent()
    with (
        telemetry.serving(provider),
        tracer.start_as_current_span("POST accept"),
        telemetry.resume_trace(stored, "case change-status", attributes={"status": "x"}),
    ):
        written = telemetry.current_traceparent()

    routed, request, resumed = (
        named(spans, n) for n in ("routed consume", "POST accept", "case change-status")
    )
    assert resumed.context.trace_id == routed.context.trace_id != request.context.trace_id
    assert resumed.parent.span_id == routed.context.span_id
    assert [link.context.span_id for link in resumed.links] == [request.context.span_id]
    assert service_of(resumed) == "case-resolution"
    # What the use case writes (its events' headers) carries the stored trace.
    assert written.split("-")[1] == format(routed.context.trace_id, "032x")


def test_without_a_stored_trace_resumed_work_is_a_child_of_the_request(spans, no_otel_env):
    provider = telemetry.setup_tracing("case-resolution")
    with telemetry.serving(provider), provider.get_tracer("t").start_as_current_span("POST"):
        for stored in (None, "not-a-traceparent"):
            with telemetry.resume_trace(stored, f"work {stored}"):
                pass
    request = named(spans, "POST")
    for stored in (None, "not-a-traceparent"):
        work = named(spans, f"work {stored}")
        assert work.parent.span_id == request.context.span_id
        assert work.links == ()


# ---------------------------------------------------------------- across the broker


@pytest.fixture
def engine(make_database_url):
    engine = create_db_engine(make_database_url("telemetry"))
    SQLModel.metadata.create_all(
        engine,
        tables=[
            OutboxMessage.__table__,  # type: ignore[list-item]
            InboxRecord.__table__,  # type: ignore[list-item]
            DeadLetter.__table__,  # type: ignore[list-item]
        ],
    )
    yield engine
    engine.dispose()


@pytest.fixture
async def conns(nats_server):
    names = ("intake", "consent", "referral-fl")
    conns = {
        n: await connect(nats_server.url, credential(n, nats_server.passwords), name=n)
        for n in names
    }
    yield conns
    for nc in conns.values():
        await nc.close()


@pytest.mark.nats
async def test_outbox_publish_and_inbox_consume_carry_one_trace_across_nats(
    engine, conns, spans, no_otel_env
):
    intake, consent = telemetry.setup_tracing("intake"), telemetry.setup_tracing("consent")
    seen: dict[str, object] = {}

    def handler(session: Session, event: Event) -> None:
        seen["traceparent"] = telemetry.current_traceparent()
        seen["provider"] = telemetry.current_provider()

    with intake.get_tracer("t").start_as_current_span("POST /v1/clients"):
        for session in session_scope(engine):
            add_event(session, new_event(source="test", type=TYPE, client_ref="C-1", org="o"))
    relay = OutboxRelay(engine, lambda subject: conns["intake"].jetstream(), tracer_provider=intake)
    assert await relay.drain_once() == 1

    consumer = InboxConsumer(
        engine=engine,
        binding=ConsumerBinding(stream="FIRSTLINE", durable="consent", handlers={TYPE: handler}),
        js=conns["consent"].jetstream(),
        tracer_provider=consent,
    )
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(100):
            if consumer.applied:
                break
            await asyncio.sleep(0.1)
    finally:
        consumer.stopping = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert consumer.applied == 1

    request = named(spans, "POST /v1/clients")
    publish, consume = named(spans, f"publish {TYPE}"), named(spans, f"consume {TYPE}")
    assert publish.parent.span_id == request.context.span_id
    assert consume.parent.span_id == publish.context.span_id
    assert {request.context.trace_id, publish.context.trace_id, consume.context.trace_id} == {
        request.context.trace_id
    }
    assert publish.kind == trace.SpanKind.PRODUCER and consume.kind == trace.SpanKind.CONSUMER
    assert (service_of(publish), service_of(consume)) == ("intake", "consent")
    # The handler runs for consent, under the consume span.
    assert seen["provider"] is consent
    assert seen["traceparent"].split("-")[2] == format(consume.context.span_id, "016x")
    # The row keeps the writer's context; the message on the wire named the publish span.
    with Session(engine) as session:
        [row] = session.exec(select(OutboxMessage)).all()
        assert json.loads(row.headers)["traceparent"].split("-")[2] == format(
            request.context.span_id, "016x"
        )


@pytest.mark.nats
async def test_a_call_carries_the_trace_to_the_responders_server_span(
    engine, conns, spans, no_otel_env
):
    referral, intake = telemetry.setup_tracing("referral"), telemetry.setup_tracing("intake")
    seen: dict[str, object] = {}

    def handler(session: Session, payload: dict) -> dict:
        if payload.get("probe"):
            raise NotFound("probe")
        seen["traceparent"] = telemetry.current_traceparent()
        seen["provider"] = telemetry.current_provider()
        return {"categories": payload["categories"]}

    await serve(
        conns["intake"],
        Responder(CALL, handler),
        queue="intake",
        engine=engine,
        tracer_provider=intake,
    )
    await conns["intake"].flush()
    for _ in range(50):  # a fresh subscription may take a moment to reach the other connection
        try:
            await call(conns["referral-fl"], CALL, {"probe": True}, wait=1)
        except NotFound:
            break
        except Unavailable:
            await asyncio.sleep(0.1)
    spans.clear()

    with referral.get_tracer("t").start_as_current_span("POST /v1/referrals") as request:
        parent = otel_context.get_current()
    reply = await call(
        conns["referral-fl"],
        CALL,
        {"categories": ["needs"]},
        wait=5,
        tracer_provider=referral,
        parent=parent,
    )
    assert reply == {"categories": ["needs"]}

    asked, answered = named(spans, f"call {CALL}"), named(spans, f"answer {CALL}")
    assert asked.parent.span_id == request.get_span_context().span_id
    assert answered.parent.span_id == asked.context.span_id
    assert answered.context.trace_id == request.get_span_context().trace_id
    assert (service_of(asked), service_of(answered)) == ("referral", "intake")
    assert (asked.kind, answered.kind) == (trace.SpanKind.CLIENT, trace.SpanKind.SERVER)
    assert seen["provider"] is intake
    assert seen["traceparent"].split("-")[2] == format(answered.context.span_id, "016x")


# ---------------------------------------------------------------- a service's HTTP spans


def test_a_services_requests_trace_through_its_own_provider_from_its_own_edge(
    service_settings, issuer, spans, no_otel_env
):
    from tests.conftest import NGO_GHENT, running
    from twoline_intake.app import create_app
    from twoline_intake.config import Settings

    callers_trace = "0af7651916cd43dd8448eb211c80319c"
    with running(create_app(service_settings(Settings, "intake"))) as client:
        created = client.post(
            "/v1/clients",
            json={"display_name": "cnry-name-edge"},
            headers={
                **issuer.headers(**NGO_GHENT),
                "traceparent": f"00-{callers_trace}-b7ad6b7169203331-01",
                "baggage": "name=cnry-baggage",
            },
        )
        assert created.status_code == 201, created.text
        client.get("/v1/clients?display_name=cnry-name-query", headers=issuer.headers(**NGO_GHENT))
        with Session(client.app.state.runtime.engine) as session:
            rows = session.exec(select(OutboxMessage)).all()

    post = named(spans, "POST /v1/clients")
    assert service_of(post) == "intake"
    # F8: the caller's trace context is not taken over; the trace starts at the service ...
    assert post.parent is None
    assert format(post.context.trace_id, "032x") != callers_trace
    # ... and the events the request wrote carry that trace.
    written = [r for r in rows if r.subject.endswith(("client.registered", "client.create"))]
    assert len(written) == 2
    assert {json.loads(r.headers)["traceparent"].split("-")[1] for r in written} == {
        format(post.context.trace_id, "032x")
    }
    [get] = [s for s in spans.get_finished_spans() if s.name.startswith("GET /v1/clients")]
    assert get.attributes["url.query"] == "display_name=REDACTED"
    everything = repr(
        [(s.name, dict(s.attributes or {}), s.events) for s in spans.get_finished_spans()]
    )
    assert "cnry" not in everything
