"""One trace from a signed webhook across the outbox, the relay and Kafka into another service's consumer,
and from a scan to the refund paid and on the return's timeline — on the real broker and PostgreSQL, every
trace sampled and written to span files; `returnflow trace` prints the return's waterfall from them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from apphost.trace_cli import load_spans, trace_command
from returnflow.tracing import ATTR_EVENT_TYPE, ATTR_RETURN_ID, TRACEPARENT, parse_traceparent
from tests.integration.money_path_support import platform
from tests.kafkautil import read_topic
from tests.webhooks import return_body, signed

Span = dict[str, Any]


def one(spans: list[Span], **match: Any) -> Span:
    """The one span whose fields (and `attributes`) match."""
    attrs = match.pop("attributes", {})
    found = [
        s
        for s in spans
        if all(s.get(k) == v for k, v in match.items()) and all(s["attributes"].get(k) == v for k, v in attrs.items())
    ]
    assert len(found) == 1, (match, attrs, [(s["service"], s["name"], s["kind"]) for s in spans])
    return found[0]


def traced(settings: Any, folder: Path) -> Any:
    return settings.model_copy(
        update={
            "trace_sample_rate": 1.0,
            "trace_exporter": "file",
            "trace_dir": folder,
            "trace_export_delay_ms": 50,
        }
    )


async def test_one_trace_runs_from_the_webhook_through_the_outbox_and_kafka_to_the_refund(
    settings, service_runner, tmp_path
):
    folder = tmp_path / "traces"
    async with platform(traced(settings, folder), service_runner) as p:
        raw, hdrs = signed(return_body(tracking_no="SF-TRACE-1"))
        r = await p.returns.post("/v1/webhooks/generic/returns", content=raw, headers=hdrs)
        assert r.status_code == 202, r.text
        rid = r.json()["return_id"]
        webhook_cid = r.headers["x-correlation-id"]
        await p.idle()  # the parcel is known: the scan is matched (and published) in its own request
        scan = await p.scan("SF-TRACE-1", "picked_up")
        assert scan.status_code == 202, scan.text
        scan_cid = scan.headers["x-correlation-id"]
        await p.wait_issued(uuid.UUID(rid))
        await p.timeline(uuid.UUID(rid), ["refund.issued"])
        await p.idle()
        requested = await read_topic(p.settings.kafka_bootstrap, "returns.requested", expect=1)
    # the services stopped: every span is in the files
    spans = load_spans(folder)

    # the webhook's root span: its trace id is the correlation id the response names
    request = one(spans, service="returns", kind="SERVER", name="POST /v1/webhooks/generic/returns")
    assert request["parent_id"] is None and request["trace_id"] == webhook_cid
    assert request["attributes"][ATTR_RETURN_ID] == rid  # tagged by the event it wrote
    # the event on Kafka carries the trace: a child of the relay's publish span, itself a child of the request
    (record,) = [rec for rec in requested if rec.key.decode() == rid]
    header = dict(record.headers)[TRACEPARENT].decode()
    ctx = parse_traceparent(header)
    assert ctx is not None and f"{ctx.trace_id:032x}" == webhook_cid and ctx.trace_flags.sampled
    relay = one(spans, service="returns", kind="PRODUCER", attributes={ATTR_RETURN_ID: rid})
    assert relay["parent_id"] == request["span_id"] and f"{ctx.span_id:016x}" == relay["span_id"]
    # ... consumed in another service as a child of that span, in the same trace
    consumed = one(
        spans, service="refunds", kind="CONSUMER", attributes={ATTR_RETURN_ID: rid, ATTR_EVENT_TYPE: "return.requested"}
    )
    assert consumed["trace_id"] == webhook_cid and consumed["parent_id"] == relay["span_id"]

    # the scan's trace: its consumer in refunds decides; the payment worker resumes the trace, calls the
    # gateway (a client span) and its refund.issued reaches the returns timeline as a child of the relay's span
    scan_request = one(spans, service="warehouse", kind="SERVER", name="POST /v1/webhooks/carriers/{carrier}/scans")
    assert scan_request["trace_id"] == scan_cid
    scan_relay = one(spans, service="warehouse", kind="PRODUCER", parent_id=scan_request["span_id"])
    scanned = one(spans, service="refunds", kind="CONSUMER", attributes={ATTR_EVENT_TYPE: "parcel.scanned"})
    assert scanned["trace_id"] == scan_cid and scanned["parent_id"] == scan_relay["span_id"]
    pay = one(spans, service="refunds", name="refund pay", attributes={ATTR_RETURN_ID: rid})
    assert pay["trace_id"] == scan_cid
    gateway_call = one(spans, service="refunds", kind="CLIENT", trace_id=scan_cid)
    assert gateway_call["parent_id"] == pay["span_id"] and gateway_call["attributes"]["http.response.status_code"] < 300
    issued_relay = one(spans, service="refunds", kind="PRODUCER", parent_id=pay["span_id"])
    timeline = one(
        spans, service="returns", kind="CONSUMER", attributes={ATTR_RETURN_ID: rid, ATTR_EVENT_TYPE: "refund.issued"}
    )
    assert timeline["trace_id"] == scan_cid and timeline["parent_id"] == issued_relay["span_id"]

    # `returnflow trace RETURN_ID` prints both traces, ordered by start
    out: list[str] = []
    assert trace_command(rid, folder, out=out.append) == 0
    assert out[0].startswith(f"return {rid}:") and webhook_cid in out[0] and scan_cid in out[0]
    names = out[2:]
    first_request = next(i for i, line in enumerate(names) if "POST /v1/webhooks/generic/returns" in line)
    first_pay = next(i for i, line in enumerate(names) if "refund pay" in line)
    assert first_request == 0 and first_pay > first_request
    assert all("|" in line and "█" in line for line in names)
    assert trace_command(str(uuid.uuid4()), folder, out=out.append) == 1  # a return with no spans: said so


async def test_the_sms_a_return_gets_continues_its_trace(settings, service_runner, tmp_path):
    from aiokafka import AIOKafkaProducer

    from returnflow.outbox import event_record
    from services.notify import SPEC as NOTIFY
    from tests.integration.notify_support import notify_settings, requested, wait_sms

    folder = tmp_path / "traces"
    s = notify_settings(traced(settings, folder))
    cid, parent_span = uuid.uuid4().hex, "b7ad6b7169203331"
    event = requested().model_copy(update={"correlation_id": cid})  # as returns writes it: cid = trace id
    record = event_record(event)
    headers = {**record.headers, TRACEPARENT: f"00-{cid}-{parent_span}-01"}
    async with service_runner(NOTIFY, *s):
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                record.topic, record.value, key=record.key, headers=[(k, v.encode()) for k, v in headers.items()]
            )
        finally:
            await producer.stop()
        await wait_sms(s, 1, event.return_id)
        sent = await read_topic(s.kafka_bootstrap, "sms.sent", expect=1)
    spans = load_spans(folder)
    rid = str(event.return_id)
    consumed = one(spans, service="notify", kind="CONSUMER", attributes={ATTR_RETURN_ID: rid})
    assert consumed["trace_id"] == cid and consumed["parent_id"] == parent_span
    send = one(spans, service="notify", name="sms send", attributes={ATTR_RETURN_ID: rid})
    assert send["trace_id"] == cid and send["attributes"]["sms.step"] == "requested"
    published = one(spans, service="notify", kind="PRODUCER", parent_id=send["span_id"])
    (record_out,) = [r for r in sent if r.key.decode() == rid]
    out = parse_traceparent(dict(record_out.headers)[TRACEPARENT].decode())
    assert out is not None and f"{out.span_id:016x}" == published["span_id"] and f"{out.trace_id:032x}" == cid
