"""notify on the real broker and PostgreSQL: one SMS per (return, step), in the customer's language and
in order; lifecycle events delivered three times still give one message per step."""

from __future__ import annotations

import orjson

from contracts.events import ScanCode
from services.notify import SPEC
from tests.idle import wait_idle
from tests.integration.notify_support import (
    escalated,
    issued,
    notify_settings,
    publish,
    received,
    requested,
    scanned,
    sms_lines,
    wait_sms,
)
from tests.kafkautil import read_topic, values

STEPS = ["requested", "parcel_seen", "received", "under_review", "refund_paid"]


async def test_full_lifecycle_gives_the_expected_messages_in_language_and_order(settings, service_runner):
    s = notify_settings(settings)
    customers = {
        "en": requested(locale="en", phone="+8613811110001"),
        "zh-CN": requested(locale="zh-CN", phone="+8613811110002"),
        "es": requested(locale="es-MX", phone="+8613811110003", shop_name="Tienda Sol"),
    }
    async with service_runner(SPEC, *s) as svc:
        ids = [e.return_id for e in customers.values()]
        steps = [
            list(customers.values()),
            [scanned(r) for r in ids],
            [received(r) for r in ids],
            [escalated(r) for r in ids],
            [issued(r) for r in ids],
        ]
        for n, events in enumerate(steps, 1):
            await publish(s.kafka_bootstrap, events)
            for rid in ids:
                await wait_sms(s, n, rid)
        sent = values(await read_topic(s.kafka_bootstrap, "sms.sent", 15))
        await wait_idle(svc)  # nothing more comes
        lines = {loc: sms_lines(s, e.return_id) for loc, e in customers.items()}

    for loc, got in lines.items():
        assert [x["step"] for x in got] == STEPS, loc
    en, zh, es = lines["en"], lines["zh-CN"], lines["es"]
    assert all(x["locale"] == "en" and x["text"].endswith("- Maple & Co") for x in en)
    assert "CN¥50.00" in en[4]["text"] and "has been paid" in en[4]["text"]
    assert "pack the items" in en[0]["text"] and "SF Express" in en[1]["text"]
    assert all(x["locale"] == "zh-CN" and x["text"].startswith("【Maple & Co】") for x in zh)
    assert "¥50.00" in zh[4]["text"] and "退款" in zh[4]["text"]
    # es-MX reads the es templates; the shop name configured for shop-1 wins over the event's
    assert all(x["locale"] == "es" and x["text"].endswith("- Maple & Co") for x in es)
    assert "50,00" in es[3]["text"] and "empaqueta" in es[0]["text"]  # the Spanish texts keep to GSM-7
    # events: one sms.sent per message, numbers masked, nothing in full anywhere
    assert len(sent) == 15
    assert {(e["return_id"], e["step"]) for e in sent} == {(str(r), st) for r in ids for st in STEPS}
    assert all(e["phone_masked"].startswith("+86") and "*" in e["phone_masked"] for e in sent)
    raw = orjson.dumps(sent).decode() + orjson.dumps(lines).decode()
    assert "13811110001" not in raw and "13811110002" not in raw


async def test_each_event_three_times_still_one_message_per_step(settings, service_runner):
    s = notify_settings(settings)
    req = requested(locale="zh-CN")
    rid = req.return_id
    async with service_runner(SPEC, *s) as svc:
        chain = [req, scanned(rid), received(rid), escalated(rid), issued(rid)]
        for n, e in enumerate(chain, 1):
            await publish(s.kafka_bootstrap, [e, e, e])
            await wait_sms(s, n, rid)
        # a later moving scan (a different event) is the same step: still nothing new
        await publish(s.kafka_bootstrap, [scanned(rid, ScanCode.in_transit, "s2")] * 3)
        await wait_idle(svc)
        got = sms_lines(s, rid)
        rows = await svc.runtime.pool.fetch("SELECT step, status FROM messages WHERE return_id = $1", rid)
        sent = [e for e in values(await read_topic(s.kafka_bootstrap, "sms.sent", 5)) if e["return_id"] == str(rid)]
    assert [x["step"] for x in got] == STEPS
    care = [r for r in rows if not r["step"].startswith("reminder_")]
    assert sorted(r["step"] for r in care) == sorted(STEPS)
    assert all(r["status"] == "sent" for r in care)
    # the reminders scheduled at the request were called off by the moving scan
    assert sorted((r["step"], r["status"]) for r in rows if r not in care) == [
        ("reminder_1", "cancelled"),
        ("reminder_2", "cancelled"),
        ("reminder_3", "cancelled"),
    ]
    assert sorted(e["step"] for e in sent) == sorted(STEPS)


async def test_events_before_the_request_wait_for_it_and_go_in_step_order(settings, service_runner):
    s = notify_settings(settings)
    req = requested(locale="en")
    rid = req.return_id
    async with service_runner(SPEC, *s) as svc:
        await publish(s.kafka_bootstrap, [scanned(rid), escalated(rid)])  # the request is not known yet
        await wait_idle(svc)  # consumed; the messages wait for their recipient
        assert sms_lines(s, rid) == []
        await publish(s.kafka_bootstrap, [req])
        got = await wait_sms(s, 3, rid)
        await wait_idle(svc)
    assert [x["step"] for x in sms_lines(s, rid)] == ["requested", "parcel_seen", "under_review"]
    assert got[0]["step"] == "requested"


async def test_a_burst_of_returns_each_get_one_message_and_outcomes_share_transactions(settings, service_runner):
    s = notify_settings(settings, sender_rate_per_s=10_000.0, sender_burst=100, claim_batch=200, send_concurrency=32)
    burst = [requested(locale="en", phone=f"+86138{i:08d}") for i in range(60)]
    async with service_runner(SPEC, *s) as svc:
        sender = svc.runtime.context.sender
        groups: list[int] = []
        write = sender.outcomes.flush

        async def counting(conn, items):
            groups.append(len(items))
            return await write(conn, items)

        sender.outcomes.flush = counting
        await publish(s.kafka_bootstrap, burst)
        await wait_sms(s, 60, timeout_s=30)
        sent = values(await read_topic(s.kafka_bootstrap, "sms.sent", 60))
        rows = await svc.runtime.pool.fetch(
            "SELECT status, count(*) AS n FROM messages WHERE step = 'requested' GROUP BY 1"
        )
    lines = sms_lines(s)
    assert len(lines) == 60 and len({x["message_id"] for x in lines}) == 60
    assert sorted(e["return_id"] for e in sent) == sorted(str(e.return_id) for e in burst)
    assert {r["status"]: r["n"] for r in rows} == {"sent": 60}
    # every outcome was written, and concurrent sends shared transactions
    assert sum(groups) == 60 and len(groups) < 60
