"""Tracing's pure parts and its propagation helpers: the W3C traceparent (ours agrees with OpenTelemetry's
propagator), head sampling, the correlation id a request gets, what a consumed record and an outbox row
carry, and the span file `returnflow trace` reads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from apphost.trace_cli import load_spans, spans_of_return, waterfall
from contracts.catalog import HEADER_CORRELATION_ID
from returnflow.consumer import Delivery
from returnflow.outbox import OutboxRecord, with_trace_context
from returnflow.settings import Settings
from returnflow.tracing import (
    ATTR_RETURN_ID,
    TRACEPARENT,
    Tracing,
    format_traceparent,
    in_scope,
    make_sampler,
    parse_traceparent,
    resumed,
    trace_id_of,
)

trace_ids = st.integers(1, 2**128 - 1)


@pytest.fixture(autouse=True)
def no_tracer_left_behind():
    """A test that activates a service's tracing leaves none active for the tests after it."""
    from returnflow import tracing as module

    token = module._current.set(None)
    yield
    module._current.reset(token)


span_ids = st.integers(1, 2**64 - 1)
rates = st.floats(0.0, 1.0, allow_nan=False)
W3C = TraceContextTextMapPropagator()


def otel_extract(header: str) -> SpanContext | None:
    ctx = trace.get_current_span(W3C.extract({"traceparent": header})).get_span_context()
    return ctx if ctx.is_valid else None


@given(trace_ids, span_ids, st.booleans())
def test_a_traceparent_round_trips_through_ours_and_opentelemetrys_propagator(tid: int, sid: int, sampled: bool):
    header = format_traceparent(tid, sid, sampled)
    ours = parse_traceparent(header)
    assert ours is not None and (ours.trace_id, ours.span_id, ours.trace_flags.sampled) == (tid, sid, sampled)
    theirs = otel_extract(header)
    assert theirs is not None and (theirs.trace_id, theirs.span_id, theirs.trace_flags) == (
        tid,
        sid,
        ours.trace_flags,
    )
    carrier: dict[str, str] = {}
    W3C.inject(carrier, trace.set_span_in_context(NonRecordingSpan(ours)))
    assert carrier["traceparent"] == header


@given(
    st.one_of(
        st.text(max_size=80),
        st.from_regex(r"\A[0-9a-fA-F]{2}-[0-9a-fA-F]{32}-[0-9a-fA-F]{16}-[0-9a-fA-F]{2}\Z"),
    )
)
def test_what_opentelemetry_refuses_we_refuse_and_what_it_reads_we_read_alike(header: str):
    ours, theirs = parse_traceparent(header), otel_extract(header)
    assert (ours is None) == (theirs is None)
    if ours is not None and theirs is not None:
        assert (ours.trace_id, ours.span_id, ours.trace_flags.sampled) == (
            theirs.trace_id,
            theirs.span_id,
            theirs.trace_flags.sampled,
        )


def test_invalid_traceparents_are_refused():
    good_trace, good_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    assert parse_traceparent(f"00-{good_trace}-{good_span}-01") is not None
    for bad in (
        None,
        "",
        f"00-{'0' * 32}-{good_span}-01",  # all-zero trace id
        f"00-{good_trace}-{'0' * 16}-01",  # all-zero span id
        f"ff-{good_trace}-{good_span}-01",  # version ff
        f"00-{good_trace.upper()}-{good_span}-01",  # upper case
        f"00-{good_trace}-{good_span}-01-extra",  # version 00 has four fields
        f"00-{good_trace}-{good_span}",
    ):
        assert parse_traceparent(bad) is None, bad


@given(trace_ids)
def test_a_trace_id_is_its_own_correlation_id_and_back(tid: int):
    assert trace_id_of(f"{tid:032x}") == tid


def test_correlation_ids_that_are_not_trace_ids():
    assert trace_id_of(uuid.uuid4().hex) is not None  # the random ids of before are trace ids
    for cid in (None, "", "corr-abc-123", "0" * 32, uuid.uuid4().hex.upper(), str(uuid.uuid4())):
        assert trace_id_of(cid) is None


# -- head sampling ---------------------------------------------------------------------------------------------


def decide(rate: float, tid: int, parent: SpanContext | None = None) -> bool:
    ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
    result = make_sampler(rate).should_sample(ctx, tid, "span")
    return result.decision is Decision.RECORD_AND_SAMPLE


@given(trace_ids, rates, rates)
def test_a_root_sampled_at_one_rate_is_sampled_at_every_higher_rate(tid: int, a: float, b: float):
    low, high = sorted((a, b))
    if decide(low, tid):
        assert decide(high, tid)
    assert decide(1.0, tid) and not decide(0.0, tid)
    assert decide(high, tid) == decide(high, tid)  # the same trace id, the same answer (in every process)


