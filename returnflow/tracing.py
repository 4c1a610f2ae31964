"""OpenTelemetry tracing: one trace from a webhook to the refund and the SMS.

Every service process has its own `Tracing` (a TracerProvider with head sampling
`ParentBased(TraceIdRatioBased(rate))` and the exporter the settings name: OTLP/HTTP, a JSON-lines
file under the data dir, or none). The trace crosses the outbox in the W3C `traceparent`:

- an HTTP request starts the root span (or continues an incoming `traceparent`); its trace id is the
  request's correlation id;
- `outbox.enqueue` stores, in each row's headers, the traceparent of the span in scope for the event's
  correlation id (`scope`); the relay sends the headers as Kafka headers, and for a sampled trace
  re-parents them to its own publish span;
- a consumer batch opens one span per record, child of the record's `traceparent`, around the
  dedupe + apply transaction; what the handlers write goes out under that record's span;
- a worker that picks up later work by its correlation id (a payment, an SMS) resumes the trace
  (`resumed`): a root span with the correlation id as its trace id, so the head decision (a ratio
  of the trace id) is the same one;
- outgoing HTTP (httpx, and refunds' own HTTP/1.1 client through `outgoing`) carries the current
  span's `traceparent`.

Cost: an unsampled trace creates no span object on the consumer side (the incoming traceparent is
passed on as it came), and nothing is recorded or exported for it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

if TYPE_CHECKING:
    from returnflow.settings import Settings

TRACEPARENT = "traceparent"

# span attributes (one return's spans are found by ATTR_RETURN_ID)
ATTR_SERVICE = "returnflow.service"
ATTR_RETURN_ID = "returnflow.return_id"
ATTR_EVENT_TYPE = "returnflow.event_type"
ATTR_CORRELATION_ID = "returnflow.correlation_id"

# -- the W3C traceparent: pure ------------------------------------------------------------------------------

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\s]*)?")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def traceparent_of(ctx: SpanContext) -> str:
    return format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled)


def parse_traceparent(value: str | None) -> SpanContext | None:
    """A remote span context from a W3C `traceparent` header, None when absent or invalid (all-zero ids,
    upper case, version ff, or version 00 with more fields are invalid; a later version is read by its
    first four fields, as the recommendation says)."""
    if not value:
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_hex, span_hex, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(flags, 16) & 0x01))


def trace_id_of(correlation_id: str | None) -> int | None:
    """The trace id a correlation id stands for: a non-zero 32-digit lower-case hex string (what every
    request gets as its correlation id), else None."""
    if not correlation_id or not _TRACE_ID.fullmatch(correlation_id):
        return None
    return int(correlation_id, 16) or None


def make_sampler(rate: float) -> Sampler:
    """Head sampling: a root is sampled by a ratio of its trace id (the same trace id gets the same
    answer in every process); a span with a parent follows the parent's decision."""
    return ParentBased(TraceIdRatioBased(rate))


# -- what is in scope: the spans that what is written now belongs to -------------------------------------------


@dataclass(slots=True)
class Scoped:
    """The trace context an event written under a correlation id continues: its traceparent, and the span
    (when it records) that gets the event's attributes."""

    traceparent: str
    span: Span | None = None


Scope = dict[str, Scoped]  # correlation id -> its trace context

_scope: ContextVar[Scope | None] = ContextVar("returnflow_trace_scope", default=None)
_current: ContextVar[Tracing | None] = ContextVar("returnflow_tracing", default=None)
_next_trace_id: ContextVar[int | None] = ContextVar("returnflow_next_trace_id", default=None)


def current_scope() -> Scope | None:
    return _scope.get()


@contextlib.contextmanager
def in_scope(scope: Scope | None) -> Iterator[None]:
    """Run a block with this scope (the group committer writes many requests' events in one transaction)."""
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)


def traceparent_for(correlation_id: str | None, return_id: str | None = None) -> str | None:
    """The traceparent an event written now under `correlation_id` carries: the span in scope for that
    correlation id, else the current span (a request's, a resumed worker's); None outside any trace.
    The span in scope, when it records, is tagged with the event's return id."""
    scope = _scope.get()
    found = scope.get(correlation_id or "") if scope else None
    if found is not None:
        if found.span is not None and return_id and found.span.is_recording():  # (not once it ended)
            found.span.set_attribute(ATTR_RETURN_ID, return_id)
        return found.traceparent
    ctx = trace.get_current_span().get_span_context()
    return traceparent_of(ctx) if ctx.is_valid else None


def mark_failed(correlation_id: str | None, error: str) -> None:
    """The span in scope for a correlation id ends in error (a message dead-lettered)."""
    scope = _scope.get()
    found = scope.get(correlation_id or "") if scope else None
    if found is not None and found.span is not None:
        found.span.set_status(Status(StatusCode.ERROR, error))


# -- the span file (the embedded stack's exporter) --------------------------------------------------------------


