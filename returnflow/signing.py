"""Webhook signatures. Each source has up to two active secrets, so a rotation never drops a delivery.

generic:  X-Returnflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
shopify:  X-Shopify-Hmac-SHA256: base64(HMAC-SHA256(secret, raw body))
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence

SIGNATURE_HEADER = "X-Returnflow-Signature"
DELIVERY_HEADER = "X-Returnflow-Delivery"
SHOPIFY_HMAC_HEADER = "X-Shopify-Hmac-SHA256"
SHOPIFY_WEBHOOK_ID_HEADER = "X-Shopify-Webhook-Id"
SHOPIFY_SHOP_HEADER = "X-Shopify-Shop-Domain"
SHOPIFY_TOPIC_HEADER = "X-Shopify-Topic"


class SignatureError(Exception):
    """The request is not signed by the source (message safe to return to the caller)."""


def sign(secret: bytes, body: bytes, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[bytes],
    tolerance_s: int = 300,
    now: float | None = None,
    header_name: str = SIGNATURE_HEADER,
) -> None:
    """The scheme is Stripe's too (Stripe-Signature: t=…,v1=…): `header_name` names it in the errors."""
    if not header:
        raise SignatureError(f"missing {header_name} header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        k, sep, v = item.strip().partition("=")
        if not sep or not v:
            raise SignatureError(f"malformed {header_name} header")
        parts.setdefault(k, []).append(v)
    if "t" not in parts or "v1" not in parts or len(parts["t"]) != 1:
        raise SignatureError(f"malformed {header_name} header: needs t=<unix seconds>,v1=<hex>")
    try:
        t = int(parts["t"][0])
    except ValueError:
        raise SignatureError(f"malformed {header_name} header: t is not an integer") from None
    now = time.time() if now is None else now
    if abs(now - t) > tolerance_s:
        raise SignatureError(f"signature timestamp is more than {tolerance_s}s from now")
    if not secrets:
        raise SignatureError("no secret configured for this source")
    signed = f"{t}.".encode() + body
    for secret in secrets:
        expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, given) for given in parts["v1"]):
            return
    raise SignatureError("signature does not match")


def shopify_sign(secret: bytes, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


def shopify_verify(header: str | None, body: bytes, secrets: Sequence[bytes]) -> None:
    if not header:
        raise SignatureError(f"missing {SHOPIFY_HMAC_HEADER} header")
    if not secrets:
        raise SignatureError("no secret configured for this source")
    for secret in secrets:
        if hmac.compare_digest(shopify_sign(secret, body), header.strip()):
            return
    raise SignatureError("signature does not match")
