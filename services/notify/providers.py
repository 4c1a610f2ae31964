"""SMS providers behind one interface: `file` (JSON lines, for a laptop), `twilio` and `aliyun`.

A provider sends one message (raising TransientError for what a retry may fix: 5xx, 429 and
throttling, timeouts, connection errors; PermanentError for the rest), and reads the provider's
inbound-SMS and delivery-status webhooks after checking the provider's signature scheme:

- file:   JSON bodies signed with X-Returnflow-Signature (secrets `sms` in RETURNFLOW_WEBHOOK_SECRETS).
- twilio: Messages REST API with HTTP basic auth (Account SID : Auth Token); form-encoded webhooks
          signed with X-Twilio-Signature = base64(HMAC-SHA1(auth token, URL + sorted name+value pairs)).
- aliyun: Dysmsapi SendSms (2017-05-25) signed with the RPC signature v1 (HMAC-SHA1 over the
          canonicalized query, key = AccessKey secret + "&"). Aliyun's HTTP push of receipts (SmsReport)
          and replies (SmsUp) carries no signature, so the callback URL configured in its console holds a
          secret token (`?token=`, one of the `sms` webhook secrets), compared in constant time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx
import orjson

from returnflow.logging import mask_phone
from returnflow.settings import Settings
from returnflow.signing import SIGNATURE_HEADER, SignatureError, verify
from services.notify.rules import national_for_aliyun, normalize_phone
from services.notify.settings import NotifySettings


@dataclass(frozen=True)
class OutgoingSms:
    message_id: int
    to: str  # E.164, the only place the full number travels
    body: str
    step: str
    locale: str
    template: str  # template name (reminder_2 -> reminder)
    params: dict[str, str] = field(default_factory=dict)
    at: datetime | None = None
    sender: str | None = None  # the shop's own sender (shops file sms.sender): Twilio's From, Aliyun's SignName


class TransientError(Exception):
    """The provider may accept the same message later (5xx, throttling, timeout, connection)."""


class PermanentError(Exception):
    """The provider refused the message; sending it again would be refused again."""

    def __init__(self, message: str, code: str = "", opted_out: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.opted_out = opted_out


class BadWebhook(Exception):
    """A webhook body the provider would never send (answered 422)."""


@dataclass(frozen=True)
class WebhookRequest:
    url: str  # the URL as the provider called it (see Settings.public_base_url)
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str]


@dataclass(frozen=True)
class InboundSms:
    phone: str  # E.164
    text: str
    provider_id: str


@dataclass(frozen=True)
class DeliveryReport:
    provider_message_id: str
    status: str
    delivered: bool | None  # None: not final yet (queued, sent...)
    error: str | None = None


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: bytes
    media_type: str


class SmsProvider(Protocol):
    name: str
    sender: str  # what pacing is per (a From number, a sign name)

    async def send(self, sms: OutgoingSms) -> str: ...
    def parse_inbound(self, req: WebhookRequest) -> list[InboundSms]: ...
    def parse_status(self, req: WebhookRequest) -> list[DeliveryReport]: ...
    def answer(self, kind: str) -> WebhookAnswer: ...
    async def close(self) -> None: ...


def _json_object_list(raw: bytes) -> list[dict[str, Any]]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadWebhook(f"body is not JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(i, dict) for i in items):
        raise BadWebhook("body must be a JSON object or an array of objects")
    return items


def _phone(value: Any, field_name: str) -> str:
    phone = normalize_phone(str(value or ""))
    if phone is None:
        raise BadWebhook(f"{field_name} is not a phone number")
    return phone


# -- file ------------------------------------------------------------------------------------------------


class FileProvider:
    """Appends each message as one JSON line to a file (default <data dir>/sms/messages.jsonl), so a
    newcomer reads what customers would get. The number is written masked."""

    name = "file"

    def __init__(self, path: Path, secrets: Sequence[bytes], tolerance_s: int = 300) -> None:
        self.path = path
        self.secrets = list(secrets)
        self.tolerance_s = tolerance_s
        self.sender = f"file:{path.name}"
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    def _append(self, lines: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(lines)

    async def _write_pending(self) -> None:
        """Append every line queued meanwhile in one write; each send returns once its line is written."""
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._append, b"".join(line for line, _ in group))
            except Exception as exc:
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for _, fut in group:
                    if not fut.done():
                        fut.set_result(None)

    async def send(self, sms: OutgoingSms) -> str:
        pid = f"file-{uuid.uuid4().hex[:16]}"
        line = orjson.dumps(
            {
                "id": pid,
                "at": (sms.at or datetime.now(UTC)).isoformat(),
                "to": mask_phone(sms.to),
                "step": sms.step,
                "locale": sms.locale,
                "from": sms.sender,
                "message_id": sms.message_id,
                "return_id": sms.params.get("return_id"),
                "text": sms.body,
            }
        )
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line + b"\n", written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        await written
        return pid

    def _verify(self, req: WebhookRequest) -> None:
        verify(req.headers.get(SIGNATURE_HEADER.lower()), req.body, self.secrets, self.tolerance_s)

    def parse_inbound(self, req: WebhookRequest) -> list[InboundSms]:
        self._verify(req)
        out = []
        for item in _json_object_list(req.body):
            text = item.get("text")
            if not isinstance(text, str):
                raise BadWebhook("text is required")
            pid = str(item.get("id") or uuid.uuid4())
            out.append(InboundSms(_phone(item.get("from"), "from"), text, pid))
        return out

    def parse_status(self, req: WebhookRequest) -> list[DeliveryReport]:
        self._verify(req)
        out = []
        for item in _json_object_list(req.body):
            pid, status = item.get("provider_message_id"), item.get("status")
            if not pid or not isinstance(status, str):
                raise BadWebhook("provider_message_id and status are required")
            delivered = True if status == "delivered" else False if status in ("failed", "undelivered") else None
            out.append(DeliveryReport(str(pid), status, delivered, item.get("error_code")))
        return out

    def answer(self, kind: str) -> WebhookAnswer:
        return WebhookAnswer(200, b'{"ok":true}', "application/json")

    async def close(self) -> None:
        return None


# -- Twilio ------------------------------------------------------------------------------------------------

TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
TWILIO_UNSUBSCRIBED = "21610"  # "Attempt to send to unsubscribed recipient" (the number replied STOP)


def twilio_signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """Twilio's request signature: the full URL, then each POST parameter sorted by name (then value)
    as name+value with no separators; HMAC-SHA1 keyed with the Auth Token; base64."""
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def _url_variants(url: str) -> list[str]:
    """The URL as given, and with the default port added or removed (Twilio signs whichever form it
    called; its own validators try both)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    out = [url]
    if parts.port is None and default and parts.hostname:
        out.append(urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}")))
    elif parts.port == default and parts.hostname:
        out.append(urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0])))
    return out