def span_record(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


class SpanFileExporter(SpanExporter):
    """Spans as JSON lines appended to one file per process (`returnflow trace` reads them). One write
    per exported batch on an O_APPEND descriptor: two processes appending never interleave lines."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if spans:
            os.write(self._fd, b"".join(orjson.dumps(span_record(s), default=str) + b"\n" for s in spans))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def trace_dir(settings: Settings) -> Path:
    return settings.trace_dir or settings.data_dir / "traces"


def _exporter(service: str, settings: Settings) -> SpanExporter | None:
    if settings.trace_exporter == "file":
        return SpanFileExporter(trace_dir(settings) / f"{service}-{os.getpid()}.jsonl")
    if settings.trace_exporter == "otlp":
        # imported only when used: protobuf and the exporter take ~0.2 s to import
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.trace_otlp_endpoint)  # None: OTEL_EXPORTER_OTLP_* or localhost
    return None


class _Ids(RandomIdGenerator):
    """Random ids, except a trace id asked for (a request whose correlation id is a trace id, a resumed trace)."""

    def generate_trace_id(self) -> int:
        return _next_trace_id.get() or super().generate_trace_id()


# -- one service process's tracing ------------------------------------------------------------------------------


class Tracing:
    """A service's tracer. `enabled=False` (RETURNFLOW_TRACE_ENABLED=false) switches everything off:
    no spans, no traceparent, random correlation ids as before."""

    def __init__(self, service: str, provider: TracerProvider | None) -> None:
        self.service = service
        self.provider = provider
        self.tracer = provider.get_tracer("returnflow") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @classmethod
    def create(cls, service: str, settings: Settings) -> Tracing:
        if not settings.trace_enabled:
            return cls(service, None)
        provider = TracerProvider(
            sampler=make_sampler(settings.trace_sample_rate),
            resource=Resource.create({"service.name": service, "service.namespace": "returnflow"}),
            id_generator=_Ids(),
            shutdown_on_exit=False,
        )
        exporter = _exporter(service, settings)
        if exporter is not None:
            delay = settings.trace_export_delay_ms
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
        instrument_httpx()
        return cls(service, provider)

    @classmethod
    def disabled(cls, service: str = "") -> Tracing:
        return cls(service, None)

    def activate(self) -> None:
        """This service's tracer for what runs in the current context from now on (workers, resumed traces)."""
        _current.set(self)

    def shutdown(self) -> None:
        """Export what is pending and stop (at the service's stop)."""
        if self.provider is not None:
            self.provider.shutdown()

    # -- spans --------------------------------------------------------------------------------------------
    def start(
        self,
        name: str,
        parent: SpanContext | None,
        kind: SpanKind,
        trace_id: int | None = None,
    ) -> Span:
        """A span child of `parent`, or a root (with `trace_id` when given)."""
        assert self.tracer is not None
        ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else otel_context.Context()
        token = _next_trace_id.set(trace_id) if parent is None and trace_id else None
        try:
            span = self.tracer.start_span(name, context=ctx, kind=kind)
        finally:
            if token is not None:
                _next_trace_id.reset(token)
        if span.is_recording():
            span.set_attribute(ATTR_SERVICE, self.service)
        return span

    def request(self, method: str, path: str, traceparent: str | None, correlation_id: str | None) -> Request:
        """The root span of an HTTP request (continuing an incoming traceparent) and its correlation id:
        the trace id, unless the caller named a correlation id of its own that is not a trace id."""
        parent = parse_traceparent(traceparent)
        span = self.start(f"{method} {path}", parent, SpanKind.SERVER, trace_id_of(correlation_id))
        ctx = span.get_span_context()
        cid = f"{ctx.trace_id:032x}" if parent is not None or not correlation_id else correlation_id
        if span.is_recording():
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.path", path)
            span.set_attribute(ATTR_CORRELATION_ID, cid)
        return Request(self, span, cid, method)

    def consume(self, group: str, deliveries: Sequence[Any]) -> Consumed:
        """One span per record of a consumed batch, child of the record's traceparent (records of an
        unsampled trace: its traceparent passed on as it came, no span)."""
        scope: Scope = {}
        spans: list[Span] = []
        for d in deliveries:
            event = d.event
            if event is None:
                continue
            cid = event.correlation_id
            header = d.headers.get(TRACEPARENT)
            parent = parse_traceparent(header)
            if parent is not None and not parent.trace_flags.sampled:
                scope[cid] = Scoped(traceparent_of(parent))
                continue
            span = self.start(f"{event.type} process", parent, SpanKind.CONSUMER, trace_id_of(cid))
            if span.is_recording():
                span.set_attributes(
                    {
                        ATTR_EVENT_TYPE: event.type,
                        ATTR_RETURN_ID: str(event.return_id),
                        ATTR_CORRELATION_ID: cid,
                        "messaging.system": "kafka",
                        "messaging.consumer.group.name": group,
                        "messaging.destination.name": d.topic,
                        "messaging.destination.partition.id": str(d.partition),
                        "messaging.kafka.offset": d.offset,
                    }
                )
                spans.append(span)
            scope[cid] = Scoped(traceparent_of(span.get_span_context()), span if span.is_recording() else None)
        return Consumed(scope, spans)

    def publish(self, topic: str, headers: dict[str, str], key: bytes | None) -> tuple[dict[str, str], Span | None]:
        """The relay's publish span for an outbox row of a sampled trace (its traceparent becomes the
        record's); other rows go out with their headers as stored."""
        parent = parse_traceparent(headers.get(TRACEPARENT))
        if parent is None or not parent.trace_flags.sampled or self.tracer is None:
            return headers, None
        span = self.start(f"{topic} publish", parent, SpanKind.PRODUCER)
        if span.is_recording():
            span.set_attributes(
                {
                    "messaging.system": "kafka",
                    "messaging.destination.name": topic,
                    ATTR_EVENT_TYPE: headers.get("rf-type", ""),
                    ATTR_CORRELATION_ID: headers.get("rf-correlation-id", ""),
                    ATTR_RETURN_ID: key.decode(errors="replace") if key else "",
                }
            )
        return {**headers, TRACEPARENT: traceparent_of(span.get_span_context())}, span


@dataclass
class Request:
    """An HTTP request's span, made current (for outgoing calls) and in scope (for the outbox) by `enter`."""

    tracing: Tracing
    span: Span
    correlation_id: str
    method: str = ""
    _tokens: tuple[Any, ...] = ()

    def enter(self) -> None:
        scoped = Scoped(traceparent_of(self.span.get_span_context()), self.span if self.span.is_recording() else None)
        self._tokens = (
            otel_context.attach(trace.set_span_in_context(self.span)),
            _scope.set({self.correlation_id: scoped}),
            _current.set(self.tracing),
        )

    def end(self, route: str | None, status: int) -> None:
        if self._tokens:
            ctx_token, scope_token, current_token = self._tokens
            _current.reset(current_token)
            _scope.reset(scope_token)
            otel_context.detach(ctx_token)
        span = self.span
        if span.is_recording():
            if route:
                span.update_name(f"{self.method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()


@dataclass
class Consumed:
    """A consumed batch's trace context: in scope while it is applied; its spans end with `end`."""

    scope: Scope
    spans: list[Span]

    def end(self) -> None:
        for span in self.spans:
            span.end()


@contextlib.contextmanager
def resumed(
    name: str, correlation_id: str, attributes: Mapping[str, str] | None = None, *, into: Scope | None = None
) -> Iterator[Span | None]:
    """Continue a trace from its correlation id in a worker (a payment, an SMS): a span with the
    correlation id as its trace id, current and in scope for the block (what it sends and writes
    carries it). `into`: a scope to add it to, for what is written after the block (many payments
    recorded in one transaction). A no-op outside a service or with tracing off."""
    tracing = _current.get()
    if tracing is None or not tracing.enabled:
        yield None
        return
    span = tracing.start(name, None, SpanKind.INTERNAL, trace_id_of(correlation_id))
    if span.is_recording():
        span.set_attributes({ATTR_CORRELATION_ID: correlation_id, **(attributes or {})})
    scoped = Scoped(traceparent_of(span.get_span_context()), span if span.is_recording() else None)
    if into is not None:
        into[correlation_id] = scoped
    tokens = (otel_context.attach(trace.set_span_in_context(span)), _scope.set({correlation_id: scoped}))
    try:
        yield span
    except BaseException as exc:
        if span.is_recording():
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        _scope.reset(tokens[1])
        otel_context.detach(tokens[0])
        span.end()


@contextlib.contextmanager
def outgoing(method: str, url: str) -> Iterator[tuple[str | None, Span | None]]:
    """An outgoing HTTP call: the traceparent to send (None outside a trace) and, when the trace is
    sampled, a client span around the call."""
    ctx = trace.get_current_span().get_span_context()
    tracing = _current.get()
    if not ctx.is_valid:
        yield None, None
        return
    if not ctx.trace_flags.sampled or tracing is None or not tracing.enabled:
        yield traceparent_of(ctx), None
        return
    span = tracing.start(method, ctx, SpanKind.CLIENT)
    if span.is_recording():
        span.set_attributes({"http.request.method": method, "url.full": url})
    try:
        yield traceparent_of(span.get_span_context()), span
    except BaseException as exc:
        if span.is_recording():
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()


def response_status(span: Span | None, status: int) -> None:
    if span is not None and span.is_recording():
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))


_httpx_instrumented = False


def instrument_httpx() -> None:
    """Outgoing httpx calls (SMS providers, Stripe, the workbench's upstream) carry the current trace:
    the transport's one entry point is wrapped once per process."""
    global _httpx_instrumented
    if _httpx_instrumented:
        return
    import httpx

    original = httpx.AsyncHTTPTransport.handle_async_request

    async def handle_async_request(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        with outgoing(request.method, str(request.url.copy_with(query=None))) as (traceparent, span):
            if traceparent is not None:
                request.headers[TRACEPARENT] = traceparent
            response = await original(self, request)
            response_status(span, response.status_code)
            return response

    httpx.AsyncHTTPTransport.handle_async_request = handle_async_request  # type: ignore[method-assign]
    _httpx_instrumented = True
