"""notify with the Aliyun provider, on the real broker and PostgreSQL, against a local Dysmsapi
stand-in: a signed SendSms with sign name, template code and parameters; receipts (SmsReport) and
replies (SmsUp) accepted only with the callback URL's token; 退订 opts the number out."""

from __future__ import annotations

import httpx
import orjson
from pydantic import SecretStr

from services.notify import SPEC
from tests.integration.fake_sms_providers import FakeAliyun, serve_app
from tests.integration.notify_support import SMS_SECRET, notify_settings, publish, requested, scanned
from tests.kafkautil import read_topic, values, wait_for


async def test_aliyun_send_receipts_and_replies(settings, service_runner):
    fake = FakeAliyun()
    async with serve_app(fake.app()) as aliyun_url:
        s = notify_settings(
            settings,
            provider="aliyun",
            aliyun_access_key_id=fake.access_key_id,
            aliyun_access_key_secret=SecretStr(fake.access_key_secret),
            aliyun_sign_name="退货助手",
            aliyun_template_codes={"requested": "SMS_100000001", "parcel_seen": "SMS_100000002"},
            aliyun_endpoint=aliyun_url,
        )
        req = requested(locale="zh-CN", phone="+8613877776666", kind="refund_only")
        async with service_runner(SPEC, *s) as svc, httpx.AsyncClient(base_url=svc.base_url) as client:
            await publish(s.kafka_bootstrap, [req])

            async def accepted() -> bool:
                return len(fake.accepted) == 1

            await wait_for(accepted)
            got = fake.accepted[0]
            assert (got["PhoneNumbers"], got["SignName"], got["TemplateCode"]) == (
                "13877776666",
                "退货助手",
                "SMS_100000001",
            )
            params = orjson.loads(got["TemplateParam"])
            assert params["shop_name"] == "Maple & Co" and params["order_id"] == req.order_id
            assert params["kind"] == "refund_only"
            sent = values(await read_topic(s.kafka_bootstrap, "sms.sent", 1))
            assert sent[0]["provider"] == "aliyun" and sent[0]["provider_message_id"] == got["BizId"]

            token = SMS_SECRET.decode()
            report = [
                {
                    "phone_number": "13877776666",
                    "send_time": "2026-11-20 10:00:00",
                    "report_time": "2026-11-20 10:00:05",
                    "success": False,
                    "err_code": "MK:0001",
                    "err_msg": "用户接收失败",
                    "sms_size": "1",
                    "biz_id": got["BizId"],
                    "out_id": got["OutId"],
                }
            ]
            assert (await client.post("/v1/webhooks/sms/status", json=report)).status_code == 401
            r = await client.post(f"/v1/webhooks/sms/status?token={token}", json=report)
            assert r.status_code == 200 and r.json() == {"code": 0, "msg": "接收成功"}
            failed = values(await read_topic(s.kafka_bootstrap, "sms.failed", 1))
            assert failed[0]["error"] == "not delivered: MK:0001 (用户接收失败)"

            up = [
                {
                    "phone_number": "13877776666",
                    "send_time": "2026-11-20 10:01:00",
                    "content": "退订",
                    "sign_name": "【退货助手】",
                    "dest_code": "1",
                    "sequence_id": 987654321,
                }
            ]
            assert (await client.post("/v1/webhooks/sms/inbound?token=guess", json=up)).status_code == 401
            assert (await client.post(f"/v1/webhooks/sms/inbound?token={token}", json=up)).status_code == 200
            await publish(s.kafka_bootstrap, [scanned(req.return_id)])
            suppressed = values(await read_topic(s.kafka_bootstrap, "sms.suppressed", 1))
            assert [(e["step"], e["reason"]) for e in suppressed] == [("parcel_seen", "opted_out")]
            assert len(fake.accepted) == 1
