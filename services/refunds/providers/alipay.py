"""The Alipay adapter: `alipay.trade.refund` through the OpenAPI gateway, RSA2 (SHA256withRSA) signatures
both ways, `out_request_no` as the idempotency key, and `alipay.trade.fastpay.refund.query` to learn an
unknown outcome.

A request is a form POST to the gateway (`…/gateway.do`): the common parameters (app_id, method,
format=JSON, charset=utf-8, sign_type=RSA2, timestamp in Beijing time, version=1.0) and `biz_content`
(JSON), signed with the merchant's app private key over the parameters sorted by name, `k=v` joined
with `&` (empty values and `sign` left out). The answer `{"alipay_trade_refund_response": {...},
"sign": "..."}` is verified with Alipay's public key over the exact text of the response node; an
answer that does not verify is not believed (the outcome stays unknown, never released).

Alipay's answers onto the ledger's outcomes (`classify`, pure):
    10000, fund_change Y                          -> paid
    10000, fund_change N (the same out_request_no  -> asked with the refund query: REFUND_SUCCESS (or a
           answered before)                          refund_amount) is paid, else unknown
    20000 / ACQ.SYSTEM_ERROR / HTTP 5xx / timeout -> unknown: the refund query learns it, and a refund not
                                                     made is asked again under the same out_request_no
    ACQ.DISCORDANT_REPEAT_REQUEST                 -> unknown (this out_request_no was used for another amount)
    20001, 40006, isv.invalid-signature, app id   -> retryable: nothing was made; fix the keys
    ACQ.SELLER_BALANCE_NOT_ENOUGH, HTTP 429       -> retryable
    other 40004 (TRADE_NOT_EXIST, amount too      -> declined
    large, TRADE_STATUS_ERROR, …), 40001, 40002

Money: `refund_amount` is yuan with two decimals ("40.00"); `yuan` converts the ledger's fen explicitly.
The payment is named by `trade_no` (Alipay's 16-64 digit trade number) when the payment reference is all
digits, else by `out_trade_no` (the merchant's order number given when the order was paid).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from returnflow.logging import get_logger
from returnflow.loops import Backoff
from services.refunds.gateway import GatewayResult, Http11Pool, declined, paid, retryable, unknown

log = get_logger("refunds.alipay")

BEIJING = timezone(timedelta(hours=8))
REFUND = "alipay.trade.refund"
QUERY = "alipay.trade.fastpay.refund.query"
CONFIG_SUB_CODES = ("isv.invalid-signature", "isv.invalid-app-id", "isv.missing-signature", "isv.invalid-sign-type")
UNKNOWN_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR", "ACQ.DISCORDANT_REPEAT_REQUEST", "aop.ACQ.SYSTEM_ERROR"})
LATER_SUB_CODES = frozenset({"ACQ.SELLER_BALANCE_NOT_ENOUGH"})


def yuan(amount: int, currency: str) -> str:
    """Ledger minor units (fen) -> Alipay's refund_amount ("40.00" yuan); only CNY is refunded here."""
    if currency != "CNY":
        raise ValueError(f"Alipay refunds are in CNY, not {currency}")
    if amount <= 0:
        raise ValueError(f"a refund amount must be positive minor units, not {amount}")
    return f"{amount // 100}.{amount % 100:02d}"


def fen(text: str) -> int:
    """Alipay's "40.00" back to fen (exactly; a malformed amount raises ValueError)."""
    whole, _, frac = text.strip().partition(".")
    if not whole.isdigit() or (frac and (not frac.isdigit() or len(frac) > 2)):
        raise ValueError(f"not an amount in yuan: {text!r}")
    return int(whole) * 100 + int((frac or "0").ljust(2, "0"))


def payment_field(payment_reference: str) -> str:
    return "trade_no" if payment_reference.isdigit() and len(payment_reference) >= 16 else "out_trade_no"


