"""Build and sign courier tracking pushes the way Kuaidi100 and AfterShip send them (their documented
formats), signing with hashlib/hmac here rather than with the service's own code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

KUAIDI100_URL = "/v1/webhooks/couriers/kuaidi100"
AFTERSHIP_URL = "/v1/webhooks/couriers/aftership"
KUAIDI100_OK = {"result": True, "returnCode": "200", "message": "成功"}


def kuaidi100_checkpoint(ftime: str, context: str, status: str, code: str | None = None) -> dict[str, Any]:
    c = {"time": ftime, "ftime": ftime, "context": context, "status": status, "areaName": "浙江,杭州市"}
    return c | ({"statusCode": code} if code else {})


def kuaidi100_param(nu: str, state: str, data: list[dict[str, Any]], com: str = "shunfeng") -> dict[str, Any]:
    """A push's `param`: the parcel's whole history, newest first (as Kuaidi100 sends it)."""
    last = {"message": "ok", "nu": nu, "com": com, "state": state, "ischeck": "0", "condition": "F00"}
    return {
        "status": "polling",
        "billstatus": "got",
        "message": "",
        "lastResult": last | {"status": "200", "data": data},
    }


def kuaidi100_form(param: dict[str, Any] | str, salt: str, sign: str | None = None) -> tuple[bytes, dict[str, str]]:
    """The form body (param + sign = uppercase MD5 of param + salt) and its content type."""
    text = param if isinstance(param, str) else json.dumps(param, ensure_ascii=False)
    signature = sign if sign is not None else hashlib.md5((text + salt).encode()).hexdigest().upper()
    body = urlencode({"sign": signature, "param": text}).encode()
    return body, {"content-type": "application/x-www-form-urlencoded;charset=UTF-8"}


def aftership_checkpoint(at: str, message: str, tag: str, subtag: str) -> dict[str, Any]:
    return {
        "slug": "ups",
        "created_at": "2026-11-22T17:31:05+00:00",
        "checkpoint_time": at,
        "city": "Oakland",
        "location": "Oakland, CA, US",
        "message": message,
        "tag": tag,
        "subtag": subtag,
    }


def aftership_body(tracking_number: str, checkpoints: list[dict[str, Any]], slug: str = "ups") -> dict[str, Any]:
    last = checkpoints[-1] if checkpoints else {"tag": "Pending", "subtag": "Pending_001"}
    return {
        "event": "tracking_update",
        "event_id": "4b7f3a52-8e0a-4f0c-9d7e-2c1a6b5e9f10",
        "is_tracking_first_tag": True,
        "ts": 1795683000,
        "msg": {
            "id": "k5lh7dy7vvqeck71p5loe011",
            "tracking_number": tracking_number,
            "slug": slug,
            "tag": last["tag"],
            "subtag": last["subtag"],
            "checkpoints": checkpoints,  # oldest first, as AfterShip sends them
        },
    }


def aftership_signed(body: dict[str, Any] | bytes, secret: str) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    digest = base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()
    return raw, {"content-type": "application/json", "aftership-hmac-sha256": digest}
