"""The refunds HTTP API: people's decisions (bearer token of a roster member), the escalation and
clawback queues, and a return's ledger. Parse, call a handler or a view, map the outcome to HTTP."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from contracts.events import Role
from returnflow.http import (
    BearerToken,
    HttpProblem,
    Reader,
    context_dependency,
    correlation_id,
    json_body,
    json_request,
    json_response,
    problem_json,
    reader,
    unauthorized,
)
from returnflow.openapi import problems
from services.refunds import handlers, repository, views
from services.refunds.handlers import RefundsContext
from services.refunds.responses import Clawbacks, DecisionOutcome, Escalations, Ledger, WhoAmI
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


async def roster_reader(ctx: RefundsContext, token: str) -> Reader | None:
    """Every roster member (agent, supervisor, manager, owner) reads the refunds with the role `agent`
    (ServiceSpec.readers)."""
    actor = await repository.actor_by_token(ctx.pool, token)
    return Reader(actor.actor_id, "agent") if actor is not None else None


# The ledger and the queues: ops, and the people who decide refunds (the roster, or an agent's read token).
RefundsReader = Annotated[Reader, Depends(reader("ops", "agent"))]
READ_ERRORS = problems(401, 403)


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


def outcome_extras(o: Outcome) -> dict[str, Any]:
    body: dict[str, Any] = {"result": o.result}
    if o.amount is not None:
        body["amount"] = o.amount
    if o.required_role is not None:
        body["required_role"] = o.required_role.value
    return body


def outcome_response(o: Outcome, answer: dict[str, Any]) -> Response:
    """200/202 as the outcome; a refusal as problem details with the same members (`result: refused`)."""
    if o.status < 400:
        return json_response({**answer, "message": o.message, **outcome_extras(o)}, o.status)
    fields = [{"field": o.field, "message": o.message}] if o.field else None
    return problem_json(o.status, o.message, fields, **answer, **outcome_extras(o))


@router.post(
    "/v1/refunds/{return_id}/decisions",
    summary="approve / reject / grant_free_refund (Authorization: Bearer <actor token>)",
    description="200 took effect; 202 above the actor's authority (escalated, names the role needed), or "
    "parked: the return is not known yet and the decision is applied when it arrives; 401 unknown actor; "
    "403 a reject above the actor's authority; 409 nothing to decide; 422 bad amount. An Idempotency-Key "
    "header makes a retry (also a concurrent one) return the first answer; the key used again for another "
    "request is a 422 naming what differs.",
    response_model=DecisionOutcome,
    responses={
        202: {
            "model": DecisionOutcome,
            "description": "above the actor's authority: escalated (names the role); or parked till the return arrives",
        },
        **problems(
            401,
            403,
            404,
            409,
            413,
            415,
            422,
            s403="a reject above the actor's authority",
            s404="no such return id (unparsable)",
            s409="nothing to decide",
        ),
    },
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
    return outcome_response(outcome, answer)


@router.get(
    "/v1/refunds/whoami",
    summary="The roster member a bearer token belongs to (what `returnflow login` checks)",
    description="200 with actor_id and role; 401 for a token the roster does not hold.",
    response_model=WhoAmI,
    responses=problems(401),
)
async def whoami(ctx: Ctx, actor: RosterActor) -> Response:
    # `limits`: the actor's cumulative authority per return, by currency ("*" any other; null unlimited),
    # so a screen can show it where they decide (the workbench).
    limits = {cur: ctx.policy.authority.limit(actor.role, cur) for cur in ctx.policy.authority.limits}
    return json_response({"actor_id": actor.actor_id, "role": actor.role.value, "limits": limits})


Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get(
    "/v1/refunds/escalations",
    summary="Refunds waiting for a person (reader token: ops, agent; or a roster member's)",
    response_model=Escalations,
    responses=READ_ERRORS,
)
async def escalations(ctx: Ctx, _: RefundsReader, role: Role | None = None, limit: Limit = 100) -> Response:
    items = await views.escalation_list(ctx.pool, role.value if role else None, limit)
    return json_response({"escalations": items})


@router.get(
    "/v1/refunds/clawbacks",
    summary="Clawbacks flagged for a person (reader token: ops, agent; or a roster member's)",
    response_model=Clawbacks,
    responses=READ_ERRORS,
)
async def clawbacks(ctx: Ctx, _: RefundsReader, customer: str | None = None, limit: Limit = 100) -> Response:
    items = await views.clawback_list(ctx.pool, customer_key=customer, limit=limit)
    return json_response({"clawbacks": items})


@router.get(
    "/v1/refunds/{return_id}",
    summary="A return's ledger, decisions and escalations (reader token: ops, agent; or a roster member's)",
    response_model=Ledger,
    responses=problems(401, 403, 404),
)
async def ledger(ctx: Ctx, _: RefundsReader, return_id: UUID) -> Response:
    found = await views.ledger_of(ctx.pool, return_id)
    if found is None:
        raise HttpProblem(404, f"unknown return {str(return_id)!r}")
    return json_response(found)
