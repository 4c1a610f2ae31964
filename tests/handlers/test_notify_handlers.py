"""notify's handlers against a real PostgreSQL, without a broker: the lifecycle consumer schedules one
message per return and step (and reminders while goods must still come back), and the sender's rounds
decide them (quiet hours defer, STOP suppresses, the daily cap), send them through the file provider or
a local Twilio stand-in, and record each outcome once with its sms.* event."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import SecretStr

from contracts.events import ScanCode, SmsDeferred, SmsFailed, SmsSent, SmsSuppressed
from returnflow.settings import Settings
from services.notify import SPEC
from services.notify.handlers import record_receipts, record_replies, sender_idle
from services.notify.providers import DeliveryReport, InboundSms
from services.notify.settings import NotifySettings
from tests.handlers.harness import Harness, harness
from tests.integration.fake_sms_providers import FakeTwilio, serve_app
from tests.integration.notify_support import (
    NotifySetup,
    cancelled,
    escalated,
    issued,
    offset_to_local,
    received,
    requested,
    scanned,
    sms_lines,
)

STEPS = ["requested", "parcel_seen", "received", "under_review", "refund_paid"]
SHANGHAI = ZoneInfo("Asia/Shanghai")
PHONE = "+8613811112222"


def notify(**over: Any) -> NotifySettings:
    """Fast pacing and retries, noon in Shanghai (the customers' zone), unless `over` says otherwise."""
    fields: dict[str, Any] = {
        "sender_rate_per_s": 10_000.0,
        "sender_burst": 100,
        "retry_base_s": 0.01,
        "retry_max_s": 0.05,
        "shop_names": {"shop-1": "Maple & Co"},
        "clock_offset_s": offset_to_local("Asia/Shanghai", 12),
        **over,
    }
    return NotifySettings(**fields)


def lines(h: Harness, return_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    return sms_lines(NotifySetup(h.rt.settings, h.ctx.settings), return_id)


async def send_due(h: Harness) -> None:
    """Sender rounds, as its worker runs them, until no message is due."""
    while await h.ctx.sender.round():
        pass


async def rounds_until(h: Harness, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Sender rounds until `done` (a retry falls due a moment later)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        due_in = await h.ctx.sender.step()
        await asyncio.sleep(min(due_in if due_in is not None else 0.05, 0.05))


async def statuses(h: Harness, return_id: uuid.UUID) -> dict[str, str]:
    rows = await h.pool.fetch("SELECT step, status FROM messages WHERE return_id = $1", return_id)
    return {r["step"]: r["status"] for r in rows}


async def test_each_step_gives_one_message_however_often_its_event_comes(handler_settings: Settings) -> None:
    req = requested(locale="en")
    rid = req.return_id
    chain = [req, scanned(rid), received(rid), escalated(rid), issued(rid)]
    async with harness(SPEC, handler_settings, notify()) as h:
        await h.apply("lifecycle", chain + chain)  # each event twice in one batch
        assert not await sender_idle(h.ctx)  # five messages are due
        await h.apply("lifecycle", [*chain, scanned(rid, ScanCode.in_transit, "s2")])  # again; a later scan
        await send_due(h)
        assert await sender_idle(h.ctx)
        sent = await h.published(SmsSent)
        assert await statuses(h, rid) == dict.fromkeys(STEPS, "sent")
        got = lines(h, rid)
    assert [x["step"] for x in got] == STEPS  # in the order the customer reads them
    assert all(x["locale"] == "en" and x["text"].endswith("- Maple & Co") for x in got)
    assert [(e.return_id, e.step) for e in sent] == [(rid, step) for step in STEPS]
    assert all(e.phone_masked == "+86*********78" and e.provider == "file" for e in sent)


async def test_reminders_are_scheduled_while_goods_must_come_back_and_called_off(handler_settings: Settings) -> None:
    # the requests happen at the service's clock (noon in Shanghai), not at the real time: before 10:00 in
    # Shanghai (16:00 to 02:00 UTC) the clock runs hours ahead of the real time and the reminders fell due
    offset = offset_to_local("Asia/Shanghai", 12)
    at = datetime.now(UTC) + timedelta(seconds=offset)
    waiting, moving, closing, scanned_first = (requested(at=at) for _ in range(4))
    refund_only = requested(kind="refund_only", at=at)
    async with harness(SPEC, handler_settings, notify(reminder_intervals_s=[7200, 3600], clock_offset_s=offset)) as h:
        await h.apply("lifecycle", [scanned(scanned_first.return_id)])  # before its request
        await h.apply("lifecycle", [waiting, moving, refund_only, closing, scanned_first])
        rows = await h.pool.fetch(
            "SELECT step, due_at FROM messages WHERE return_id = $1 AND kind = 'reminder' ORDER BY step",
            waiting.return_id,
        )
        at = waiting.requested_at
        assert [(r["step"], r["due_at"]) for r in rows] == [
            ("reminder_1", at + timedelta(hours=1)),
            ("reminder_2", at + timedelta(hours=2)),
        ]
        assert "reminder_1" not in await statuses(h, refund_only.return_id)  # no goods come back
        assert "reminder_1" not in await statuses(h, scanned_first.return_id)  # already on its way

        await h.apply("lifecycle", [scanned(moving.return_id, ScanCode.accepted)])  # at the counter: not moving
        assert (await statuses(h, moving.return_id))["reminder_1"] == "queued"
        await h.apply("lifecycle", [scanned(moving.return_id), cancelled(closing.return_id)])
        for rid in (moving.return_id, closing.return_id):
            got = await statuses(h, rid)
            assert (got["reminder_1"], got["reminder_2"]) == ("cancelled", "cancelled")
        assert (await statuses(h, waiting.return_id))["reminder_1"] == "queued"

        await h.apply("lifecycle", [escalated(closing.return_id)])  # news of a cancelled return
        await send_due(h)
        suppressed = await h.published(SmsSuppressed)
    assert sorted((e.return_id, e.step, e.reason) for e in suppressed) == [
        (closing.return_id, "requested", "return_cancelled"),
        (closing.return_id, "under_review", "return_cancelled"),
    ]


async def test_a_message_due_at_night_waits_for_8am_local_time(handler_settings: Settings) -> None:
    offset = offset_to_local("Asia/Shanghai", 23)  # the request at the service's clock, as above
    req = requested(locale="zh-CN", at=datetime.now(UTC) + timedelta(seconds=offset))
    async with harness(SPEC, handler_settings, notify(clock_offset_s=offset)) as h:
        await h.apply("lifecycle", [req])
        await send_due(h)
        [deferred] = await h.published(SmsDeferred)
        assert (deferred.step, deferred.reason) == ("requested", "quiet_hours")
        morning = deferred.deliver_after.astimezone(SHANGHAI)
        assert (morning.hour, morning.minute) == (8, 0)
        assert morning.date() == (h.ctx.clock.now().astimezone(SHANGHAI) + timedelta(days=1)).date()
        assert lines(h) == [] and await sender_idle(h.ctx)  # nothing is due before the morning

        h.ctx.clock.advance((deferred.deliver_after - h.ctx.clock.now()).total_seconds() + 1)
        await send_due(h)
        assert [x["step"] for x in lines(h, req.return_id)] == ["requested"]


async def test_stop_suppresses_the_next_messages_and_start_lets_them_go_again(handler_settings: Settings) -> None:
    req = requested(phone=PHONE)
    rid = req.return_id
    async with harness(SPEC, handler_settings, notify()) as h:
        await record_replies(h.ctx, [InboundSms(PHONE, " stop ", "in-1")])
        await h.apply("lifecycle", [req])
        await send_due(h)
        [suppressed] = await h.published(SmsSuppressed)
        assert (suppressed.step, suppressed.reason, suppressed.phone_masked) == (
            "requested",
            "opted_out",
            "+86*********22",
        )
        # START opts back in; the first STOP delivered again is a duplicate and changes nothing
        await record_replies(h.ctx, [InboundSms(PHONE, "START", "in-2"), InboundSms(PHONE, " stop ", "in-1")])
        await record_replies(h.ctx, [InboundSms(PHONE, "stop sending me these please", "in-3")])  # not a keyword
        await h.apply("lifecycle", [scanned(rid)])
        await send_due(h)
        assert [x["step"] for x in lines(h, rid)] == ["parcel_seen"]


async def test_the_daily_cap_defers_news_to_the_next_morning_and_drops_reminders(handler_settings: Settings) -> None:
    async with harness(SPEC, handler_settings, notify(daily_cap=1, reminder_intervals_s=[60])) as h:
        now = h.ctx.clock.now()  # the service's time: noon in Shanghai
        first, second = requested(phone=PHONE, at=now), requested(phone=PHONE, at=now)
        await h.apply("lifecycle", [first, second])
        await send_due(h)
        assert len(lines(h)) == 1
        [deferred] = await h.published(SmsDeferred)
        assert deferred.reason == "daily_cap"
        assert deferred.deliver_after.astimezone(SHANGHAI).hour == 8
        assert deferred.deliver_after > h.ctx.clock.now()

        h.ctx.clock.advance(61)  # both returns' reminders are due, the number has had its one message today
        await send_due(h)
        suppressed = await h.published(SmsSuppressed)
        assert len(lines(h)) == 1
    assert sorted((e.return_id, e.step, e.reason) for e in suppressed) == sorted(
        (r.return_id, "reminder_1", "daily_cap") for r in (first, second)
    )


async def test_a_not_delivered_receipt_gives_one_failed_event(handler_settings: Settings) -> None:
    req = requested(phone=PHONE)
    async with harness(SPEC, handler_settings, notify()) as h:
        await h.apply("lifecycle", [req])
        await send_due(h)
        [sent] = await h.published(SmsSent)
        pid = sent.provider_message_id
        undelivered = DeliveryReport(pid, "undelivered", False, "30003")
        await record_receipts(h.ctx, [DeliveryReport(pid, "sent", None), undelivered])
        await record_receipts(h.ctx, [undelivered, DeliveryReport("file-unknown", "undelivered", False)])
        failed = await h.published(SmsFailed)
        row = await h.pool.fetchrow(
            "SELECT status, delivery_status, delivery_error FROM messages WHERE step = 'requested'"
        )
    assert [(e.return_id, e.error) for e in failed] == [(req.return_id, "not delivered: undelivered (30003)")]
    assert tuple(row) == ("sent", "undelivered", "30003")


async def test_the_sender_retries_an_outage_of_the_provider_and_fails_a_refusal_once(
    handler_settings: Settings,
) -> None:
    fake = FakeTwilio()
    fake.script.answers = [500, 500]
    refused, invalid = "+8613800000009", "+861380000000912345"
    fake.unsubscribed.add(refused)
    async with serve_app(fake.app()) as url:
        twilio = notify(
            provider="twilio",
            twilio_account_sid=fake.account_sid,
            twilio_auth_tokens=[SecretStr(fake.auth_token)],
            twilio_from="+15005550006",
            twilio_base_url=url,
        )
        async with harness(SPEC, handler_settings, twilio) as h:
            ok = requested(phone=PHONE)
            await h.apply("lifecycle", [ok])
            await rounds_until(h, lambda: len(fake.accepted) == 1)
            assert len(fake.requests) == 3  # 500, 500, 201
            [sent] = await h.published(SmsSent)
            assert sent.provider_message_id == fake.accepted[0]["sid"]
            assert (
                await h.pool.fetchval(
                    "SELECT attempts FROM messages WHERE return_id = $1 AND step = 'requested'", ok.return_id
                )
                == 3
            )

            await h.apply("lifecycle", [requested(phone=refused), requested(phone=invalid)])
            await send_due(h)
            failed = await h.published(SmsFailed)
            opted_out = await h.pool.fetchval("SELECT opted_out FROM opt_outs WHERE phone = $1", refused)
    assert len(fake.requests) == 5  # each refusal once: no retry
    assert sorted(e.error.split()[3] for e in failed) == ["21211:", "21610:"]  # "twilio: HTTP 400 <code>: ..."
    assert all(refused[3:] not in e.error and invalid[3:] not in e.error for e in failed)
    assert opted_out  # Twilio knew the number had replied STOP: so does notify now


async def test_an_outcome_the_database_could_not_take_is_written_when_it_is_back(handler_settings: Settings) -> None:
    async with harness(SPEC, handler_settings, notify()) as h:
        submit = h.ctx.sender.outcomes.submit
        refusals = []

        async def database_away_twice(item: Any) -> Any:
            if len(refusals) < 2:
                refusals.append(item)
                raise asyncpg.CannotConnectNowError("the database system is starting up")
            return await submit(item)

        h.ctx.sender.outcomes.submit = database_away_twice
        req = requested(phone=PHONE)
        await h.apply("lifecycle", [req])
        await send_due(h)
        assert len(refusals) == 2
        assert await statuses(h, req.return_id) == {
            "requested": "sent",
            "reminder_1": "queued",
            "reminder_2": "queued",
            "reminder_3": "queued",
        }
        assert len(lines(h)) == 1 and len(await h.published(SmsSent)) == 1
