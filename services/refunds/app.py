"""refunds service wiring: the policy applied to every lifecycle event, people's decisions (HTTP and
`refunds.commands`), and the payment worker that pays the ledger's pending refunds."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from contracts.catalog import topic_of
from contracts.events import (
    ParcelScanned,
    RefundCommand,
    ReturnCancelled,
    ReturnReceived,
    ReturnRequested,
)
from returnflow.consumer import Delivery, Handler
from returnflow.db import Wakeups
from returnflow.http import correlation_id, error, is_json, json_body, json_response
from returnflow.logging import get_logger
from returnflow.service import ConsumerSpec, Runtime, ServiceSpec, create_app
from services.refunds import storage
from services.refunds.domain import DecisionBody, bearer, outcome_body, policy_from, retry_delay_s
from services.refunds.gateway import Gateway, HttpGateway
from services.refunds.policy import Actor

log = get_logger("refunds")

LIFECYCLE_TOPICS = [
    topic_of(ReturnRequested),
    topic_of(ReturnCancelled),
    topic_of(ParcelScanned),
    topic_of(ReturnReceived),
    topic_of(RefundCommand),
]


def lifecycle_handler(rt: Runtime) -> Handler:
    policy = policy_from(rt.settings)
    lookback = rt.settings.refunds_clawback_lookback_days

    async def handle(conn: Any, batch: list[Delivery]) -> None:
        events = [d.event for d in batch if d.event is not None]
        requested = [e for e in events if isinstance(e, ReturnRequested)]
        await storage.record_returns(conn, requested)
        await storage.record_facts(
            conn,
            [e for e in events if isinstance(e, ParcelScanned)],
            [e for e in events if isinstance(e, ReturnReceived)],
            [e for e in events if isinstance(e, ReturnCancelled)],
        )
        correlations = {e.return_id: e.correlation_id for e in events if not isinstance(e, RefundCommand)}
        await storage.evaluate_returns(conn, policy, lookback, correlations)
        # Commands parked before their return was known, then this batch's commands, in order.
        commands = await storage.parked_commands(conn, [e.return_id for e in requested]) if requested else []
        commands += [
            storage.CommandIn(
                str(e.event_id), e.return_id, "kafka", e.actor_id, e.action, e.amount, e.note, e.correlation_id
            )
            for e in events
            if isinstance(e, RefundCommand)
        ]
        outcomes = await storage.process_commands(conn, commands, policy, lookback)
        for c, o in zip(commands, outcomes, strict=True):
            if o.status in (401, 403, 404, 409, 422):
                log.warning(
                    "refund command refused",
                    command_id=c.command_id,
                    actor_id=c.actor_id,
                    action=c.action,
                    status=o.status,
                    reason=o.message,
                    correlation_id=c.correlation_id,
                )

    return handle


# -- payments -------------------------------------------------------------------------------------------------


async def _start(rt: Runtime) -> None:
    s = rt.settings
    rt.state["policy"] = policy_from(s)  # fails the start, in one line, on a bad authority configuration
    if not s.refunds_gateway_url:
        raise RuntimeError(
            "refunds: RETURNFLOW_REFUNDS_GATEWAY_URL is not set "
            "(`returnflow up` starts the simulated gateway and sets it)"
        )
    rt.state["gateway"] = HttpGateway(
        s.refunds_gateway_url,
        s.refunds_gateway_api_key.get_secret_value(),
        timeout_s=s.refunds_gateway_timeout_s,
        attempts=s.refunds_gateway_attempts,
        backoff_s=s.refunds_gateway_backoff_s,
        max_connections=s.refunds_payment_concurrency,
    )


async def _stop(rt: Runtime) -> None:
    gateway = rt.state.get("gateway")
    if gateway is not None:
        await gateway.close()


async def pay_batch(rt: Runtime, gateway: Gateway, sem: asyncio.Semaphore) -> int:
    """Lease due refunds, ask the gateway (concurrently), record the outcomes in one transaction."""
    s = rt.settings
    due = await storage.claim_due(rt.pool, s.refunds_payment_batch, s.refunds_payment_lease_s)
    if not due:
        return 0

    async def pay(d: storage.Due) -> storage.PaymentResult:
        async with sem:
            r = await gateway.refund(
                d.idempotency_key,
                d.order_id,
                d.amount,
                d.currency,
                {"return_id": str(d.return_id), "refund_id": d.refund_id, "basis": d.basis},
            )
        wait = retry_delay_s(d.attempts, s.refunds_gateway_backoff_s * 4, s.refunds_payment_retry_max_s)
        return storage.PaymentResult(d, r.ok, r.reference, r.error, r.retryable, wait)

    results = await asyncio.gather(*(pay(d) for d in due))
    async with rt.pool.acquire() as conn, conn.transaction():
        await storage.record_payments(conn, results)
    return len(due)


async def payment_worker(rt: Runtime) -> None:
    s = rt.settings
    gateway: Gateway = rt.state["gateway"]
    sem = asyncio.Semaphore(s.refunds_payment_concurrency)
    wake = asyncio.Event()
    wakeups = Wakeups(rt.dsn, f"{rt.spec.schema}_payments", wake)
    try:
        while True:
            await wakeups.ensure()
            wake.clear()
            try:
                n = await pay_batch(rt, gateway, sem)
                if n:
                    continue
                wait = await storage.next_due_in(rt.pool)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("payment batch failed; retrying", error=repr(exc))
                wait = 1.0
            timeout = s.refunds_payment_poll_s if wait is None else min(max(wait, 0.01), s.refunds_payment_poll_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
    finally:
        await wakeups.close()


# -- HTTP -------------------------------------------------------------------------------------------------------


async def _actor(rt: Runtime, request: Request) -> Actor | None:
    token = bearer(request.headers.get("authorization"))
    return await storage.actor_by_token(rt.pool, token) if token else None


def _return_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


DECISION_EXAMPLE = {"action": "grant_free_refund", "amount": 1500, "note": "lipstick arrived broken"}


def routes(app: FastAPI, rt: Runtime) -> None:
    @app.post(
        "/v1/refunds/{return_id}/decisions",
        tags=["refunds"],
        summary="approve / reject / grant_free_refund (Authorization: Bearer <actor token>)",
        description="200 took effect; 202 above the actor's authority (escalated, names the role needed); "
        "401 unknown actor; 403 a reject above the actor's authority; 404 unknown return; 409 nothing to "
        "decide; 422 bad amount. An Idempotency-Key header makes a retry return the first answer.",
        openapi_extra=json_body(DecisionBody, DECISION_EXAMPLE),
    )
    async def decide(return_id: str, request: Request) -> Response:
        actor = await _actor(rt, request)
        if actor is None:
            return error(401, "unknown actor: a roster member's bearer token is required")
        rid = _return_id(return_id)
        if rid is None:
            return error(404, f"unknown return {return_id!r}")
        if not is_json(request):
            return error(415, "content-type must be application/json")
        try:
            body = DecisionBody.model_validate_json(await request.body())
        except ValidationError as exc:
            fields = [
                {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
                for e in exc.errors(include_url=False)
            ]
            return error(422, "validation failed", fields=fields)
        if body.action == "grant_free_refund" and body.amount is None:
            return error(422, "validation failed", fields=[{"field": "amount", "message": "required for a grant"}])
        key = request.headers.get("idempotency-key", "").strip()[:200] or None
        cmd = storage.CommandIn(
            command_id=str(uuid.uuid4()),
            return_id=rid,
            source="http",
            actor_id=actor.actor_id,
            action=body.action,
            amount=body.amount,
            note=body.note,
            correlation_id=correlation_id(request),
            idempotency_key=f"{actor.actor_id}:{key}" if key else None,
        )
        async with rt.pool.acquire() as conn, conn.transaction():
            (outcome,) = await storage.process_commands(
                conn, [cmd], rt.state["policy"], rt.settings.refunds_clawback_lookback_days
            )
        body_out = {
            "return_id": str(rid),
            "actor_id": actor.actor_id,
            "role": actor.role.value,
            **outcome_body(outcome),
        }
        return json_response(body_out, outcome.status)

    @app.get("/v1/refunds/escalations", tags=["refunds"], summary="Refunds waiting for a person (bearer token)")
    async def escalations(request: Request, role: str | None = None, limit: int = 100) -> Response:
        if await _actor(rt, request) is None:
            return error(401, "unknown actor: a roster member's bearer token is required")
        items = await storage.escalation_list(rt.pool, role, max(1, min(limit, 1000)))
        return json_response({"escalations": items})

    @app.get("/v1/refunds/clawbacks", tags=["refunds"], summary="Clawbacks flagged for a person (bearer token)")
    async def clawbacks(request: Request, customer: str | None = None, limit: int = 100) -> Response:
        if await _actor(rt, request) is None:
            return error(401, "unknown actor: a roster member's bearer token is required")
        items = await storage.clawback_list(rt.pool, customer_key=customer, limit=max(1, min(limit, 1000)))
        return json_response({"clawbacks": items})

    @app.get("/v1/refunds/{return_id}", tags=["refunds"], summary="A return's ledger, decisions and escalations")
    async def ledger(return_id: str, request: Request) -> Response:
        if await _actor(rt, request) is None:
            return error(401, "unknown actor: a roster member's bearer token is required")
        rid = _return_id(return_id)
        found = await storage.ledger_of(rt.pool, rid) if rid else None
        if found is None:
            return error(404, f"unknown return {return_id!r}")
        return json_response(found)


SPEC: ServiceSpec[Any] = ServiceSpec(
    name="refunds",
    folder=Path(__file__).parent,
    description="Refund policy (authority presets, early refund on a moving scan, receipt refunds), people's "
    "decisions over HTTP and refunds.commands, and an exactly-once ledger paid through the gateway.",
    consumers=[ConsumerSpec("lifecycle", LIFECYCLE_TOPICS, lifecycle_handler)],
    routes=routes,
    background=[payment_worker],
    on_start=[_start],
    on_stop=[_stop],
)


def app() -> FastAPI:
    return create_app(SPEC)
