"""The Stripe adapter: the Refunds API (`POST /v1/refunds`, form-encoded, Bearer secret key, an
`Idempotency-Key` per refund) and the `refund.updated` / `charge.refund.updated` webhooks signed with
`Stripe-Signature`.

Stripe's answers onto the ledger's outcomes (`classify`, pure):
    200 refund `succeeded`                        -> paid
    200 refund `pending` / `requires_action`      -> unknown, with the refund id: the next series asks
                                                     `GET /v1/refunds/{id}` (or the webhook settles it)
    200 refund `failed` / `canceled`              -> declined (its failure_reason)
    400/402/404 card_error, invalid_request_error -> declined (final: e.g. amount above the charge)
    400 idempotency_error, 409 (key in use)       -> unknown: a request under this key may have paid
    401/403 (bad key, no permission)              -> retryable: nothing was made; fix the key
    429 rate_limit_error                          -> retryable, after its Retry-After
    5xx api_error, a timeout, a lost connection   -> unknown: asked again under the same key (Stripe
                                                     replays the first answer of a key for 24 h)

Money: Stripe's `amount` is in the currency's smallest unit, the ledger's minor units (fen, cents; a
zero-decimal currency such as JPY has no minor unit in either), so `stripe_amount` is the identity for
ISO 4217 minor units; the currency is the charge's, compared with the ledger's on every answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import h11

from returnflow.logging import get_logger
from returnflow.loops import Backoff
from returnflow.signing import SignatureError, sign, verify
from services.refunds.gateway import (
    GatewayResult,
    Http11Pool,
    WebhookOutcome,
    WebhookRefused,
    declined,
    json_object,
    paid,
    retryable,
    unknown,
)

log = get_logger("refunds.stripe")

SIGNATURE_HEADER = "Stripe-Signature"
REFUND_EVENTS = frozenset({"refund.updated", "charge.refund.updated", "refund.failed", "refund.created"})
PENDING = frozenset({"pending", "requires_action"})
FAILED = frozenset({"failed", "canceled"})
RETRY_AFTER_MAX_S = 30.0  # a Retry-After longer than this ends the series (the ledger asks again later)


def stripe_amount(amount: int, currency: str) -> int:
    """Ledger minor units -> Stripe's smallest currency unit: the same integer (CNY fen, USD cents)."""
    if amount <= 0:
        raise ValueError(f"a refund amount must be positive minor units, not {amount}")
    return amount


def payment_parameter(payment_reference: str) -> tuple[str, str] | None:
    """Which Stripe parameter names the original payment: a PaymentIntent (`pi_…`) or a charge (`ch_…`,
    `py_…`); None when the reference is neither (no Stripe payment to refund)."""
    if payment_reference.startswith("pi_"):
        return "payment_intent", payment_reference
    if payment_reference.startswith(("ch_", "py_")):
        return "charge", payment_reference
    return None


def refund_form(payment_reference: str, amount: int, currency: str, metadata: Mapping[str, str]) -> bytes:
    """The form-encoded body of `POST /v1/refunds` (metadata as `metadata[key]=value`)."""
    param = payment_parameter(payment_reference)
    if param is None:
        raise ValueError(f"not a Stripe payment reference: {payment_reference!r}")
    fields = [param, ("amount", str(stripe_amount(amount, currency)))]
    fields += [(f"metadata[{k}]", v) for k, v in sorted(metadata.items())]
    return urlencode(fields).encode()


def classify(status: int, body: Mapping[str, Any], currency: str | None = None) -> GatewayResult:
    """Stripe's answer (HTTP status, parsed JSON) as the ledger's outcome (the table in the module doc)."""
    if status == 200 and body.get("object") == "refund":
        return refund_outcome(body, currency)
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    assert isinstance(err, dict)
    kind, code = str(err.get("type") or ""), str(err.get("code") or "")
    what = f"Stripe answered {status} {kind or 'error'}{f' ({code})' if code else ''}: {str(err.get('message'))[:200]}"
    if status == 429:
        return retryable(what)
    if status in (401, 403):
        return retryable(what)  # the key is wrong or lacks permission: nothing was made
    if status == 409 or kind == "idempotency_error":
        return unknown(what)  # another request under this key may have paid: never released
    if status >= 500 or kind == "api_error":
        return unknown(what)
    if 400 <= status < 500:
        return declined(what)
    return unknown(f"unexpected answer from Stripe ({status})")


def refund_outcome(refund: Mapping[str, Any], currency: str | None = None) -> GatewayResult:
    """A refund object as the ledger's outcome."""
    rid, state = str(refund.get("id")), refund.get("status")
    got = str(refund.get("currency") or "").upper()
    if currency is not None and got and got != currency.upper():
        return unknown(f"Stripe refund {rid} is in {got}, the ledger's in {currency}: for a person to check", rid)
    if state == "succeeded":
        return paid(rid)
    if state in FAILED:
        return declined(f"Stripe refund {rid} {state}: {refund.get('failure_reason') or 'no reason given'}", rid)
    return unknown(f"Stripe refund {rid} is {state}", rid)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True)
class _Answer:
    result: GatewayResult
    retry_after_s: float | None = None


