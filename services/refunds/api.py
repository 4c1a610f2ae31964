"""The refunds HTTP API: people's decisions (bearer token of a roster member), the escalation and
clawback queues, and a return's ledger. Parse, call a handler or a view, map the outcome to HTTP."""

from __future__ import annotations

import functools
import uuid
import zoneinfo
from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from contracts.events import Role
from returnflow.http import (
    BearerToken,
    BodyTooLarge,
    HttpProblem,
    Reader,
    context_dependency,
    correlation_id,
    json_body,
    json_request,
    json_response,
    problem_json,
    read_body,
    reader,
    unauthorized,
)
from returnflow.openapi import problems
from returnflow.paging import decode_cursor
from services.refunds import handlers, repository, rules, views
from services.refunds.gateway import RefundWebhooks, WebhookRefused
from services.refunds.handlers import RefundsContext
from services.refunds.responses import (
    ClawbackResolved,
    Clawbacks,
    DecisionOutcome,
    Escalations,
    FailureResolved,
    Failures,
    Ledger,
    Team,
    WhoAmI,
)
from services.refunds.rules import Actor, CommandIn, Outcome, Resolution

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
    action: Literal["approve", "reject", "grant_free_refund", "convert_to_refund"]
    amount: StrictInt | None = Field(
        default=None,
        ge=1,
        description="minor units; required for grant_free_refund, optional for approve and convert_to_refund "
        "(default: the value of the exchange's goods)",
    )
    note: str | None = Field(default=None, max_length=2000)
    escalation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="approve / reject this open escalation (GET /v1/refunds/escalations lists them); left out: "
        "the oldest one the actor's authority covers, else the oldest",
    )


DECISION_EXAMPLE = {"action": "grant_free_refund", "amount": 1500, "note": "lipstick arrived broken"}


async def decision_body(request: Request) -> DecisionBody:
    """The decision, checked: size (413), content type (415), fields (422)."""
    body = await json_request(request, DecisionBody, MAX_BODY_BYTES)
    if body.action == "grant_free_refund" and body.amount is None:
        raise HttpProblem(422, "validation failed", [{"field": "amount", "message": "required for a grant"}])
    if body.action == "grant_free_refund" and body.escalation_id is not None:
        raise HttpProblem(
            422, "validation failed", [{"field": "escalation_id", "message": "only for approve or reject"}]
        )
    return body


def outcome_extras(o: Outcome) -> dict[str, Any]:
    body: dict[str, Any] = {"result": o.result}
    if o.amount is not None:
        body["amount"] = o.amount
    if o.required_role is not None:
        body["required_role"] = o.required_role.value
    if o.escalation_id is not None:
        body["escalation_id"] = o.escalation_id
    return body


def outcome_response(o: Outcome, answer: dict[str, Any]) -> Response:
    """200/202 as the outcome; a refusal as problem details with the same members (`result: refused`)."""
    if o.status < 400:
        return json_response({**answer, "message": o.message, **outcome_extras(o)}, o.status)
    fields = [{"field": o.field, "message": o.message}] if o.field else None
    return problem_json(o.status, o.message, fields, **answer, **outcome_extras(o))


