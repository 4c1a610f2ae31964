"""A local Stripe for development and tests: the Refunds API as Stripe documents it, over real sockets.

    POST /v1/refunds          form-encoded: payment_intent=pi_… | charge=ch_…, amount, metadata[k]=v, reason
                              Authorization: Bearer <secret key> (401 invalid_request_error otherwise)
                              Idempotency-Key: the same key and parameters replay the first answer
                              (Idempotent-Replayed: true); the same key with other parameters is a 400
                              idempotency_error; a key still being processed a 409
                              declines: an unknown payment (404 resource_missing), an amount above what is
                              left to refund (400 amount_too_large), a fully refunded charge (400
                              charge_already_refunded)
    GET  /v1/refunds/{id}     one refund;  GET /v1/refunds?payment_intent=|charge=  a list
    POST /_dev/charges        {"id": "pi_…", "amount": 5000, "currency": "cny"}: a payment that can be refunded
    POST /_dev/faults         the next requests: {"mode": "timeout" | "hang" | "error" | "rate_limit" |
                              "pending", "count": n, "status": 500, "delay_s": 2.0, "retry_after": 1}
                              timeout = the refund IS made, the answer comes too late; hang = nothing made,
                              too late; error = `status` api_error, nothing made; rate_limit = 429 with
                              Retry-After, nothing made; pending = made with status `pending`
    POST /_dev/refunds/{id}/settle  {"status": "succeeded" | "failed" | "canceled", "failure_reason": …}:
                              the refund changes and `refund.updated` + `charge.refund.updated` are sent,
                              signed with Stripe-Signature, to the webhook URL
    GET  /_dev/stats          request and refund counts;  GET /_dev/webhooks  the deliveries and their answers

A payment not registered is created on first use with `auto_charge_amount` when that is set (the benches,
`returnflow up`), else refused as Stripe refuses an unknown id. State is in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from returnflow.local_server import FaultQueue, serve_in_loop, stand_in_app
from services.refunds.providers.stripe import sign_webhook

API_VERSION = "2024-06-20"
METADATA_KEY = re.compile(r"^metadata\[([^\]]{1,40})\]$")


class Fault(BaseModel):
    mode: Literal["timeout", "hang", "error", "rate_limit", "pending"]
    count: int = Field(default=1, ge=1)
    status: int = Field(default=500, ge=500, le=599)
    delay_s: float = Field(default=2.0, ge=0, le=120)
    retry_after: int = Field(default=1, ge=0, le=3600)


class Charge(BaseModel):
    id: str = Field(pattern=r"^(pi|ch|py)_[A-Za-z0-9_]+$")
    amount: int = Field(gt=0)
    currency: str = Field(default="cny", pattern=r"^[a-z]{3}$")


class Settle(BaseModel):
    status: Literal["succeeded", "failed", "canceled"]
    failure_reason: str | None = None


@dataclass
class StripeState:
    api_key: str
    webhook_secret: str | None = None
    webhook_url: str | None = None
    auto_charge_amount: int | None = None
    auto_charge_currency: str = "cny"
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)  # pi_/ch_ id -> amount, currency, refunded
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)  # key -> fingerprint, answer
    in_flight: set[str] = field(default_factory=set)
    faults: FaultQueue[Fault] = field(default_factory=FaultQueue)
    requests: int = 0
    replays: int = 0
    webhooks: list[dict[str, Any]] = field(default_factory=list)

    def charge(self, payment: str) -> dict[str, Any] | None:
        if payment not in self.charges and self.auto_charge_amount:
            self.charges[payment] = {"amount": self.auto_charge_amount, "currency": self.auto_charge_currency}
        found = self.charges.get(payment)
        if found is not None:
            found.setdefault("refunded", 0)
        return found


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    hdrs = {"request-id": f"req_{secrets.token_hex(7)}", "stripe-version": API_VERSION, **(headers or {})}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=hdrs)


def _error(
    status: int, type_: str, message: str, code: str | None = None, param: str | None = None
) -> tuple[int, dict[str, Any]]:
    e: dict[str, Any] = {"type": type_, "message": message}
    if code:
        e["code"] = code
        e["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        e["param"] = param
    return status, {"error": e}


def _authorized(state: StripeState, request: Request) -> bool:
    return request.headers.get("authorization", "") == f"Bearer {state.api_key}"


def _unauthorized(request: Request) -> Response:
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    shown = f"{given[:8]}****{given[-4:]}" if len(given) > 12 else "****"
    message = f"Invalid API Key provided: {shown}" if given else "You did not provide an API key."
    status, body = _error(401, "invalid_request_error", message)
    return _json(body, status, {"www-authenticate": 'Bearer realm="Stripe"'})


def parse_refund_form(raw: bytes) -> tuple[dict[str, Any], tuple[int, dict[str, Any]] | None]:
    """The request's parameters (payment, amount, metadata, reason), or Stripe's 400 naming the parameter."""
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        return {}, _error(400, "invalid_request_error", "Invalid request body (form-encoded expected)")
    params: dict[str, Any] = {"metadata": {}}
    for k, v in pairs:
        if m := METADATA_KEY.match(k):
            params["metadata"][m.group(1)] = v
        elif k in ("payment_intent", "charge", "amount", "reason", "currency"):
            params[k] = v
        else:
            return {}, _error(400, "invalid_request_error", f"Received unknown parameter: {k}", param=k)
    if bool(params.get("payment_intent")) == bool(params.get("charge")):
        return {}, _error(
            400,
            "invalid_request_error",
            "One of the following params should be provided for this request: payment_intent or charge.",
            "parameter_missing",
            "payment_intent",
        )
    if "amount" in params:
        if not str(params["amount"]).isdigit() or int(params["amount"]) <= 0:
            return {}, _error(
                400, "invalid_request_error", "Invalid positive integer", "parameter_invalid_integer", "amount"
            )
        params["amount"] = int(params["amount"])
    return params, None


def _make_refund(state: StripeState, p: dict[str, Any], pending: bool) -> tuple[int, dict[str, Any]]:
    payment = p.get("payment_intent") or p["charge"]
    kind = "payment_intent" if p.get("payment_intent") else "charge"
    charge = state.charge(payment)
    if charge is None:
        return _error(404, "invalid_request_error", f"No such {kind}: '{payment}'", "resource_missing", kind)
    left = charge["amount"] - charge["refunded"]
    if left <= 0:
        return _error(
            400, "invalid_request_error", f"Charge {payment} has already been refunded.", "charge_already_refunded"
        )
    amount = p.get("amount", left)
    if amount > left:
        message = f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
        return _error(400, "invalid_request_error", message, "amount_too_large", "amount")
    charge["refunded"] += amount
    rid = f"re_{secrets.token_hex(12)}"
    state.refunds[rid] = {
        "id": rid,
        "object": "refund",
        "amount": amount,
        "balance_transaction": None if pending else f"txn_{secrets.token_hex(12)}",
        "charge": payment if kind == "charge" else f"ch_{hashlib.sha256(payment.encode()).hexdigest()[:24]}",
        "created": int(time.time()),
        "currency": charge["currency"],
        "metadata": p["metadata"],
        "payment_intent": payment if kind == "payment_intent" else None,
        "reason": p.get("reason") or None,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "pending" if pending else "succeeded",
        "transfer_reversal": None,
    }
    return 200, state.refunds[rid]


async def create_refund(state: StripeState, request: Request) -> Response:
    """POST /v1/refunds with Stripe's idempotency: a key's first executed answer is saved and replayed."""
    state.requests += 1
    if not _authorized(state, request):
        return _unauthorized(request)
    key = request.headers.get("idempotency-key", "").strip()
    if len(key) > 255:
        status, body = _error(400, "invalid_request_error", "Idempotency-Key longer than 255", param="Idempotency-Key")
        return _json(body, status)
    params, problem = parse_refund_form(await request.body())
    if problem is not None:
        return _json(problem[1], problem[0])  # a request that fails validation is not saved under its key
    fault = state.faults.next()
    if fault is not None and fault.mode == "hang":
        await asyncio.sleep(fault.delay_s)
        return _json(_error(500, "api_error", "simulated hang")[1], 500)
    if fault is not None and fault.mode == "error":
        return _json(
            _error(fault.status, "api_error", "An unknown error occurred")[1],
            fault.status,
            {"stripe-should-retry": "true"},
        )
    if fault is not None and fault.mode == "rate_limit":
        body = _error(429, "rate_limit_error", "Too many requests hit the API too quickly.", "rate_limit")[1]
        return _json(body, 429, {"retry-after": str(fault.retry_after), "stripe-should-retry": "true"})
    fingerprint = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()
    if key and key in state.in_flight:
        return _json(
            _error(
                409,
                "idempotency_error",
                "There is currently another in-progress request using this Idempotency Key.",
                "idempotency_key_in_use",
            )[1],
            409,
        )
    if key and key in state.by_key:
        fp, status, body = state.by_key[key]
        if fp != fingerprint:
            message = (
                "Keys for idempotent requests can only be used with the same parameters they were first used with. "
                f"Try using a key other than '{key}' if you meant to execute a different request."
            )
            return _json(_error(400, "idempotency_error", message)[1], 400)
        state.replays += 1
        answer = _json(body, status, {"idempotent-replayed": "true", "original-request": "req_replayed"})
    else:
        status, body = _make_refund(state, params, pending=fault is not None and fault.mode == "pending")
        if fault is not None and fault.mode == "timeout" and key:
            # made, but the answer arrives after the caller gave up; a retry meanwhile finds the key in use
            state.in_flight.add(key)
            try:
                await asyncio.sleep(fault.delay_s)
            finally:
                state.in_flight.discard(key)
        if key:
            state.by_key[key] = (fingerprint, status, body)
        answer = _json(body, status)
    return answer


def event_for(refund: dict[str, Any], type_: str) -> dict[str, Any]:
    return {
        "id": f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()),
        "data": {"object": dict(refund)},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


async def send_webhooks(state: StripeState, refund: dict[str, Any]) -> list[int]:
    """`refund.updated` and `charge.refund.updated` for this refund, signed, to the webhook URL."""
    if not state.webhook_url or not state.webhook_secret:
        return []
    statuses = []
    async with httpx.AsyncClient(timeout=10) as client:
        for type_ in ("refund.updated", "charge.refund.updated"):
            payload = orjson.dumps(event_for(refund, type_))
            headers = {
                "content-type": "application/json; charset=utf-8",
                "stripe-signature": sign_webhook(state.webhook_secret, payload),
                "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            }
            try:
                r = await client.post(state.webhook_url, content=payload, headers=headers)
                status, text = r.status_code, r.text[:300]
            except httpx.HTTPError as exc:
                status, text = 0, type(exc).__name__
            state.webhooks.append({"type": type_, "refund": refund["id"], "status": status, "answer": text})
            statuses.append(status)
    return statuses


def create_stripe_app(state: StripeState) -> FastAPI:
    app = stand_in_app(
        title="returnflow local Stripe (Refunds API)",
        service="stripe-local",
        description=__doc__,
        faults=state.faults,
        fault_model=Fault,
    )
    app.state.stripe = state

    @app.post("/v1/refunds")
    async def post_refund(request: Request) -> Response:
        return await create_refund(state, request)

    @app.get("/v1/refunds/{refund_id}")
    async def get_refund(refund_id: str, request: Request) -> Response:
        if not _authorized(state, request):
            return _unauthorized(request)
        found = state.refunds.get(refund_id)
        if found is None:
            status, body = _error(
                404, "invalid_request_error", f"No such refund: '{refund_id}'", "resource_missing", "id"
            )
            return _json(body, status)
        return _json(found)

    @app.get("/v1/refunds")
    async def list_refunds(request: Request, payment_intent: str | None = None, charge: str | None = None) -> Response:
        if not _authorized(state, request):
            return _unauthorized(request)
        data = [
            r
            for r in state.refunds.values()
            if (payment_intent is None or r["payment_intent"] == payment_intent)
            and (charge is None or r["charge"] == charge)
        ]
        return _json({"object": "list", "data": data, "has_more": False, "url": "/v1/refunds"})

    @app.post("/_dev/charges", status_code=204)
    async def add_charge(charge: Charge) -> Response:
        state.charges[charge.id] = {"amount": charge.amount, "currency": charge.currency, "refunded": 0}
        return Response(status_code=204)

    @app.post("/_dev/refunds/{refund_id}/settle")
    async def settle(refund_id: str, body: Settle) -> Response:
        refund = state.refunds.get(refund_id)
        if refund is None:
            return _json(_error(404, "invalid_request_error", f"No such refund: '{refund_id}'")[1], 404)
        refund["status"] = body.status
        if body.status == "succeeded":
            refund["balance_transaction"] = f"txn_{secrets.token_hex(12)}"
        else:
            refund["failure_reason"] = body.failure_reason or "unknown"
            payment = refund["payment_intent"] or refund["charge"]
            if payment in state.charges:
                state.charges[payment]["refunded"] -= refund["amount"]
        return _json({"refund": refund, "webhooks": await send_webhooks(state, refund)})

    @app.get("/_dev/stats")
    async def stats() -> Response:
        return _json({"requests": state.requests, "refunds": len(state.refunds), "replays": state.replays})

    @app.get("/_dev/webhooks")
    async def webhooks() -> Response:
        return _json({"deliveries": state.webhooks})

    return app


@dataclass
class LocalStripe:
    url: str
    state: StripeState


@contextlib.asynccontextmanager
async def serve_stripe(
    api_key: str = "sk_test_local",
    webhook_secret: str | None = "whsec_local",
    host: str = "127.0.0.1",
    auto_charge_amount: int | None = None,
) -> AsyncIterator[LocalStripe]:
    """Run the local Stripe in this event loop (tests); set `.state.webhook_url` once the receiver is up."""
    state = StripeState(api_key, webhook_secret, auto_charge_amount=auto_charge_amount)
    async with serve_in_loop(create_stripe_app(state), host) as url:
        yield LocalStripe(url, state)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from services.refunds.settings import RefundsSettings

    parser = argparse.ArgumentParser(description="returnflow local Stripe (Refunds API and refund webhooks)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--webhook-url", default=None, help="where the signed refund webhooks go")
    parser.add_argument("--auto-charge-amount", type=int, default=10**12, help="0: only registered payments")
    args = parser.parse_args(argv)
    # the same key and webhook secret as the refunds service it serves (RETURNFLOW_REFUNDS_STRIPE_…)
    s = RefundsSettings.load()
    key = s.stripe_api_key.get_secret_value() if s.stripe_api_key else "sk_test_local"
    secret = s.stripe_webhook_secret.get_secret_value() if s.stripe_webhook_secret else None
    state = StripeState(key, secret, args.webhook_url, args.auto_charge_amount or None)
    uvicorn.run(create_stripe_app(state), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
