"""Webhook signatures. Each source has up to two active secrets, so a rotation never drops a delivery.

generic:  X-Returnflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
shopify:  X-Shopify-Hmac-SHA256: base64(HMAC-SHA256(secret, raw body))
standard: Standard Webhooks (https://www.standardwebhooks.com): webhook-id, webhook-timestamp (unix seconds) and
          webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")>, space-separated when
          several; the key is the base64 part of a `whsec_<base64>` secret (a secret without the prefix is used
          as it is). What notify signs merchant webhooks with, and what the generic intake also accepts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

SIGNATURE_HEADER = "X-Returnflow-Signature"
DELIVERY_HEADER = "X-Returnflow-Delivery"
SHOPIFY_HMAC_HEADER = "X-Shopify-Hmac-SHA256"
SHOPIFY_WEBHOOK_ID_HEADER = "X-Shopify-Webhook-Id"
SHOPIFY_SHOP_HEADER = "X-Shopify-Shop-Domain"
SHOPIFY_TOPIC_HEADER = "X-Shopify-Topic"
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
WHSEC_PREFIX = "whsec_"


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


# -- Standard Webhooks ------------------------------------------------------------------------------------


def standard_key(secret: str) -> bytes:
    """The HMAC key of a secret: the base64-decoded part of `whsec_<base64>`; any other secret as its bytes.
    ValueError for a `whsec_` secret that is not base64 (the shops file names it)."""
    if not secret.startswith(WHSEC_PREFIX):
        return secret.encode()
    encoded = secret[len(WHSEC_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    if not key:
        raise ValueError("a whsec_ secret must not be empty")
    return key


def standard_keys(secrets: Sequence[bytes]) -> list[bytes]:
    """The HMAC keys of a source's configured secrets (`webhook_secrets`), each in whsec_ form or raw; a
    malformed whsec_ secret is used as it is written."""
    keys: list[bytes] = []
    for secret in secrets:
        try:
            keys.append(standard_key(secret.decode()))
        except (UnicodeDecodeError, ValueError):
            keys.append(secret)
    return keys


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`: one webhook-signature entry."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def standard_headers(key: bytes, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three headers of a Standard Webhooks delivery (timestamp: now, when it is signed)."""
    t = int(time.time()) if timestamp is None else timestamp
    return {
        WEBHOOK_ID_HEADER: msg_id,
        WEBHOOK_TIMESTAMP_HEADER: str(t),
        WEBHOOK_SIGNATURE_HEADER: standard_signature(key, msg_id, t, body),
    }


def standard_verify(
    headers: Mapping[str, str],
    body: bytes,
    keys: Sequence[bytes],
    tolerance_s: int = 300,
    now: float | None = None,
) -> str:
    """Check a Standard Webhooks delivery (`headers` with lower-case names); returns its webhook-id.
    SignatureError naming the header that is missing, malformed, stale or does not match."""
    msg_id = headers.get(WEBHOOK_ID_HEADER, "").strip()
    stamp = headers.get(WEBHOOK_TIMESTAMP_HEADER, "").strip()
    given = headers.get(WEBHOOK_SIGNATURE_HEADER, "").strip()
    for name, value in (
        (WEBHOOK_ID_HEADER, msg_id),
        (WEBHOOK_TIMESTAMP_HEADER, stamp),
        (WEBHOOK_SIGNATURE_HEADER, given),
    ):
        if not value:
            raise SignatureError(f"missing {name} header")
    try:
        t = int(stamp)
    except ValueError:
        raise SignatureError(f"malformed {WEBHOOK_TIMESTAMP_HEADER} header: not unix seconds") from None
    now = time.time() if now is None else now
    if abs(now - t) > tolerance_s:
        raise SignatureError(f"{WEBHOOK_TIMESTAMP_HEADER} is more than {tolerance_s}s from now")
    signatures: list[bytes] = []
    for entry in given.split():
        version, sep, encoded = entry.partition(",")
        if not sep or not encoded:
            raise SignatureError(f"malformed {WEBHOOK_SIGNATURE_HEADER} header: needs v1,<base64>")
        if version != "v1":
            continue  # another scheme (v1a: asymmetric) this side does not use
        try:
            signatures.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise SignatureError(f"malformed {WEBHOOK_SIGNATURE_HEADER} header: not base64") from None
    if not signatures:
        raise SignatureError(f"{WEBHOOK_SIGNATURE_HEADER} header has no v1 signature")
    if not keys:
        raise SignatureError("no secret configured for this source")
    signed = f"{msg_id}.{t}.".encode() + body
    for key in keys:
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        if any(hmac.compare_digest(expected, s) for s in signatures):
            return msg_id
    raise SignatureError(f"{WEBHOOK_SIGNATURE_HEADER} does not match")
