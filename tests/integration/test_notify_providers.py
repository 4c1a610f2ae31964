"""Each SMS provider against a local HTTP server speaking its documented API (real sockets): what a
success, a refusal (4xx), an outage (5xx), throttling and a timeout become."""

from __future__ import annotations

import time

import orjson
import pytest

from apphost.embedded import free_port
from services.notify.providers import (
    AliyunProvider,
    OutgoingSms,
    PermanentError,
    TransientError,
    TwilioProvider,
)
from tests.integration.fake_sms_providers import FakeAliyun, FakeTwilio, serve_app


def sms(to: str = "+8613812345678", step: str = "refund_paid", locale: str = "zh-CN") -> OutgoingSms:
    return OutgoingSms(
        message_id=42,
        to=to,
        body="【退货助手】您订单order-1的退款¥40.00已原路退回，请留意到账信息。",  # noqa: RUF001
        step=step,
        locale=locale,
        template=step,
        params={"shop_name": "退货助手", "order_id": "order-1", "amount": "¥40.00", "return_id": "r-1"},
    )


def twilio(fake: FakeTwilio, url: str, token: str | None = None, timeout_s: float = 2.0) -> TwilioProvider:
    return TwilioProvider(
        account_sid=fake.account_sid,
        auth_tokens=[token or fake.auth_token],
        from_number="+15005550006",
        messaging_service_sid=None,
        base_url=url,
        status_callback="https://notify.example.com/v1/webhooks/sms/status",
        timeout_s=timeout_s,
    )


def aliyun(fake: FakeAliyun, url: str, secret: str | None = None, timeout_s: float = 2.0) -> AliyunProvider:
    return AliyunProvider(
        access_key_id=fake.access_key_id,
        access_key_secret=secret or fake.access_key_secret,
        sign_name="退货助手",
        template_codes={"refund_paid": "SMS_100000001", "requested:en": "SMS_100000002"},
        endpoint=url,
        region="cn-hangzhou",
        callback_tokens=[b"cb-token"],
        timeout_s=timeout_s,
    )


async def test_twilio_send_accepted_with_basic_auth_and_form_fields():
    fake = FakeTwilio()
    async with serve_app(fake.app()) as url:
        p = twilio(fake, url)
        sid = await p.send(sms())
        await p.close()
    assert sid.startswith("SM") and len(sid) == 34
    sent = fake.accepted[0]
    assert sent["To"] == "+8613812345678" and sent["From"] == "+15005550006"
    assert sent["Body"].startswith("【退货助手】")
    assert sent["StatusCallback"] == "https://notify.example.com/v1/webhooks/sms/status"


@pytest.mark.parametrize("answer", [500, 503, 429])
async def test_twilio_5xx_and_429_are_transient(answer):
    fake = FakeTwilio()
    fake.script.answers = [answer]
    async with serve_app(fake.app()) as url:
        p = twilio(fake, url)
        with pytest.raises(TransientError):
            await p.send(sms())
        assert (await p.send(sms())).startswith("SM")  # the next try goes through
        await p.close()


async def test_twilio_timeout_and_connection_refused_are_transient():
    fake = FakeTwilio()
    fake.script = type(fake.script)(answers=["timeout"], delay_s=1.0)
    async with serve_app(fake.app()) as url:
        p = twilio(fake, url, timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(TransientError, match="timeout"):
            await p.send(sms())
        assert time.monotonic() - started < 1.0
        await p.close()
    p = twilio(fake, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError):
        await p.send(sms())
    await p.close()


async def test_twilio_4xx_is_permanent_with_the_error_code():
    fake = FakeTwilio()
    fake.unsubscribed.add("+8613800000009")
    async with serve_app(fake.app()) as url:
        p = twilio(fake, url)
        with pytest.raises(PermanentError) as bad_number:
            await p.send(sms(to="+1555"))
        with pytest.raises(PermanentError) as unsubscribed:
            await p.send(sms(to="+8613800000009"))
        await p.close()
        wrong = twilio(fake, url, token="not-the-token")
        with pytest.raises(PermanentError) as auth:
            await wrong.send(sms())
        await wrong.close()
    assert bad_number.value.code == "21211" and not bad_number.value.opted_out
    assert unsubscribed.value.code == "21610" and unsubscribed.value.opted_out
    assert auth.value.code == "20003"
    assert fake.accepted == []


async def test_aliyun_send_signed_request_accepted():
    fake = FakeAliyun()
    async with serve_app(fake.app()) as url:
        p = aliyun(fake, url)
        biz_id = await p.send(sms())
        await p.close()
    assert biz_id.endswith("^0")
    got = fake.accepted[0]
    assert got["PhoneNumbers"] == "13812345678"  # mainland numbers without +86
    assert got["SignName"] == "退货助手" and got["TemplateCode"] == "SMS_100000001"
    assert got["OutId"] == "42" and got["Format"] == "JSON" and got["RegionId"] == "cn-hangzhou"
    assert orjson.loads(got["TemplateParam"]) == {"shop_name": "退货助手", "order_id": "order-1", "amount": "¥40.00"}


async def test_aliyun_refusals_are_permanent_and_outages_transient():
    fake = FakeAliyun()
    fake.limited.add("13800000009")
    async with serve_app(fake.app()) as url:
        bad_key = aliyun(fake, url, secret="wrong-secret")
        with pytest.raises(PermanentError) as signature:
            await bad_key.send(sms())
        await bad_key.close()
        p = aliyun(fake, url)
        with pytest.raises(PermanentError) as limited:
            await p.send(sms(to="+8613800000009"))
        with pytest.raises(PermanentError) as no_template:
            await p.send(sms(step="received"))  # no TemplateCode configured: nothing is sent
        requests_before = len(fake.requests)
        fake.script.answers = [503, "throttling"]
        with pytest.raises(TransientError, match="503"):
            await p.send(sms())
        with pytest.raises(TransientError, match="Throttling"):
            await p.send(sms())
        assert (await p.send(sms(step="requested", locale="en"))).endswith("^0")
        await p.close()
    assert signature.value.code == "SignatureDoesNotMatch"
    assert limited.value.code == "isv.BUSINESS_LIMIT_CONTROL"
    assert no_template.value.code == "no_template"
    assert len(fake.requests) == requests_before + 3
    assert fake.accepted[-1]["TemplateCode"] == "SMS_100000002"
