"""One structured log line per webhook delivery, accepted or rejected, for every service's
`/v1/webhooks/...` routes: route, status, shop, delivery id, reason, correlation id.

A merchant whose deliveries are refused (401 signature, 422 a field) used to show only as a counter;
this line says which shop, which delivery and why. It is written here, around the routes, so no route
can forget it and every rejection (raised, returned, or FastAPI's own) is seen the same way: the
reason is read from the error body the client got. Never logged: the body, signatures, secrets; the
reason passes the phone masking of `returnflow.logging` before it is written.
"""

from __future__ import annotations

from typing import Any

import orjson

from returnflow.logging import get_logger, redact_text
from returnflow.signing import DELIVERY_HEADER, SHOPIFY_SHOP_HEADER, SHOPIFY_WEBHOOK_ID_HEADER

log = get_logger("returnflow.webhooks")

WEBHOOK_PATHS = "/v1/webhooks/"
CAPTURE_BYTES = 64 * 1024  # a return webhook is ~1 KB; a larger body only loses the shop in the line
MAX_TEXT = 300
_DELIVERY_HEADERS = (DELIVERY_HEADER.lower().encode(), SHOPIFY_WEBHOOK_ID_HEADER.lower().encode())
_SHOP_HEADER = SHOPIFY_SHOP_HEADER.lower().encode()


class WebhookLogMiddleware:
    """Pure ASGI: keeps the first bytes of a webhook's request (for its shop) and of an error answer
    (for its reason), and logs one line when the answer is sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(WEBHOOK_PATHS):
            await self.app(scope, receive, send)
            return
        request_body = bytearray()
        answer = bytearray()
        status = {"code": 500}  # an exception escaping the app is answered 500 by Starlette

        async def _receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                _keep(request_body, message.get("body", b""))
            return message

        async def _send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and status["code"] >= 400:
                _keep(answer, message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, _receive, _send)
        finally:
            log_webhook(scope, status["code"], bytes(request_body), bytes(answer))


def _keep(into: bytearray, chunk: bytes) -> None:
    if len(into) < CAPTURE_BYTES:
        into.extend(chunk[: CAPTURE_BYTES - len(into)])


def log_webhook(scope: Any, status: int, request_body: bytes, answer: bytes) -> None:
    route = getattr(scope.get("route"), "path", None) or scope.get("path", "")
    fields = {
        "route": route,
        "status": status,
        "shop": shop_of(scope, request_body),
        "delivery_id": _header(scope, *_DELIVERY_HEADERS),
        "reason": reason_of(answer) if status >= 400 else None,
        "correlation_id": (scope.get("state") or {}).get("correlation_id"),
    }
    if status < 400:
        log.info("webhook accepted", **fields)
    elif status < 500:
        log.warning("webhook rejected", **fields)
    else:
        log.error("webhook failed", **fields)


def _header(scope: Any, *names: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k in names:
            return _short(v.decode(errors="replace"))
    return None


def _short(text: str) -> str:
    return redact_text(text[:MAX_TEXT])


def shop_of(scope: Any, request_body: bytes) -> str | None:
    """The shop as the delivery names it: Shopify's shop header, else the body's `shop_id` (on a 401 as
    the unverified body claims it — what the merchant needs to find their own deliveries)."""
    header = _header(scope, _SHOP_HEADER)
    if header:
        return header
    try:
        body = orjson.loads(request_body)
    except orjson.JSONDecodeError:
        return None
    shop = body.get("shop_id") if isinstance(body, dict) else None
    return _short(shop) if isinstance(shop, str) else None


def reason_of(answer: bytes) -> str | None:
    """Why a delivery was refused, from the error body the client got: the first field named and its
    message, else the error's text (`error`, or RFC 9457's `detail` / `title`)."""
    try:
        body = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    for key in ("fields", "errors"):
        items = body.get(key)
        if isinstance(items, list) and items and isinstance(items[0], dict):
            first = items[0]
            return _short(f"{first.get('field', 'body')}: {first.get('message', '')}")
    for key in ("error", "detail", "title"):
        if isinstance(body.get(key), str):
            return _short(body[key])
    return None
