"""Local stand-ins for the SMS providers' HTTP APIs, served over real sockets by uvicorn.

They implement the documented request and response formats, including the errors: Twilio's
Messages resource (basic auth, form parameters, JSON errors with `code`/`message`/`more_info`/`status`)
and Alibaba Cloud Dysmsapi SendSms (RPC signature v1 checked, nonce replay, timestamp window, HTTP 200
with `Code` for business errors, 4xx for request errors). Tests script failures (status codes, delays)
and read what was received.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from apphost.embedded import free_port

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _json(body: Any, status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@dataclass
class Script:
    """Answers to give before behaving normally: an int is an HTTP status, 'timeout' sleeps."""

    answers: list[Any] = field(default_factory=list)
    delay_s: float = 0.0

    def next(self) -> Any:
        return self.answers.pop(0) if self.answers else None


# -- Twilio ------------------------------------------------------------------------------------------------


class FakeTwilio:
    def __init__(self, account_sid: str = "AC" + "1" * 32, auth_token: str = "twilio-token") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.script = Script()
        self.requests: list[dict[str, str]] = []
        self.accepted: list[dict[str, str]] = []
        self.unsubscribed: set[str] = set()
        self.base_url = ""

    def _error(self, status: int, code: int, message: str) -> Response:
        return _json(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status,
        )

    async def messages(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.requests.append(form)
        answer = self.script.next()
        if answer == "timeout":
            await asyncio.sleep(self.script.delay_s)
        elif isinstance(answer, int):
            code = {500: 20500, 503: 20503, 429: 20429}.get(answer, answer * 100)
            return self._error(answer, code, "scripted failure")
        auth = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if not hmac.compare_digest(auth, expected) or request.path_params["sid"] != self.account_sid:
            return self._error(401, 20003, "Authenticate")
        to, body = form.get("To"), form.get("Body")
        if not to:
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return self._error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return self._error(400, 21602, "Message body is required.")
        if not E164.match(to):
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in self.unsubscribed:
            return self._error(400, 21610, "Attempt to send to unsubscribed recipient")
        sid = "SM" + uuid.uuid4().hex
        self.accepted.append({**form, "sid": sid})
        now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        return _json(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": to,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": body,
                "status": "queued" if form.get("From") else "accepted",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "date_created": now,
                "date_updated": now,
                "date_sent": None,
                "error_code": None,
                "error_message": None,
                "price": None,
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
            201,
        )

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/2010-04-01/Accounts/{sid}/Messages.json", self.messages, methods=["POST"])])

    # Twilio calling us
    def sign(self, url: str, params: dict[str, str]) -> str:
        data = url + "".join(k + v for k, v in sorted(params.items()))
        return base64.b64encode(hmac.new(self.auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()

    async def post_webhook(self, url: str, params: dict[str, str], token: str | None = None) -> httpx.Response:
        signature = self.sign(url, params) if token is None else FakeTwilio(self.account_sid, token).sign(url, params)
        async with httpx.AsyncClient() as client:
            return await client.post(url, data=params, headers={"X-Twilio-Signature": signature})

    def inbound_params(self, from_number: str, body: str) -> dict[str, str]:
        return {
            "MessageSid": "SM" + uuid.uuid4().hex,
            "SmsSid": "",
            "AccountSid": self.account_sid,
            "From": from_number,
            "To": "+15005550006",
            "Body": body,
            "NumMedia": "0",
            "NumSegments": "1",
            "ApiVersion": "2010-04-01",
        }

    def status_params(self, sid: str, status: str, error_code: str | None = None) -> dict[str, str]:
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": self.account_sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "To": "+8613800000000",
            "From": "+15005550006",
            "ApiVersion": "2010-04-01",
        }
        if error_code:
            params["ErrorCode"] = error_code
        return params


# -- Alibaba Cloud SMS ----------------------------------------------------------------------------------------


def _pe(value: str) -> str:
    return quote(value, safe="~")


class FakeAliyun:
    def __init__(
        self,
        access_key_id: str = "LTAI-test-key",
        access_key_secret: str = "aliyun-secret",
        sign_names: tuple[str, ...] = ("退货助手",),
        template_codes: tuple[str, ...] = ("SMS_100000001", "SMS_100000002"),
    ) -> None:
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.sign_names = set(sign_names)
        self.template_codes = set(template_codes)
        self.script = Script()
        self.requests: list[dict[str, str]] = []
        self.accepted: list[dict[str, str]] = []
        self.nonces: set[str] = set()
        self.limited: set[str] = set()  # numbers that hit flow control

    def _error(self, status: int, code: str, message: str) -> Response:
        rid = str(uuid.uuid4()).upper()
        return _json(
            {"RequestId": rid, "HostId": "dysmsapi.aliyuncs.com", "Code": code, "Message": message, "Recommend": ""},
            status,
        )

    def _business(self, code: str, message: str) -> Response:
        return _json({"RequestId": str(uuid.uuid4()).upper(), "Code": code, "Message": message}, 200)

    async def rpc(self, request: Request) -> Response:
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.requests.append(params)
        answer = self.script.next()
        if answer == "timeout":
            await asyncio.sleep(self.script.delay_s)
        elif answer == "throttling":
            return self._error(400, "Throttling.User", "Request was denied due to user flow control.")
        elif isinstance(answer, int):
            return self._error(answer, "ServiceUnavailable", "The request has failed due to a temporary failure.")
        for name in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp", "Version", "Action"):
            if not params.get(name):
                return self._error(400, f"Missing{name}", f"{name} is mandatory for this action.")
        if params["AccessKeyId"] != self.access_key_id:
            return self._error(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if params.get("SignatureMethod") != "HMAC-SHA1" or params.get("SignatureVersion") != "1.0":
            return self._error(400, "InvalidSignatureMethod", "Specified signature method is not supported.")
        canonical = "&".join(f"{_pe(k)}={_pe(v)}" for k, v in sorted(params.items()) if k != "Signature")
        to_sign = f"{request.method}&{_pe('/')}&{_pe(canonical)}"
        expected = base64.b64encode(
            hmac.new(f"{self.access_key_secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
        ).decode()
        if not hmac.compare_digest(expected, params["Signature"]):
            return self._error(400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
        try:
            ts = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return self._error(
                400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
            )
        if abs((datetime.now(UTC) - ts).total_seconds()) > 900:
            return self._error(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        if params["SignatureNonce"] in self.nonces:
            return self._error(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        self.nonces.add(params["SignatureNonce"])
        if params["Action"] != "SendSms" or params["Version"] != "2017-05-25":
            return self._error(
                404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method."
            )
        for name in ("PhoneNumbers", "SignName", "TemplateCode"):
            if not params.get(name):
                return self._error(400, f"Missing{name}", f"{name} is mandatory for this action.")
        phone = params["PhoneNumbers"]
        if not re.fullmatch(r"(1\d{10})|([1-9]\d{7,14})", phone):
            return self._business("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if params["SignName"] not in self.sign_names:
            return self._business("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        if params["TemplateCode"] not in self.template_codes:
            return self._business("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        try:
            tp = orjson.loads(params.get("TemplateParam") or "{}")
            assert isinstance(tp, dict)
        except (orjson.JSONDecodeError, AssertionError):
            return self._business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")  # noqa: RUF001
        if not all(isinstance(v, str) for v in tp.values()):
            return self._business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")  # noqa: RUF001
        if phone in self.limited:
            return self._business("isv.BUSINESS_LIMIT_CONTROL", "触发天级流控Permits:10")
        biz_id = f"{uuid.uuid4().int % 10**18}^0"
        self.accepted.append({**params, "BizId": biz_id})
        return _json({"Message": "OK", "RequestId": str(uuid.uuid4()).upper(), "Code": "OK", "BizId": biz_id}, 200)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/", self.rpc, methods=["GET", "POST"])])


@contextlib.asynccontextmanager
async def serve_app(app: Starlette) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
