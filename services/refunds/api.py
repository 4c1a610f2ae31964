"""The refunds HTTP API: people's decisions (bearer token of a roster member), the escalation and
clawback queues, and a return's ledger. Parse, call a handler or a view, map the outcome to HTTP."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from returnflow.http import (
    BearerToken,
    HttpProblem,
    context_dependency,
    correlation_id,
    json_body,
    json_request,
    json_response,
    unauthorized,
)
from services.refunds import handlers, repository, views
from services.refunds.handlers import RefundsContext
from services.refunds.rules import Actor, CommandIn, Outcome

router = APIRouter(tags=["refunds"])

Ctx = Annotated[RefundsContext, Depends(context_dependency(RefundsContext))]

MAX_BODY_BYTES = 64 * 1024  # a decision is an action, an amount and a note of at most 2,000 characters


async def roster_actor(ctx: Ctx, token: BearerToken) -> Actor:
    """The roster member holding the request's bearer token (the role is the roster's, never the
    request's); 401 for anyone else."""
    actor = await repository.actor_by_token(ctx.pool, token) if token else None
    if actor is None:
        raise unauthorized("unknown actor: a roster member's bearer token is required")
    return actor


RosterActor = Annotated[Actor, Depends(roster_actor)]


class DecisionBody(BaseModel):
    """Body of POST /v1/refunds/{return_id}/decisions. The actor comes from the bearer token."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["approve", "reject", "grant_free_refund"]
    amount: StrictInt | None = Field(
        default=None, ge=1, description="minor units; required for grant_free_refund, optional for approve"
    )
    note: str | None = Field(default=None, max_length=2000)


DECISION_EXAMPLE = {"action": "grant_free_refund", "amount": 1500, "note": "lipstick arrived broken"}


async def decision_body(request: Request) -> DecisionBody:
    """The decision, checked: size (413), content type (415), fields (422)."""
    body = await json_request(request, DecisionBody, MAX_BODY_BYTES)
    if body.action == "grant_free_refund" and body.amount is None:
        raise HttpProblem(422, "validation failed", [{"field": "amount", "message": "required for a grant"}])
    return body


def outcome_body(o: Outcome) -> dict[str, Any]:
    body: dict[str, Any] = {"result": o.result, "message": o.message}
    if o.amount is not None:
        body["amount"] = o.amount
    if o.required_role is not None:
        body["required_role"] = o.required_role.value
    if o.field:
        body["fields"] = [{"field": o.field, "message": o.message}]
    return body


@router.post(
    "/v1/refunds/{return_id}/decisions",
    summary="approve / reject / grant_free_refund (Authorization: Bearer <actor token>)",
    description="200 took effect; 202 above the actor's authority (escalated, names the role needed), or "
    "parked: the return is not known yet and the decision is applied when it arrives; 401 unknown actor; "
    "403 a reject above the actor's authority; 409 nothing to decide; 422 bad amount. An Idempotency-Key "
    "header makes a retry (also a concurrent one) return the first answer; the key used again for another "
    "request is a 422 naming what differs.",
    openapi_extra=json_body(DecisionBody, DECISION_EXAMPLE),
)
async def decide(
    ctx: Ctx,
    actor: RosterActor,
    return_id: UUID,
    request: Request,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    # Read after the actor (401) and the path id (404) are checked, as the answers always came in that order.
    body = await decision_body(request)
    key = (idempotency_key or "").strip()[:200] or None
    command = CommandIn(
        command_id=str(uuid.uuid4()),
        return_id=return_id,
        source="http",
        actor_id=actor.actor_id,
        action=body.action,
        amount=body.amount,
        note=body.note,
        correlation_id=correlation_id(request),
        idempotency_key=f"{actor.actor_id}:{key}" if key else None,
    )
    outcome = await handlers.decide(ctx, command)
    answer = {"return_id": str(return_id), "actor_id": actor.actor_id, "role": actor.role.value}
    return json_response({**answer, **outcome_body(outcome)}, outcome.status)


@router.get(
    "/v1/refunds/whoami",
    summary="The roster member a bearer token belongs to (what `returnflow login` checks)",
    description="200 with actor_id and role; 401 for a token the roster does not hold.",
)
async def whoami(actor: RosterActor) -> Response:
    return json_response({"actor_id": actor.actor_id, "role": actor.role.value})


@router.get("/v1/refunds/escalations", summary="Refunds waiting for a person (bearer token)")
async def escalations(ctx: Ctx, _: RosterActor, role: str | None = None, limit: int = 100) -> Response:
    items = await views.escalation_list(ctx.pool, role, max(1, min(limit, 1000)))
    return json_response({"escalations": items})


@router.get("/v1/refunds/clawbacks", summary="Clawbacks flagged for a person (bearer token)")
async def clawbacks(ctx: Ctx, _: RosterActor, customer: str | None = None, limit: int = 100) -> Response:
    items = await views.clawback_list(ctx.pool, customer_key=customer, limit=max(1, min(limit, 1000)))
    return json_response({"clawbacks": items})


@router.get("/v1/refunds/{return_id}", summary="A return's ledger, decisions and escalations")
async def ledger(ctx: Ctx, _: RosterActor, return_id: UUID) -> Response:
    found = await views.ledger_of(ctx.pool, return_id)
    if found is None:
        raise HttpProblem(404, f"unknown return {str(return_id)!r}")
    return json_response(found)
