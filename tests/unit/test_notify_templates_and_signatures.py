"""notify templates (every step in every locale, merchant overrides, the sandbox) and the providers'
signature schemes against their documented examples."""

from __future__ import annotations

import orjson
import pytest

from returnflow.signing import SIGNATURE_HEADER, SignatureError, sign
from services.notify.providers import (
    AliyunProvider,
    BadWebhook,
    FileProvider,
    WebhookRequest,
    aliyun_signature,
    aliyun_string_to_sign,
    twilio_signature,
    twilio_verify,
)
from services.notify.render import TemplateProblem, Templates, provider_params, sample_values
from services.notify.rules import CARE_STEPS


def test_every_step_renders_in_every_locale_with_the_shop_as_signature():
    t = Templates()
    t.check()
    assert set(t.locales) >= {"zh-CN", "en", "es"}
    for locale in t.locales:
        for step in (*CARE_STEPS, "reminder_1", "reminder_3"):
            text = t.render(step, locale, {**sample_values(), "shop_name": "Maple & Co", "step": step})
            assert "Maple & Co" in text and "order-1" in text
            assert "{{" not in text and "None" not in text


def test_refund_only_request_says_nothing_to_send_back():
    t = Templates()
    assert "Nothing to send back" in t.render("requested", "en", sample_values("refund_only"))
    assert "无需寄回" in t.render("requested", "zh-CN", sample_values("refund_only"))
    assert "pack the items" in t.render("requested", "en", sample_values("return_and_refund"))


def test_reminders_tell_how_to_opt_out():
    t = Templates()
    assert t.render("reminder_2", "zh-CN", sample_values()).endswith("回复TD退订")
    assert "Reply STOP" in t.render("reminder_1", "en", sample_values())


def test_a_merchant_override_replaces_one_file_and_keeps_the_rest(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "refund_paid.txt").write_text("{{ amount }} is on its way back to you. {{ shop_name }}\n")
    t = Templates(tmp_path)
    assert t.render("refund_paid", "en", sample_values()) == "CN¥40.00 is on its way back to you. Demo Shop"
    assert "being reviewed" in t.render("under_review", "en", sample_values())


@pytest.mark.parametrize(
    "broken",
    ["{{ unknown_variable }}", "{% if %}", "{{ ''.__class__.__mro__ }}"],
    ids=["undefined", "syntax", "sandbox"],
)
def test_a_broken_edit_is_found_at_start_up(tmp_path, broken):
    (tmp_path / "es").mkdir()
    (tmp_path / "es" / "received.txt").write_text(broken)
    with pytest.raises(TemplateProblem, match=r"es/received\.txt"):
        Templates(tmp_path).check()


def test_provider_params_are_strings_without_empties():
    params = provider_params({**sample_values(), "tracking_no": None}, "zh-CN")
    assert params["amount"] == "¥40.00" and "tracking_no" not in params
    assert all(isinstance(v, str) for v in params.values())


# -- signatures: the providers' documented examples -------------------------------------------------------


def test_twilio_signature_matches_the_documented_example():
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    twilio_verify(["old-token", "12345"], "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", url, params)  # rotation: either token
    # Twilio may sign the URL with the default port written out
    twilio_verify(["12345"], twilio_signature("12345", url.replace(".com/", ".com:443/"), params), url, params)
    with pytest.raises(SignatureError):
        twilio_verify(["12345"], "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", url, [*params[:-1], ("To", "+18005551213")])
    with pytest.raises(SignatureError, match="missing"):
        twilio_verify(["12345"], None, url, params)


def test_aliyun_rpc_signature_matches_the_documented_example():
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert aliyun_string_to_sign("GET", params).startswith("GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions")
    assert "Timestamp%3D2016-02-23T12%253A46%253A24Z" in aliyun_string_to_sign("GET", params)
    assert aliyun_signature("testsecret", "GET", params) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def _aliyun() -> AliyunProvider:
    return AliyunProvider(
        access_key_id="id",
        access_key_secret="secret",
        sign_name="退货助手",
        template_codes={},
        endpoint="http://127.0.0.1:9",
        region="cn-hangzhou",
        callback_tokens=[b"cb-token"],
        timeout_s=1,
    )


def test_aliyun_callbacks_need_the_url_token_and_read_replies_and_receipts():
    p = _aliyun()
    up = orjson.dumps(
        [
            {
                "phone_number": "13812345678",
                "send_time": "2026-11-20 10:00:00",
                "content": "退订",
                "sign_name": "【退货助手】",
                "dest_code": "1",
                "sequence_id": 1234567890,
            }
        ]
    )
    with pytest.raises(SignatureError):
        p.parse_inbound(WebhookRequest("http://x/v1/webhooks/sms/inbound", {}, up, {}))
    with pytest.raises(SignatureError):
        p.parse_inbound(WebhookRequest("http://x", {}, up, {"token": "guess"}))
    [reply] = p.parse_inbound(WebhookRequest("http://x", {}, up, {"token": "cb-token"}))
    assert (reply.phone, reply.text, reply.provider_id) == ("+8613812345678", "退订", "1234567890")
    report = orjson.dumps(
        [
            {
                "phone_number": "13812345678",
                "send_time": "2026-11-20 10:00:00",
                "report_time": "2026-11-20 10:00:05",
                "success": False,
                "err_code": "MK:0001",
                "err_msg": "用户接收失败",
                "sms_size": "1",
                "biz_id": "900619746936498440^0",
                "out_id": "42",
            }
        ]
    )
    [rep] = p.parse_status(WebhookRequest("http://x", {}, report, {"token": "cb-token"}))
    assert (rep.provider_message_id, rep.delivered, rep.error) == ("900619746936498440^0", False, "用户接收失败")
    assert orjson.loads(p.answer("status").body) == {"code": 0, "msg": "接收成功"}
    with pytest.raises(BadWebhook):
        p.parse_status(WebhookRequest("http://x", {}, b'[{"success": true}]', {"token": "cb-token"}))


def test_file_provider_webhooks_use_the_returnflow_signature(tmp_path):
    p = FileProvider(tmp_path / "sms.jsonl", [b"sms-secret"])
    body = orjson.dumps({"from": "+8613812345678", "text": "STOP"})
    [reply] = p.parse_inbound(
        WebhookRequest("http://x", {SIGNATURE_HEADER.lower(): sign(b"sms-secret", body)}, body, {})
    )
    assert reply.text == "STOP"
    with pytest.raises(SignatureError):
        p.parse_inbound(WebhookRequest("http://x", {SIGNATURE_HEADER.lower(): sign(b"other", body)}, body, {}))