@given(trace_ids, span_ids, rates, st.booleans(), st.booleans())
def test_a_span_with_a_parent_follows_the_parents_decision(
    tid: int, sid: int, rate: float, sampled: bool, remote: bool
):
    parent = SpanContext(tid, sid, is_remote=remote, trace_flags=TraceFlags(1 if sampled else 0))
    assert decide(rate, tid, parent) == sampled


def test_the_ratio_is_about_the_rate():
    ids = [uuid.UUID(int=i * 0x9E3779B97F4A7C15 % 2**128).int or 1 for i in range(1, 20_001)]
    share = sum(decide(0.1, t) for t in ids) / len(ids)
    assert 0.08 < share < 0.12


# -- requests, consumed records and outbox rows -----------------------------------------------------------------


def tracing(tmp_path: Path, rate: float = 1.0, exporter: str = "file") -> Tracing:
    settings = Settings(trace_sample_rate=rate, trace_exporter=exporter, trace_dir=tmp_path, trace_export_delay_ms=10)
    return Tracing.create("returns", settings)


def test_a_new_request_gets_its_trace_id_as_correlation_id(tmp_path):
    t = tracing(tmp_path, rate=0.0)
    r = t.request("POST", "/v1/webhooks/generic/returns", None, None)
    ctx = r.span.get_span_context()
    assert r.correlation_id == f"{ctx.trace_id:032x}" and not ctx.trace_flags.sampled
    r.end("/x", 202)


def test_an_incoming_traceparent_is_continued_and_its_trace_id_is_the_correlation_id(tmp_path):
    t = tracing(tmp_path, rate=0.0)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = t.request("POST", "/p", parent, "ignored-when-a-trace-exists")
    ctx = r.span.get_span_context()
    assert r.correlation_id == "0af7651916cd43dd8448eb211c80319c" == f"{ctx.trace_id:032x}"
    assert ctx.trace_flags.sampled and r.span.parent is not None and r.span.parent.span_id == 0xB7AD6B7169203331  # type: ignore[attr-defined]
    r.end("/p", 200)


def test_a_callers_correlation_id_is_kept_and_becomes_the_trace_id_when_it_is_one(tmp_path):
    t = tracing(tmp_path, rate=0.0)
    hexed = uuid.uuid4().hex
    r = t.request("GET", "/p", None, hexed)
    assert r.correlation_id == hexed == f"{r.span.get_span_context().trace_id:032x}"
    other = t.request("GET", "/p", None, "corr-abc-123")
    assert other.correlation_id == "corr-abc-123" and other.span.get_span_context().is_valid


def test_tracing_off_starts_no_trace():
    t = Tracing.create("returns", Settings(trace_enabled=False))
    assert not t.enabled
    with resumed("x", uuid.uuid4().hex) as span:
        assert span is None


def delivery(traceparent: str | None, cid: str) -> Delivery:
    from contracts.events import ReturnCancelled

    event = ReturnCancelled(return_id=uuid.uuid4(), correlation_id=cid, reason="test", occurred_at=datetime.now(UTC))
    headers = {TRACEPARENT: traceparent} if traceparent else {}
    return Delivery("returns.cancelled", 0, 7, str(event.return_id).encode(), b"", headers, event=event)


def test_a_consumed_record_of_an_unsampled_trace_passes_its_traceparent_on_without_a_span(tmp_path):
    t = tracing(tmp_path, rate=1.0)
    cid = uuid.uuid4().hex
    header = f"00-{cid}-b7ad6b7169203331-00"
    consumed = t.consume("refunds.lifecycle", [delivery(header, cid)])
    assert consumed.scope[cid].traceparent == header and consumed.scope[cid].span is None and not consumed.spans


def test_a_consumed_record_of_a_sampled_trace_gets_a_child_span_that_what_it_writes_continues(tmp_path):
    t = tracing(tmp_path, rate=0.0)  # the parent decided: sampled
    cid = uuid.uuid4().hex
    d = delivery(f"00-{cid}-b7ad6b7169203331-01", cid)
    consumed = t.consume("refunds.lifecycle", [d])
    (span,) = consumed.spans
    ctx = span.get_span_context()
    assert f"{ctx.trace_id:032x}" == cid and span.parent.span_id == 0xB7AD6B7169203331  # type: ignore[attr-defined]
    with in_scope(consumed.scope):
        (row,) = with_trace_context([OutboxRecord("t", b"k", b"v", {HEADER_CORRELATION_ID: cid})])
        (other,) = with_trace_context([OutboxRecord("t", b"k", b"v", {HEADER_CORRELATION_ID: "someone-else"})])
    assert row.headers[TRACEPARENT] == format_traceparent(ctx.trace_id, ctx.span_id, True)
    assert TRACEPARENT not in other.headers  # no trace of its own in scope, and no current span
    consumed.end()