class StripeGateway:
    """Refunds through Stripe's Refunds API; `base_url` may point at the local server
    (services/refunds/dev/stripe_server.py)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        webhook_secret: str | None = None,
        webhook_tolerance_s: int = 300,
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        max_connections: int = 32,
    ) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.webhook_tolerance_s = webhook_tolerance_s
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.pool = Http11Pool(base_url, max_connections)

    def _headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        h = {"authorization": f"Bearer {self.api_key}", "stripe-version": "2024-06-20"}
        if idempotency_key:
            h["idempotency-key"] = idempotency_key
            h["content-type"] = "application/x-www-form-urlencoded"
        return h

    async def refund(
        self,
        idempotency_key: str,
        payment_id: str,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        reference: str | None = None,
    ) -> GatewayResult:
        """Create the refund under `idempotency_key` (retried under it within the series), or — when an
        earlier series left it pending at Stripe (`reference`) — read it with `GET /v1/refunds/{id}`."""
        if reference:
            return await self.read_refund(reference, currency)
        if payment_parameter(payment_id) is None:
            return declined(
                f"no Stripe payment to refund: {payment_id!r} is not a PaymentIntent (pi_…) or charge (ch_…) id; "
                "send the order's payment_reference with the return"
            )
        body = refund_form(payment_id, amount, currency, metadata)
        backoff = Backoff(self.backoff_s, self.backoff_s * 2**self.attempts)
        answer = _Answer(unknown("no attempt made"))
        for attempt in range(1, self.attempts + 1):
            answer = await self._call("POST", "/v1/refunds", self._headers(idempotency_key), body, currency)
            if answer.result.outcome not in ("retryable", "unknown") or answer.result.reference:
                return answer.result  # paid, declined, or pending at Stripe (its id is kept to ask later)
            if attempt == self.attempts:
                break
            if answer.retry_after_s is not None:
                if answer.retry_after_s > RETRY_AFTER_MAX_S:
                    break
                await asyncio.sleep(answer.retry_after_s)
            else:
                await backoff.sleep()
        log.warning(
            "stripe refund without a final answer",
            idempotency_key=idempotency_key,
            outcome=answer.result.outcome,
            error=answer.result.error,
        )
        return answer.result

    async def read_refund(self, reference: str, currency: str) -> GatewayResult:
        """`GET /v1/refunds/{id}` of a refund Stripe holds: only the refund object decides; an error answer
        (even a 404) leaves it unknown, as the refund was seen at Stripe."""
        answer = await self._call("GET", f"/v1/refunds/{quote(reference, safe='')}", self._headers(), b"", currency)
        r = answer.result
        if r.outcome == "declined" and r.reference is None:
            return unknown(f"reading Stripe refund {reference}: {r.error}", reference)
        return r

    async def _call(self, method: str, path: str, headers: dict[str, str], body: bytes, currency: str) -> _Answer:
        try:
            status, got, raw = await self.pool.send(method, path, headers, body, self.timeout_s)
        except TimeoutError:
            return _Answer(unknown(f"Stripe did not answer within {self.timeout_s}s"))
        except (OSError, h11.ProtocolError) as exc:
            return _Answer(unknown(f"Stripe unreachable ({type(exc).__name__})"))
        data = json_object(raw)
        result = classify(status, data, currency)
        if status in (401, 403):
            log.error("stripe refused the API key", status=status, error=result.error)
        return _Answer(result, retry_after_s(got) if status == 429 else None)

    def read_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookOutcome]:
        """A `refund.updated` / `charge.refund.updated` event, verified with Stripe-Signature (t=…,v1=…:
        HMAC-SHA256 of "t.payload" with the endpoint's secret, within the tolerance)."""
        if not self.webhook_secret:
            raise WebhookRefused(503, "no Stripe webhook secret configured (RETURNFLOW_REFUNDS_STRIPE_WEBHOOK_SECRET)")
        try:
            verify(
                headers.get(SIGNATURE_HEADER.lower()),
                body,
                [self.webhook_secret.encode()],
                self.webhook_tolerance_s,
                header_name=SIGNATURE_HEADER,
            )
        except SignatureError as exc:
            raise WebhookRefused(401, str(exc), SIGNATURE_HEADER) from None
        return webhook_outcomes(json_object(body))

    async def close(self) -> None:
        await self.pool.close()


def webhook_outcomes(event: Mapping[str, Any]) -> list[WebhookOutcome]:
    """The settled refund an event carries (none for other events or a refund still pending)."""
    if event.get("object") != "event" or not isinstance(event.get("data"), dict):
        raise WebhookRefused(422, "not a Stripe event: `object` must be `event` with `data.object`", "data.object")
    if event.get("type") not in REFUND_EVENTS:
        return []
    refund = event["data"].get("object")
    if not isinstance(refund, dict) or refund.get("object") != "refund" or not refund.get("id"):
        raise WebhookRefused(422, "a refund event's data.object must be a refund", "data.object")
    result = refund_outcome(refund)
    if result.outcome == "unknown":
        return []
    metadata = refund.get("metadata") if isinstance(refund.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    rid = metadata.get("refund_id")
    return [WebhookOutcome(str(refund["id"]), str(rid) if rid else None, result.ok, result.error)]


def sign_webhook(secret: str, payload: bytes, t: int | None = None) -> str:
    """A Stripe-Signature header for `payload`: the returnflow scheme is Stripe's (t=…,v1=…)."""
    return sign(secret.encode(), payload, t)
