"""notify with the Twilio provider, on the real broker and PostgreSQL, against a local Twilio stand-in:
500 twice then 201 gives one message; a 4xx gives a failed event after one request (no retry storm);
delivery receipts and replies are taken only with a valid X-Twilio-Signature; a send under way when the
service stops is recorded and its event published before it exits."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from returnflow import db
from services.notify import SPEC
from tests.idle import wait_idle
from tests.integration.fake_sms_providers import FakeTwilio, serve_app
from tests.integration.notify_support import notify_settings, publish, requested, scanned
from tests.kafkautil import read_topic, values, wait_for


async def test_twilio_retries_5xx_once_sent_4xx_fails_and_webhooks_are_verified(settings, service_runner):
    fake = FakeTwilio()
    fake.script.answers = [500, 500]
    async with serve_app(fake.app()) as twilio_url:
        s = notify_settings(
            settings,
            provider="twilio",
            twilio_account_sid=fake.account_sid,
            twilio_auth_tokens=[SecretStr(fake.auth_token)],
            twilio_from="+15005550006",
            twilio_base_url=twilio_url,
        )
        ok = requested(locale="en", phone="+8613811112222")
        bad = requested(locale="en", phone="+861380000000912345")  # too long for E.164
        refused = requested(locale="en", phone="+8613800000009")
        fake.unsubscribed.add("+8613800000009")
        async with service_runner(SPEC, *s) as svc:
            # 5. provider answering 500 twice then 201 -> one message sent
            await publish(s.kafka_bootstrap, [ok])
            await wait_for(lambda: _true(len(fake.accepted) == 1))
            assert len(fake.requests) == 3
            sid = fake.accepted[0]["sid"]
            sent = values(await read_topic(s.kafka_bootstrap, "sms.sent", 1))
            assert [(e["return_id"], e["provider_message_id"]) for e in sent] == [(str(ok.return_id), sid)]
            assert sent[0]["provider"] == "twilio" and sent[0]["phone_masked"] == "+86*********22"

            # a 4xx: failed at once, one request, no retry
            await publish(s.kafka_bootstrap, [bad])
            failed = values(await read_topic(s.kafka_bootstrap, "sms.failed", 1))
            assert failed[0]["return_id"] == str(bad.return_id) and "21211" in failed[0]["error"]
            assert "861380000000912345" not in failed[0]["error"]  # Twilio quotes the number; events mask it
            await wait_idle(svc)  # no retry comes
            assert len(fake.requests) == 4
            # Twilio refuses a number that replied STOP to it: failed, and the number is opted out here too
            await publish(s.kafka_bootstrap, [refused])
            failed = values(await read_topic(s.kafka_bootstrap, "sms.failed", 2))
            [unsubscribed] = [e for e in failed if e["return_id"] == str(refused.return_id)]
            assert "21610" in unsubscribed["error"] and "13800000009" not in unsubscribed["error"]
            assert await svc.runtime.pool.fetchval("SELECT opted_out FROM opt_outs WHERE phone = '+8613800000009'")
            assert len(fake.requests) == 5
            status = await svc.runtime.pool.fetchval(
                "SELECT status FROM messages WHERE return_id = $1 AND step = 'requested'", bad.return_id
            )
            assert status == "failed"

            # delivery receipt: bad signature refused; undelivered -> sms.failed once, however often it comes
            status_url = f"{svc.base_url}/v1/webhooks/sms/status"
            forged = await fake.post_webhook(status_url, fake.status_params(sid, "undelivered", "30003"), token="x")
            assert forged.status_code == 401
            for _ in range(2):
                r = await fake.post_webhook(status_url, fake.status_params(sid, "undelivered", "30003"))
                assert r.status_code == 204
            failed = values(await read_topic(s.kafka_bootstrap, "sms.failed", 3))
            assert len(failed) == 3  # topics keep order per return only: pick this return's
            [undelivered] = [e for e in failed if e["return_id"] == str(ok.return_id)]
            assert undelivered["error"] == "not delivered: undelivered (30003)"
            row = await svc.runtime.pool.fetchrow(
                "SELECT status, delivery_status, delivery_error FROM messages WHERE provider_message_id = $1", sid
            )
            assert tuple(row) == ("sent", "undelivered", "30003")

            # a reply: STOP (signed) opts the number out; later steps are suppressed, nothing reaches Twilio
            inbound_url = f"{svc.base_url}/v1/webhooks/sms/inbound"
            params = fake.inbound_params("+8613811112222", "Stop")
            forged = await fake.post_webhook(inbound_url, params, token="x")
            assert forged.status_code == 401
            r = await fake.post_webhook(inbound_url, params)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
            assert "<Response></Response>" in r.text
            await publish(s.kafka_bootstrap, [scanned(ok.return_id)])
            suppressed = values(await read_topic(s.kafka_bootstrap, "sms.suppressed", 1))
            assert [(e["step"], e["reason"]) for e in suppressed] == [("parcel_seen", "opted_out")]
            assert len(fake.requests) == 5


async def _true(value: bool) -> bool:
    return value


class SlowTwilio(FakeTwilio):
    """Twilio taking a second to answer: a send is under way when the service is told to stop."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    async def messages(self, request):
        self.arrived.set()
        await asyncio.sleep(1.0)
        return await super().messages(request)


async def test_an_sms_under_way_at_shutdown_is_recorded_and_its_event_published(settings, service_runner):
    fake = SlowTwilio()
    async with serve_app(fake.app()) as twilio_url:
        s = notify_settings(
            settings,
            provider="twilio",
            twilio_account_sid=fake.account_sid,
            twilio_auth_tokens=[SecretStr(fake.auth_token)],
            twilio_from="+15005550006",
            twilio_base_url=twilio_url,
        )
        ret = requested(locale="en", phone="+8613811112222")
        async with service_runner(SPEC, *s):
            await publish(s.kafka_bootstrap, [ret])
            await asyncio.wait_for(fake.arrived.wait(), 15)
        # stopped while Twilio was answering: the sender waited for it, recorded the outcome, and the
        # outbox was flushed after that (not at the next start)
        sent = values(await read_topic(s.kafka_bootstrap, "sms.sent", 1, timeout_s=5))
        assert [e["return_id"] for e in sent] == [str(ret.return_id)] and len(fake.accepted) == 1
        conn = await db.connect(settings.database_url.get_secret_value(), "notify")
        try:
            status = await conn.fetchval("SELECT status FROM messages WHERE step = 'requested'")
        finally:
            await conn.close()
        assert status == "sent"