@router.post(
    "/v1/refunds/{return_id}/decisions",
    summary="approve / reject / grant_free_refund / convert_to_refund (Authorization: Bearer <actor token>)",
    description="200 took effect; 202 above the actor's authority (escalated, names the role needed), or "
    "parked: the return is not known yet and the decision is applied when it arrives; 401 unknown actor; "
    "403 a reject above the actor's authority, or a named escalation waiting for a higher role; 409 nothing "
    "to decide, or the named `escalation_id` is not open on this return; 422 bad amount. approve / reject "
    "without `escalation_id` decide the oldest open escalation the actor's authority covers (else the "
    "oldest); the answer names the `escalation_id` decided. An Idempotency-Key "
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
            s403="a reject above the actor's authority, or a named escalation waiting for a higher role",
            s404="no such return id (unparsable)",
            s409="nothing to decide, or the named escalation_id is not open on this return",
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
        escalation_id=body.escalation_id,
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


async def queue_filter(
    shop: Annotated[str | None, Query(min_length=1, max_length=128, description="shop id")] = None,
    min_amount: Annotated[int | None, Query(ge=0, description="minor units")] = None,
    max_amount: Annotated[int | None, Query(ge=0, description="minor units")] = None,
    older_than: Annotated[int | None, Query(ge=0, le=10**9, description="seconds waiting, at least")] = None,
    cursor: Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page")] = None,
) -> views.QueueFilter:
    """The filters every work queue takes; a cursor that no list gave is a 422 naming `cursor`."""
    return views.QueueFilter(shop, min_amount, max_amount, older_than, decode_cursor(cursor))


QueueFilter = Annotated[views.QueueFilter, Depends(queue_filter)]
QUEUE = "oldest first, a page of `limit` with `next_cursor`, and counts over the whole filter"


@router.get(
    "/v1/refunds/escalations",
    summary="Refunds waiting for a person (reader token: ops, agent; or a roster member's)",
    description=f"Open escalations, {QUEUE}. `role`: the role needed.",
    response_model=Escalations,
    responses=problems(401, 403, 422),
)
async def escalations(
    ctx: Ctx, _: RefundsReader, q: QueueFilter, role: Role | None = None, limit: Limit = 100
) -> Response:
    return json_response(await views.escalation_queue(ctx.pool, role.value if role else None, q, limit))


@router.get(
    "/v1/refunds/failures",
    summary="Refunds the gateway declined for good, waiting for a person (reader token: ops, agent; or a roster "
    "member's)",
    description=f"Declined refunds no person has resolved yet, {QUEUE}.",
    response_model=Failures,
    responses=problems(401, 403, 422),
)
async def failures(ctx: Ctx, _: RefundsReader, q: QueueFilter, limit: Limit = 100) -> Response:
    return json_response(await views.failure_queue(ctx.pool, q, limit))


@router.get(
    "/v1/refunds/clawbacks",
    summary="Clawbacks flagged for a person (reader token: ops, agent; or a roster member's)",
    description=f"Clawbacks (`state`: open by default, resolved, all), {QUEUE}.",
    response_model=Clawbacks,
    responses=problems(401, 403, 422),
)
async def clawbacks(
    ctx: Ctx,
    _: RefundsReader,
    q: QueueFilter,
    state: Literal["open", "resolved", "all"] = "open",
    customer: Annotated[str | None, Query(max_length=256)] = None,
    limit: Limit = 100,
) -> Response:
    return json_response(await views.clawback_queue(ctx.pool, state, customer, q, limit))


# The team's numbers name every person: for the people who run the team (ops readers: the workbench, which
# shows them to supervisors and above), not for each agent's own token.
TeamReader = Annotated[Reader, Depends(reader("ops"))]


@functools.cache
def known_time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def unknown_time_zone(tz: str) -> HttpProblem:
    return HttpProblem(422, "validation failed", [{"field": "tz", "message": f"unknown time zone {tz!r}"}])


async def time_zone(
    tz: Annotated[str, Query(max_length=64, description="IANA time zone the days are counted in")] = "UTC",
) -> str:
    if tz not in known_time_zones():  # IANA names only (no paths, no POSIX rules)
        raise unknown_time_zone(tz)
    return tz


@router.get(
    "/v1/refunds/team",
    summary="The team's numbers per person and day (reader token: ops)",
    description="Per person and day (`from`..`to` included, at most "
    f"{rules.TEAM_MAX_DAYS} days, days counted in `tz`): decisions that took effect, escalations raised "
    "and decided with the median and p90 seconds from raised to decided, free refunds granted (count, amount "
    "per currency, share of authority used), clawbacks flagged on refunds they decided; the same per person "
    "over the range and for the team; the open escalations' ages now. 422 names `from`, `to` or `tz`.",
    response_model=Team,
    responses=problems(401, 403, 422),
)
async def team(
    ctx: Ctx,
    _: TeamReader,
    start: Annotated[date, Query(alias="from", description="first day, YYYY-MM-DD")],
    end: Annotated[date, Query(alias="to", description="last day (included), YYYY-MM-DD")],
    tz: Annotated[str, Depends(time_zone)],
    shop: Annotated[str | None, Query(min_length=1, max_length=128, description="shop id")] = None,
) -> Response:
    refused = rules.team_range(start, end)
    if refused is not None:
        raise HttpProblem(422, "validation failed", [{"field": "to", "message": refused}])

    def limit_of(role: str | None, currency: str) -> int | None:
        return ctx.policy.authority.limit(Role(role), currency) if role in Role.__members__ and role else 0

    try:
        numbers = await views.team_numbers(ctx.pool, start, end, tz, shop, limit_of)
    except asyncpg.InvalidParameterValueError:  # a zone Python's tzdata knows and PostgreSQL's does not
        raise unknown_time_zone(tz) from None
    return json_response(numbers)


MAX_RESOLUTION_BYTES = 16 * 1024  # an action and a note of at most 2,000 characters


class ClawbackResolutionBody(BaseModel):
    """Body of POST /v1/refunds/clawbacks/{clawback_id}/resolution. The actor comes from the bearer token."""

    model_config = ConfigDict(extra="forbid")
    resolution: Literal["waived", "recovered_off_platform", "written_off"]
    note: str | None = Field(default=None, max_length=2000)


class FailureResolutionBody(BaseModel):
    """Body of POST /v1/refunds/{return_id}/failures/resolution. The actor comes from the bearer token."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["retry", "settled_offline", "close"]
    note: str | None = Field(default=None, max_length=2000)
    refund_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the declined refund (GET /v1/refunds/failures); left out: the return's oldest unresolved one",
    )


def resolution_response(decided: Resolution, answer: dict[str, Any]) -> Response:
    if decided.status < 400:
        return json_response({"result": decided.result, "message": decided.message, **answer}, decided.status)
    fields = [{"field": decided.field, "message": decided.message}] if decided.field else None
    return problem_json(decided.status, decided.message, fields, result="refused")


RESOLUTION_ERRORS = problems(
    401,
    403,
    404,
    409,
    413,
    415,
    422,
    s403="below a supervisor",
    s409="nothing to resolve, already resolved another way, or (retry) not enough left refundable",
)


@router.post(
    "/v1/refunds/clawbacks/{clawback_id}/resolution",
    summary="Close a clawback: waived / recovered_off_platform / written_off (Authorization: Bearer <supervisor "
    "or above>)",
    description="200 resolved (`result: resolved`), or resolved already the same way (`already_resolved`: a repeat "
    "is harmless); 403 below a supervisor; 404 unknown clawback; 409 already resolved another way. Publishes "
    "refund.clawback_resolved.",
    response_model=ClawbackResolved,
    responses={**RESOLUTION_ERRORS, 404: problems(404, s404="unknown clawback")[404]},
    openapi_extra=json_body(ClawbackResolutionBody, {"resolution": "waived", "note": "long-standing customer"}),
)
async def resolve_clawback(ctx: Ctx, actor: RosterActor, clawback_id: str, request: Request) -> Response:
    body = await json_request(request, ClawbackResolutionBody, MAX_RESOLUTION_BYTES)
    decided, answer = await handlers.resolve_clawback(
        ctx, clawback_id, actor, body.resolution, body.note, correlation_id(request)
    )
    return resolution_response(decided, answer)


@router.post(
    "/v1/refunds/{return_id}/failures/resolution",
    summary="Resolve a declined refund: retry / settled_offline / close (Authorization: Bearer <supervisor or above>)",
    description="200 resolved (`retry`: a new ledger entry is paid, `retry_refund_id`), or resolved already the "
    "same way (`already_resolved`: a repeat is harmless); 403 below a supervisor; 404 unknown return; 409 no "
    "declined refund to resolve, already resolved another way, or a retry above what remains refundable. "
    "Publishes refund.failure_resolved.",
    response_model=FailureResolved,
    responses={**RESOLUTION_ERRORS, 404: problems(404, s404="unknown return")[404]},
    openapi_extra=json_body(FailureResolutionBody, {"action": "retry", "note": "customer updated their card"}),
)
async def resolve_failure(ctx: Ctx, actor: RosterActor, return_id: UUID, request: Request) -> Response:
    body = await json_request(request, FailureResolutionBody, MAX_RESOLUTION_BYTES)
    resolved = await handlers.resolve_failure(
        ctx, return_id, body.refund_id, actor, body.action, body.note, correlation_id(request)
    )
    if resolved is None:
        raise HttpProblem(404, f"unknown return {str(return_id)!r}")
    decided, answer = resolved
    return resolution_response(decided, {"return_id": str(return_id), **answer})


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


WEBHOOK_MAX_BYTES = 256 * 1024  # a Stripe event with one refund object is a few kilobytes


STRIPE_WEBHOOK_DOC = (
    "A refund Stripe settled after answering `pending` is recorded: succeeded -> issued, failed or "
    "canceled -> failed (its amount released). Other events and still-pending refunds are acknowledged and "
    "ignored; a repeated event changes nothing. 401 a missing, stale or wrong Stripe-Signature (nothing "
    "changes); 404 when the refunds provider is not stripe; 422 not a Stripe event."
)


@router.post(
    "/v1/webhooks/stripe/refunds",
    summary="Stripe's refund.updated / charge.refund.updated events (Stripe-Signature, the endpoint's whsec_ secret)",
    description=STRIPE_WEBHOOK_DOC,
    responses=problems(401, 404, 413, 422, 503),
)
async def stripe_webhook(ctx: Ctx, request: Request) -> Response:
    if ctx.settings.gateway != "stripe":
        raise HttpProblem(
            404, f"the refunds provider is {ctx.settings.gateway!r}, not stripe (RETURNFLOW_REFUNDS_GATEWAY)"
        )
    return await settle_stripe_webhook(ctx, request, ctx.gateways.default)


@router.post(
    "/v1/webhooks/stripe/refunds/{shop_id}",
    summary="A shop's own Stripe account's refund events (its refunds.stripe.webhook_secret in the shops file)",
    description=STRIPE_WEBHOOK_DOC + " Here: 404 when the shop's provider (shops file) is not stripe.",
    responses=problems(401, 404, 413, 422, 503),
)
async def shop_stripe_webhook(ctx: Ctx, request: Request, shop_id: str) -> Response:
    provider = ctx.gateways.provider_of(shop_id)
    if ctx.gateways.shops.get(shop_id) is None or provider != "stripe":
        raise HttpProblem(404, f"shop {shop_id!r} has no Stripe provider of its own in the shops file")
    return await settle_stripe_webhook(ctx, request, ctx.gateways.for_shop(shop_id))


async def settle_stripe_webhook(ctx: Ctx, request: Request, hooks: object) -> Response:
    if not isinstance(hooks, RefundWebhooks):
        raise HttpProblem(404, "the refunds provider takes no Stripe webhooks")
    try:
        raw = await read_body(request, WEBHOOK_MAX_BYTES)
    except BodyTooLarge:
        raise HttpProblem(413, f"body larger than {WEBHOOK_MAX_BYTES} bytes") from None
    try:
        settled = hooks.read_webhook(request.headers, raw)
    except WebhookRefused as exc:
        fields = [{"field": exc.field, "message": exc.message}] if exc.field else None
        raise HttpProblem(exc.status, exc.message, fields) from None
    recorded = await handlers.settle_from_webhook(ctx, settled)
    return json_response({"received": True, "settled": recorded})
