"""Reminders on the real broker and PostgreSQL, with the service's clock moved instead of waiting:
a reminder falling at 23:00 customer time goes at 08:00; STOP silences the number until START;
reminders pending while the service is down are sent once after it comes back (or skipped if stale)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import orjson

from returnflow.signing import SIGNATURE_HEADER, sign
from services.notify import SPEC
from tests.idle import wait_idle
from tests.integration.notify_support import (
    SMS_SECRET,
    notify_settings,
    offset_to_local,
    publish,
    received,
    requested,
    scanned,
    sms_lines,
    wait_sms,
)
from tests.kafkautil import read_topic, values

SHANGHAI = ZoneInfo("Asia/Shanghai")


async def reply(client: httpx.AsyncClient, phone: str, text: str) -> httpx.Response:
    raw = orjson.dumps({"from": phone, "text": text, "id": uuid.uuid4().hex})
    return await client.post(
        "/v1/webhooks/sms/inbound",
        content=raw,
        headers={"content-type": "application/json", SIGNATURE_HEADER: sign(SMS_SECRET, raw)},
    )


async def test_reminder_at_23h_goes_at_8h_and_stop_silences_until_start(settings, service_runner):
    offset = offset_to_local("Asia/Shanghai", 20, 50)
    # one reminder, 2h10m after the request: 23:00 in Shanghai
    s = notify_settings(settings, clock_offset_s=offset, reminder_intervals_s=[7800])
    phone = "+8613899990000"
    req = requested(at=datetime.now(UTC) + timedelta(seconds=offset), locale="zh-CN", phone=phone)
    rid = req.return_id
    async with service_runner(SPEC, *s) as svc, httpx.AsyncClient(base_url=svc.base_url) as client:
        clock = svc.runtime.context.clock
        await publish(s.kafka_bootstrap, [req])
        first = await wait_sms(s, 1, rid)
        assert first[0]["step"] == "requested"  # 20:50 is still daytime

        clock.advance(7800 + 2)  # 23:00:02 local: the reminder is due, in the customer's night
        deferred = values(await read_topic(s.kafka_bootstrap, "sms.deferred", 1))
        assert [(e["step"], e["reason"]) for e in deferred] == [("reminder_1", "quiet_hours")]
        deliver_after = datetime.fromisoformat(deferred[0]["deliver_after"]).astimezone(SHANGHAI)
        assert (deliver_after.hour, deliver_after.minute) == (8, 0)
        assert deliver_after.date() == (clock.now().astimezone(SHANGHAI) + timedelta(days=1)).date()
        await wait_idle(svc)
        assert len(sms_lines(s, rid)) == 1  # nothing at night

        clock.advance((deliver_after - clock.now()).total_seconds() - 5)  # 07:59:55: still waiting
        await wait_idle(svc)  # nothing due, nothing being sent
        assert len(sms_lines(s, rid)) == 1
        clock.advance(6)  # 08:00:01
        lines = await wait_sms(s, 2, rid)
        assert lines[1]["step"] == "reminder_1" and "回复TD退订" in lines[1]["text"]
        sent_at = datetime.fromisoformat(lines[1]["at"]).astimezone(SHANGHAI)
        assert (sent_at.hour, sent_at.minute) == (8, 0)

        # STOP (any case, spaces) -> the next step is suppressed, not sent
        assert (await reply(client, phone, "  stop ")).status_code == 200
        await publish(s.kafka_bootstrap, [scanned(rid)])
        suppressed = values(await read_topic(s.kafka_bootstrap, "sms.suppressed", 1))
        assert [(e["step"], e["reason"]) for e in suppressed] == [("parcel_seen", "opted_out")]
        assert suppressed[0]["phone_masked"] == "+86*********00"
        # an ordinary reply changes nothing; a forged one is refused
        assert (await reply(client, phone, "stop sending me the reminder please")).status_code == 200
        raw = orjson.dumps({"from": phone, "text": "START"})
        forged = await client.post(
            "/v1/webhooks/sms/inbound",
            content=raw,
            headers={"content-type": "application/json", SIGNATURE_HEADER: sign(b"wrong", raw)},
        )
        assert forged.status_code == 401
        # START opts back in: the next step goes again
        assert (await reply(client, phone, "START")).status_code == 200
        await publish(s.kafka_bootstrap, [received(rid)])
        lines = await wait_sms(s, 3, rid)
    assert [x["step"] for x in lines] == ["requested", "reminder_1", "received"]


async def test_reminders_pending_while_down_are_sent_once_after_restart(settings, service_runner):
    base = offset_to_local("Asia/Shanghai", 10)  # daytime throughout
    knobs = {"reminder_intervals_s": [3600, 7200], "reminder_stale_s": 1800}
    fake_now = datetime.now(UTC) + timedelta(seconds=base)
    fresh = [requested(at=fake_now, phone=f"+861380000000{i}") for i in range(3)]
    # requested half an hour earlier: its first reminder falls due 30 minutes into the downtime
    late = requested(at=fake_now - timedelta(seconds=1800), phone="+8613800000009")
    all_ids = [e.return_id for e in [*fresh, late]]

    async with service_runner(SPEC, *notify_settings(settings, clock_offset_s=base, **knobs)) as svc:
        await publish(settings.kafka_bootstrap, [*fresh, late])
        for rid in all_ids:
            await wait_sms(notify_settings(settings), 1, rid)
        pending = await svc.runtime.pool.fetchval(
            "SELECT count(*) FROM messages WHERE kind = 'reminder' AND status = 'queued'"
        )
        assert pending == 8
    # the service is down for an hour; when it comes back, reminder_1 of the fresh returns is 1 minute
    # late (sent), the late return's is 31 minutes late (stale: skipped); reminder_2 is not due yet
    later = notify_settings(settings, clock_offset_s=base + 3660, **knobs)
    async with service_runner(SPEC, *later) as svc:
        for rid in [e.return_id for e in fresh]:
            await wait_sms(later, 2, rid)
        suppressed = values(await read_topic(settings.kafka_bootstrap, "sms.suppressed", 1))
        assert [(e["return_id"], e["step"], e["reason"]) for e in suppressed] == [
            (str(late.return_id), "reminder_1", "stale")
        ]
    # and once more: nothing is sent twice
    async with service_runner(SPEC, *notify_settings(settings, clock_offset_s=base + 3700, **knobs)) as svc:
        await wait_idle(svc)
        statuses = await svc.runtime.pool.fetch(
            "SELECT return_id, step, status FROM messages WHERE kind = 'reminder' ORDER BY return_id, step"
        )

    s = notify_settings(settings)
    for e in fresh:
        assert [x["step"] for x in sms_lines(s, e.return_id)] == ["requested", "reminder_1"]
    assert [x["step"] for x in sms_lines(s, late.return_id)] == ["requested"]
    by = {(r["return_id"], r["step"]): r["status"] for r in statuses}
    for e in fresh:
        assert (by[(e.return_id, "reminder_1")], by[(e.return_id, "reminder_2")]) == ("sent", "queued")
    assert (by[(late.return_id, "reminder_1")], by[(late.return_id, "reminder_2")]) == ("suppressed", "queued")
    sent = values(await read_topic(settings.kafka_bootstrap, "sms.sent", 7))
    assert sorted(e["step"] for e in sent) == ["reminder_1"] * 3 + ["requested"] * 4