def signing_string(params: Mapping[str, str]) -> bytes:
    """The parameters Alipay signs: sorted by name, `k=v` joined with `&`, without `sign` and empty values."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v != "").encode()


def rsa2_sign(key: rsa.RSAPrivateKey, content: bytes) -> str:
    return base64.b64encode(key.sign(content, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa2_verify(key: rsa.RSAPublicKey, content: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), content, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """A PEM private key, or Alipay's console format (the base64 body without the PEM lines)."""
    text = pem if "-----BEGIN" in pem else f"-----BEGIN PRIVATE KEY-----\n{pem.strip()}\n-----END PRIVATE KEY-----\n"
    key = serialization.load_pem_private_key(text.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the Alipay app private key must be an RSA key (RSA2)")
    return key


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    text = pem if "-----BEGIN" in pem else f"-----BEGIN PUBLIC KEY-----\n{pem.strip()}\n-----END PUBLIC KEY-----\n"
    key = serialization.load_pem_public_key(text.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the Alipay public key must be an RSA key (RSA2)")
    return key


def response_node(raw: bytes, method: str) -> tuple[bytes, str | None]:
    """The exact text of the response node (what Alipay signed) and the signature, from the raw answer."""
    name = method.replace(".", "_") + "_response"
    for node in (name, "error_response"):
        marker = f'"{node}":'.encode()
        start = raw.find(marker)
        if start < 0:
            continue
        end = raw.rfind(b',"sign":')
        content = raw[start + len(marker) : end if end > start else raw.rfind(b"}")].strip()
        sign = orjson.loads(raw).get("sign") if end > start else None
        return content, sign if isinstance(sign, str) else None
    raise ValueError("no response node in Alipay's answer")


def classify(node: Mapping[str, Any]) -> GatewayResult:
    """A verified `alipay.trade.refund` response node as the ledger's outcome (the table in the module doc);
    a success without money moving (`fund_change` N) is unknown until the refund query confirms it."""
    code, sub = str(node.get("code") or ""), str(node.get("sub_code") or "")
    what = f"Alipay answered {code} {sub or node.get('msg') or ''}: {str(node.get('sub_msg') or node.get('msg'))[:200]}"
    reference = str(node.get("trade_no") or "") or None
    if code == "10000":
        if node.get("fund_change") == "Y":
            return paid(reference or "alipay")
        return unknown("Alipay answered success without money moving (fund_change N): asking the refund query")
    if code == "20000" or sub in UNKNOWN_SUB_CODES:
        return unknown(what)
    if code in ("20001", "40006") or sub.startswith(CONFIG_SUB_CODES) or sub in LATER_SUB_CODES:
        return retryable(what)
    if code in ("40001", "40002", "40004"):
        return declined(what)
    return unknown(f"unexpected answer from Alipay: {what}")


def query_outcome(node: Mapping[str, Any], amount: int) -> GatewayResult:
    """A verified refund query node: refunded (REFUND_SUCCESS, or the refund's data present), or not."""
    if node.get("code") != "10000":
        return unknown(f"the Alipay refund query answered {node.get('code')} {node.get('sub_code') or ''}".strip())
    status, refunded = node.get("refund_status"), node.get("refund_amount")
    if status == "REFUND_SUCCESS" or (status in (None, "") and refunded):
        if refunded and fen(str(refunded)) != amount:
            return unknown(f"Alipay refunded {refunded} under this out_request_no, the ledger {amount} fen")
        return paid(str(node.get("trade_no") or "alipay"))
    return retryable("Alipay has no refund under this out_request_no: asked again with the same one")


class AlipayGateway:
    """Refunds through Alipay's OpenAPI gateway; `gateway_url` may point at the local server
    (services/refunds/dev/alipay_server.py)."""

    def __init__(
        self,
        gateway_url: str,
        app_id: str,
        app_private_key: str,
        alipay_public_key: str,
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        max_connections: int = 32,
    ) -> None:
        url = urlsplit(gateway_url)
        self.path = url.path or "/gateway.do"
        self.app_id = app_id
        self.key = load_private_key(app_private_key)
        self.alipay_key = load_public_key(alipay_public_key)
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.pool = Http11Pool(f"{url.scheme}://{url.netloc}", max_connections)

    def signed_params(self, method: str, biz: Mapping[str, str], now: datetime | None = None) -> dict[str, str]:
        params = {
            "app_id": self.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": (now or datetime.now(BEIJING)).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
            "version": "1.0",
            "biz_content": orjson.dumps(dict(biz)).decode(),
        }
        params["sign"] = rsa2_sign(self.key, signing_string(params))
        return params

    async def refund(
        self,
        idempotency_key: str,
        payment_id: str,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        reference: str | None = None,
    ) -> GatewayResult:
        """`alipay.trade.refund` under out_request_no = the ledger's key; an unknown answer is followed by
        the refund query, and a refund Alipay does not have is asked again with the same out_request_no."""
        try:
            amount_text = yuan(amount, currency)
        except ValueError as exc:
            return declined(str(exc))
        trade = {payment_field(payment_id): payment_id, "out_request_no": idempotency_key[:64]}
        biz = {**trade, "refund_amount": amount_text, "refund_reason": f"return {metadata.get('return_id', '')}"[:256]}
        backoff = Backoff(self.backoff_s, self.backoff_s * 2**self.attempts)
        result = unknown("no attempt made")
        for attempt in range(1, self.attempts + 1):
            result, retry_after = await self._call(REFUND, biz)
            if result.outcome == "unknown":
                queried, _ = await self._call(QUERY, trade, amount)
                if queried.outcome in ("paid", "unknown"):
                    result = queried if queried.outcome == "paid" else result
                else:
                    result = retryable(f"{result.error}; the refund query finds none")
            if result.outcome in ("paid", "declined") or attempt == self.attempts:
                break
            await (asyncio.sleep(retry_after) if retry_after is not None and retry_after <= 30 else backoff.sleep())
        if result.outcome != "paid":
            log.warning(
                "alipay refund without a final answer", out_request_no=trade["out_request_no"], error=result.error
            )
        return result

    async def _call(
        self, method: str, biz: Mapping[str, str], amount: int | None = None
    ) -> tuple[GatewayResult, float | None]:
        body = urlencode(self.signed_params(method, biz)).encode()
        headers = {"content-type": "application/x-www-form-urlencoded;charset=utf-8"}
        try:
            status, got, raw = await self.pool.send("POST", self.path, headers, body, self.timeout_s)
        except TimeoutError:
            return unknown(f"Alipay did not answer within {self.timeout_s}s"), None
        except (OSError, h11.ProtocolError) as exc:
            return unknown(f"Alipay unreachable ({type(exc).__name__})"), None
        if status == 429:
            ra = got.get("retry-after", "")
            return retryable("Alipay answered 429"), float(ra) if ra.replace(".", "", 1).isdigit() else None
        if status != 200:
            return unknown(f"Alipay answered HTTP {status}"), None
        try:
            content, signature = response_node(raw, method)
            node = orjson.loads(content)
        except (ValueError, orjson.JSONDecodeError):
            return unknown("Alipay's answer is not a response node"), None
        if not signature or not rsa2_verify(self.alipay_key, content, signature):
            log.error("alipay answer signature does not verify", method=method)
            return unknown("Alipay's answer is not signed with Alipay's public key: not believed"), None
        if method == QUERY:
            return query_outcome(node, amount or 0), None
        return classify(node), None

    async def close(self) -> None:
        await self.pool.close()