def twilio_verify(auth_tokens: Sequence[str], header: str | None, url: str, params: Sequence[tuple[str, str]]) -> None:
    if not header:
        raise SignatureError(f"missing {TWILIO_SIGNATURE_HEADER} header")
    if not auth_tokens:
        raise SignatureError("no Twilio auth token configured")
    for token in auth_tokens:
        for candidate in _url_variants(url):
            if hmac.compare_digest(twilio_signature(token, candidate, params), header.strip()):
                return
    raise SignatureError("signature does not match")


class TwilioProvider:
    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_tokens: Sequence[str],
        from_number: str | None,
        messaging_service_sid: str | None,
        base_url: str,
        status_callback: str | None,
        timeout_s: float,
    ) -> None:
        if not account_sid or not auth_tokens:
            raise ValueError("twilio needs RETURNFLOW_NOTIFY_TWILIO_ACCOUNT_SID and _AUTH_TOKEN")
        if not from_number and not messaging_service_sid:
            raise ValueError("twilio needs RETURNFLOW_NOTIFY_TWILIO_FROM or _MESSAGING_SERVICE_SID")
        self.account_sid = account_sid
        self.auth_tokens = list(auth_tokens)
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback
        self.sender = f"twilio:{messaging_service_sid or from_number}"
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.client = httpx.AsyncClient(timeout=timeout_s, auth=(account_sid, self.auth_tokens[0]))

    async def send(self, sms: OutgoingSms) -> str:
        data = {"To": sms.to, "Body": sms.body}
        if sms.sender:  # the shop's own number (a From sends from it even with a messaging service)
            data["From"] = sms.sender
        if self.messaging_service_sid:
            data["MessagingServiceSid"] = self.messaging_service_sid
        elif not sms.sender:
            assert self.from_number is not None
            data["From"] = self.from_number
        if self.status_callback:
            data["StatusCallback"] = self.status_callback
        try:
            r = await self.client.post(self.url, data=data, headers={"Accept": "application/json"})
        except httpx.TimeoutException as exc:
            raise TransientError(f"twilio: timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(f"twilio: {type(exc).__name__}") from None
        if r.status_code in (200, 201):
            try:
                sid = r.json()["sid"]
            except (ValueError, KeyError, TypeError):
                raise TransientError("twilio: 2xx without a message sid") from None
            return str(sid)
        body = _json_or_empty(r)
        code = str(body.get("code") or "")
        message = str(body.get("message") or r.reason_phrase)
        if r.status_code == 429 or r.status_code >= 500:
            raise TransientError(f"twilio: HTTP {r.status_code} {code} {message}".strip())
        raise PermanentError(f"twilio: HTTP {r.status_code} {code}: {message}", code, code == TWILIO_UNSUBSCRIBED)

    def _form(self, req: WebhookRequest) -> list[tuple[str, str]]:
        ctype = req.headers.get("content-type", "")
        if not ctype.startswith("application/x-www-form-urlencoded"):
            raise BadWebhook("content-type must be application/x-www-form-urlencoded")
        try:
            params = parse_qsl(req.body.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise BadWebhook("body is not UTF-8") from None
        twilio_verify(self.auth_tokens, req.headers.get(TWILIO_SIGNATURE_HEADER.lower()), req.url, params)
        form = dict(params)
        if form.get("AccountSid") != self.account_sid:
            raise SignatureError("AccountSid is not this account")
        return params

    def parse_inbound(self, req: WebhookRequest) -> list[InboundSms]:
        form = dict(self._form(req))
        if not form.get("MessageSid"):
            raise BadWebhook("MessageSid is required")
        return [InboundSms(_phone(form.get("From"), "From"), form.get("Body", ""), form["MessageSid"])]

    def parse_status(self, req: WebhookRequest) -> list[DeliveryReport]:
        form = dict(self._form(req))
        sid = form.get("MessageSid") or form.get("SmsSid")
        status = form.get("MessageStatus") or form.get("SmsStatus")
        if not sid or not status:
            raise BadWebhook("MessageSid and MessageStatus are required")
        delivered = True if status == "delivered" else False if status in ("failed", "undelivered") else None
        return [DeliveryReport(sid, status, delivered, form.get("ErrorCode") or None)]

    def answer(self, kind: str) -> WebhookAnswer:
        if kind == "inbound":  # an empty TwiML response: no automatic reply
            return WebhookAnswer(200, b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>', "text/xml")
        return WebhookAnswer(204, b"", "text/plain")

    async def close(self) -> None:
        await self.client.aclose()


def _json_or_empty(r: httpx.Response) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# -- Aliyun (Alibaba Cloud SMS, Dysmsapi) -------------------------------------------------------------------

ALIYUN_TRANSIENT_CODES = frozenset({"isp.SYSTEM_ERROR", "ServiceUnavailable", "InternalError", "SYSTEM_ERROR"})


def aliyun_percent_encode(value: str) -> str:
    """RFC 3986 encoding as the RPC signature wants it: unreserved A-Z a-z 0-9 - _ . ~ kept, space is
    %20, '*' is %2A, UTF-8 bytes as upper-case %XX."""
    return quote(value, safe="~")


def aliyun_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    canonical = "&".join(
        f"{aliyun_percent_encode(k)}={aliyun_percent_encode(v)}" for k, v in sorted(params.items()) if k != "Signature"
    )
    return f"{method.upper()}&{aliyun_percent_encode('/')}&{aliyun_percent_encode(canonical)}"


def aliyun_signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    digest = hmac.new(f"{secret}&".encode(), aliyun_string_to_sign(method, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def aliyun_timestamp(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


class AliyunProvider:
    name = "aliyun"

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        sign_name: str,
        template_codes: Mapping[str, str],
        endpoint: str,
        region: str,
        callback_tokens: Sequence[bytes],
        timeout_s: float,
    ) -> None:
        if not access_key_id or not access_key_secret:
            raise ValueError("aliyun needs RETURNFLOW_NOTIFY_ALIYUN_ACCESS_KEY_ID and _ACCESS_KEY_SECRET")
        if not sign_name:
            raise ValueError("aliyun needs RETURNFLOW_NOTIFY_ALIYUN_SIGN_NAME (an approved 签名)")
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.sign_name = sign_name
        self.template_codes = dict(template_codes)
        self.endpoint = endpoint.rstrip("/") + "/"
        self.region = region
        self.callback_tokens = list(callback_tokens)
        self.sender = f"aliyun:{sign_name}"
        self.client = httpx.AsyncClient(timeout=timeout_s)

    def template_code(self, template: str, locale: str) -> str | None:
        return self.template_codes.get(f"{template}:{locale}") or self.template_codes.get(template)

    def signed_params(self, sms: OutgoingSms, now: float | None = None) -> dict[str, str]:
        code = self.template_code(sms.template, sms.locale)
        if not code:
            raise PermanentError(f"aliyun: no TemplateCode configured for {sms.template} ({sms.locale})", "no_template")
        template_param = {k: v for k, v in sms.params.items() if k != "return_id"}
        params = {
            "AccessKeyId": self.access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "RegionId": self.region,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": uuid.uuid4().hex,
            "SignatureVersion": "1.0",
            "Timestamp": aliyun_timestamp(now),
            "Version": "2017-05-25",
            "PhoneNumbers": national_for_aliyun(sms.to),
            "SignName": sms.sender or self.sign_name,
            "TemplateCode": code,
            "TemplateParam": orjson.dumps(template_param).decode(),
            "OutId": str(sms.message_id),
        }
        params["Signature"] = aliyun_signature(self.access_key_secret, "POST", params)
        return params

    async def send(self, sms: OutgoingSms) -> str:
        params = self.signed_params(sms)
        try:
            r = await self.client.post(self.endpoint, data=params, headers={"Accept": "application/json"})
        except httpx.TimeoutException as exc:
            raise TransientError(f"aliyun: timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(f"aliyun: {type(exc).__name__}") from None
        body = _json_or_empty(r)
        code = str(body.get("Code") or "")
        message = str(body.get("Message") or r.reason_phrase)
        if r.status_code == 200 and code == "OK":
            return str(body.get("BizId") or body.get("RequestId") or "")
        if r.status_code >= 500 or code in ALIYUN_TRANSIENT_CODES or code.startswith("Throttling"):
            raise TransientError(f"aliyun: HTTP {r.status_code} {code} {message}".strip())
        raise PermanentError(f"aliyun: HTTP {r.status_code} {code}: {message}", code)

    def _verify(self, req: WebhookRequest) -> None:
        token = req.query.get("token", "")
        if not token:
            raise SignatureError("missing token in the callback URL")
        if not self.callback_tokens:
            raise SignatureError("no callback token configured")
        if not any(hmac.compare_digest(token.encode(), t) for t in self.callback_tokens):
            raise SignatureError("callback token does not match")

    def parse_inbound(self, req: WebhookRequest) -> list[InboundSms]:
        self._verify(req)
        out = []
        for item in _json_object_list(req.body):
            content = item.get("content")
            if not isinstance(content, str):
                raise BadWebhook("content is required")
            pid = str(item.get("sequence_id") or f"{item.get('phone_number')}:{item.get('send_time')}:{content}")
            out.append(InboundSms(_phone(item.get("phone_number"), "phone_number"), content, pid))
        return out

    def parse_status(self, req: WebhookRequest) -> list[DeliveryReport]:
        self._verify(req)
        out = []
        for item in _json_object_list(req.body):
            biz_id = item.get("biz_id")
            if not biz_id or not isinstance(item.get("success"), bool):
                raise BadWebhook("biz_id and success are required")
            ok = bool(item["success"])
            code = str(item.get("err_code") or ("DELIVERED" if ok else "FAILED"))
            detail = str(item.get("err_msg") or code)
            out.append(DeliveryReport(str(biz_id), code, ok, None if ok else detail))
        return out

    def answer(self, kind: str) -> WebhookAnswer:
        return WebhookAnswer(200, orjson.dumps({"code": 0, "msg": "接收成功"}), "application/json")

    async def close(self) -> None:
        await self.client.aclose()


# -- choice ----------------------------------------------------------------------------------------------


def sms_file(notify: NotifySettings, settings: Settings) -> Path:
    """Where the file provider writes: the configured file, else `<data dir>/sms/messages.jsonl`."""
    return notify.sms_file or settings.data_dir / "sms" / "messages.jsonl"


def status_callback_url(settings: Settings) -> str | None:
    if not settings.public_base_url:
        return None
    return settings.public_base_url.rstrip("/") + "/v1/webhooks/sms/status"


def make_provider(notify: NotifySettings, settings: Settings) -> SmsProvider:
    name = notify.provider
    timeout = notify.http_timeout_s
    if name == "file":
        return FileProvider(sms_file(notify, settings), settings.secrets_for("sms"), settings.webhook_tolerance_s)
    if name == "twilio":
        return TwilioProvider(
            account_sid=notify.twilio_account_sid or "",
            auth_tokens=[t.get_secret_value() for t in notify.twilio_auth_tokens],
            from_number=notify.twilio_from,
            messaging_service_sid=notify.twilio_messaging_service_sid,
            base_url=notify.twilio_base_url,
            status_callback=status_callback_url(settings),
            timeout_s=timeout,
        )
    if name == "aliyun":
        secret = notify.aliyun_access_key_secret
        return AliyunProvider(
            access_key_id=notify.aliyun_access_key_id or "",
            access_key_secret=secret.get_secret_value() if secret else "",
            sign_name=notify.aliyun_sign_name or "",
            template_codes=notify.aliyun_template_codes,
            endpoint=notify.aliyun_endpoint,
            region=notify.aliyun_region,
            callback_tokens=settings.secrets_for("sms"),
            timeout_s=timeout,
        )
    raise ValueError(f"unknown SMS provider {name!r} (file, twilio, aliyun)")


def describe(provider: SmsProvider) -> str:
    if isinstance(provider, FileProvider):
        return f"file {provider.path}"
    return provider.sender