def test_an_outbox_row_keeps_a_traceparent_it_has_and_gets_none_outside_a_trace(tmp_path):
    kept = f"00-{uuid.uuid4().hex}-b7ad6b7169203331-01"
    rows = [OutboxRecord("t.dlq", b"k", b"v", {TRACEPARENT: kept, HEADER_CORRELATION_ID: "c"})]
    assert with_trace_context(rows)[0].headers[TRACEPARENT] == kept
    assert (
        TRACEPARENT not in with_trace_context([OutboxRecord("t", b"k", b"v", {HEADER_CORRELATION_ID: "c"})])[0].headers
    )


def test_a_resumed_trace_uses_the_correlation_id_and_tags_what_it_writes(tmp_path):
    t = tracing(tmp_path, rate=1.0)
    t.activate()
    cid, rid = uuid.uuid4().hex, str(uuid.uuid4())
    with resumed("refund pay", cid) as span:
        assert span is not None
        (row,) = with_trace_context([OutboxRecord("t", rid.encode(), b"v", {HEADER_CORRELATION_ID: cid})])
    parsed = parse_traceparent(row.headers[TRACEPARENT])
    assert parsed is not None and f"{parsed.trace_id:032x}" == cid and parsed.span_id == span.get_span_context().span_id
    t.shutdown()
    (written,) = load_spans(tmp_path)
    assert written["name"] == "refund pay" and written["attributes"][ATTR_RETURN_ID] == rid


# -- the span file and the waterfall --------------------------------------------------------------------------


def span(name: str, start_ms: float, end_ms: float, sid: str, parent: str | None, trace_id: str, **attrs: Any):
    return {
        "trace_id": trace_id,
        "span_id": sid,
        "parent_id": parent,
        "name": name,
        "service": "svc",
        "kind": "INTERNAL",
        "start_ns": int(start_ms * 1e6),
        "end_ns": int(end_ms * 1e6),
        "status": "UNSET",
        "attributes": attrs,
    }


def test_the_waterfall_orders_by_start_indents_children_and_places_bars_on_the_time():
    t1, t2 = "a" * 32, "b" * 32
    spans = [
        span("child", 10, 30, "02", "01", t1),
        span("root", 0, 100, "01", None, t1, **{ATTR_RETURN_ID: "r-1"}),
        span("other trace of it", 50, 100, "03", None, t2, **{ATTR_RETURN_ID: "r-1"}),
        span("not of it", 0, 100, "04", None, "c" * 32, **{ATTR_RETURN_ID: "r-2"}),
    ]
    chosen = spans_of_return(spans, "r-1")
    assert [s["name"] for s in chosen] == ["root", "child", "other trace of it"]
    header, root, child, other = waterfall(chosen, width=10)
    assert "start ms" in header
    assert child.index("child") == root.index("root") + 2  # indented under its parent
    assert root.endswith("|██████████|") and child.endswith("| ██       |") and other.endswith("|     █████|")
    assert "10.0" in child and "20.0" in child  # offset and duration in ms


async def test_an_outgoing_httpx_call_carries_the_trace_and_gets_a_client_span(tmp_path):
    import asyncio

    import httpx

    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t = tracing(tmp_path, rate=1.0)
    t.activate()
    try:
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/outside")  # no trace: nothing added
            cid = uuid.uuid4().hex
            with resumed("sms send", cid) as span:
                assert span is not None
                r = await client.post(f"http://127.0.0.1:{port}/v1/messages?secret=x")
        assert r.status_code == 204
    finally:
        server.close()
        await server.wait_closed()
    t.shutdown()
    outside, inside = (dict(line.split(": ", 1) for line in h.decode().split("\r\n")[1:] if line) for h in seen)
    assert TRACEPARENT not in outside
    sent = parse_traceparent(inside[TRACEPARENT])
    client_span = next(s for s in load_spans(tmp_path) if s["kind"] == "CLIENT")
    assert sent is not None and f"{sent.trace_id:032x}" == cid and f"{sent.span_id:016x}" == client_span["span_id"]
    assert client_span["attributes"]["url.full"] == f"http://127.0.0.1:{port}/v1/messages"  # no query (secrets)
    assert client_span["attributes"]["http.response.status_code"] == 204
