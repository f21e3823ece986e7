"""OpenTelemetry: a tracer provider per service and W3C context carried in message headers.

Each service gets its own `TracerProvider` (resource `service.name` = the service), so five
services in one process (the tests, the embedded default) still tell their spans apart. Code
that runs on behalf of a service (a request, a consumer, a call) finds that service's provider
through `current_provider()`; code outside any service uses the global one.

Export is chosen by the standard `OTEL_*` variables and is off by default: `OTEL_TRACES_EXPORTER`
(`otlp`, `console`, `none`, comma-separated), or OTLP over HTTP when only
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; the exporter itself
reads the rest (`OTEL_EXPORTER_OTLP_*`), the SDK the sampler (`OTEL_TRACES_SAMPLER`), the batch
processor (`OTEL_BSP_*`) and `OTEL_SDK_DISABLED`.

F8: spans hold ids, codes and subjects only. Only `traceparent` crosses NATS — never `tracestate`
or baggage, which a caller could fill with anything — and query values are redacted.
"""

import contextlib
import contextvars
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("twoline.telemetry")

# W3C Trace Context only, whatever OTEL_PROPAGATORS says: it is what the event envelope names.
_W3C = TraceContextTextMapPropagator()

_current: contextvars.ContextVar[trace.TracerProvider | None] = contextvars.ContextVar(
    "twoline_tracer_provider", default=None
)
_global_lock = threading.Lock()


class _Redact(SpanProcessor):
    """F8: a query string is caller input, not an id; its values never reach a span."""

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        query = (span.attributes or {}).get("url.query")
        if isinstance(query, str) and query:
            keys = [part.split("=", 1)[0] for part in query.split("&")]
            span.set_attribute("url.query", "&".join(f"{key}=REDACTED" for key in keys))


class _Hooks(SpanProcessor):
    """The processors added with `add_span_processor`, shared by every provider of the process."""

    def __init__(self) -> None:
        self.processors: tuple[SpanProcessor, ...] = ()
        self._lock = threading.Lock()

    def add(self, processor: SpanProcessor) -> None:
        with self._lock:
            self.processors = (*self.processors, processor)

    def remove(self, processor: SpanProcessor) -> None:
        with self._lock:
            self.processors = tuple(p for p in self.processors if p is not processor)

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        for processor in self.processors:
            processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self.processors:
            processor.on_end(span)

    def shutdown(self) -> None:
        # Whoever added a processor shuts it down; a provider's exit must not do it for them.
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self.processors)


_HOOKS = _Hooks()


def add_span_processor(processor: SpanProcessor) -> None:
    """Attach `processor` to every provider of this process, existing and future (e.g. a test's
    in-memory exporter)."""
    _HOOKS.add(processor)


def remove_span_processor(processor: SpanProcessor) -> None:
    """Detach a processor added with `add_span_processor` (the caller shuts it down)."""
    _HOOKS.remove(processor)


def exporters_from_environment() -> list[SpanExporter]:
    """The span exporters the standard `OTEL_*` variables ask for; none by default."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not names:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = "otlp" if endpoint else "none"
    exporters: list[SpanExporter] = []
    for name in {n.strip() for n in names.split(",")} - {"", "none"}:
        if name == "otlp":
            protocol = os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            )
            if protocol != "http/protobuf":
                log.warning("OTLP protocol %s is not installed; using http/protobuf", protocol)
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER %s; ignored", name)
    return exporters


def create_provider(service_name: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """A tracer provider for one service: its own `service.name`, the exporters `OTEL_*` asks for
    (or `exporter`), and the processors added with `add_span_processor`."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(_Redact())
    provider.add_span_processor(_HOOKS)
    for each in [exporter] if exporter is not None else exporters_from_environment():
        provider.add_span_processor(BatchSpanProcessor(each))
    return provider


def setup_tracing(service_name: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """The service's own provider; the first one also sets the process-wide global provider
    (named by `OTEL_SERVICE_NAME`, else `twoline`) for code that runs outside any service."""
    with _global_lock:
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            fallback = os.environ.get("OTEL_SERVICE_NAME") or "twoline"
            trace.set_tracer_provider(create_provider(fallback))
    return create_provider(service_name, exporter)


def current_provider() -> trace.TracerProvider:
    """The provider of the service this code runs for, else the global one."""
    return _current.get() or trace.get_tracer_provider()


@contextlib.contextmanager
def serving(provider: trace.TracerProvider | None) -> Iterator[None]:
    """Run the block on behalf of the service that owns `provider` (None: leave as is)."""
    if provider is None:
        yield
        return
    token = _current.set(provider)
    try:
        yield
    finally:
        _current.reset(token)


def tracer(name: str, provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """A tracer of `provider`, else of the service this code runs for."""
    return (provider or current_provider()).get_tracer(name)


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, if any."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


def trace_headers(ctx: context.Context | None = None) -> dict[str, str]:
    """`{"traceparent": ...}` for `ctx` (default: the current context); nothing else crosses."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=ctx)
    return {"traceparent": carrier["traceparent"]} if "traceparent" in carrier else {}


def context_from_headers(headers: Mapping[str, str] | None) -> context.Context:
    """The remote parent named by a `traceparent` header; tracestate and baggage are ignored.

    The result starts from an empty context, so a message's span never nests under whatever
    the consuming task happened to be doing.
    """
    traceparent = (headers or {}).get("traceparent")
    carrier = {"traceparent": traceparent} if traceparent else {}
    return _W3C.extract(carrier, context=context.Context())


def context_from_traceparent(traceparent: str | None) -> context.Context:
    """The remote parent named by a stored traceparent (empty context if none or malformed)."""
    return context_from_headers({"traceparent": traceparent} if traceparent else None)


@contextlib.contextmanager
def resume_trace(
    traceparent: str | None,
    name: str,
    *,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[trace.Span]:
    """Continue a stored trace: a span whose parent is `traceparent`, linked to the span that is
    current now (e.g. the case worker's HTTP request), so work done later in another request
    stays in the trace it belongs to. Without a stored traceparent, an ordinary child span."""
    here = trace.get_current_span().get_span_context()
    parent = context_from_traceparent(traceparent) if traceparent else None
    if parent is not None and not trace.get_current_span(parent).get_span_context().is_valid:
        parent = None
    links = [trace.Link(here)] if parent is not None and here.is_valid else []
    with tracer("twoline").start_as_current_span(
        name,
        context=parent,
        kind=trace.SpanKind.INTERNAL,
        links=links,
        attributes=dict(attributes or {}),
        # F8: an exception's message may hold input; only its type is recorded.
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(trace.StatusCode.ERROR)
            raise
