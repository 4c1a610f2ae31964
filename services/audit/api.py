"""HTTP API of the audit service: returns-team checks, discrepancies (list, detail, resolution),
reconciliation, a return's sides, the log and its verification. Parse, call a handler or a view, map
the outcome to HTTP; people are known by their bearer token (`AuditSettings.tokens`)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
)

from contracts.events import Movement
from returnflow.db import snapshot
from returnflow.http import (
    BearerToken,
    HttpProblem,
    Reader,
    context_dependency,
    correlation_id,
    error,
    find_by_token,
    json_body,
    json_request,
    json_response,
    problem_json,
    reader,
    unauthorized,
)
from returnflow.openapi import problems
from services.audit import chain, handlers, rules, views
from services.audit.handlers import AuditContext
from services.audit.responses import (
    AuditWhoAmI,
    CheckRecorded,
    Discrepancies,
    Discrepancy,
    LogPage,
    Reconciliation,
    Resolved,
    ReturnSides,
    Verification,
)
from services.audit.rules import REASONS, Incoming, Refusal, Side

router = APIRouter()
Ctx = Annotated[AuditContext, Depends(context_dependency(AuditContext))]


# -- request bodies --------------------------------------------------------------------------------
class CheckRequest(BaseModel):
    """Body of POST /v1/inventory/checks: the returns team's side of a movement."""

    model_config = ConfigDict(extra="ignore")
    check_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[\w.:\-]+$",
        description="idempotency key: the same check_id again is the same check (a new one is generated if absent)",
    )
    return_id: UUID
    sku: str = Field(min_length=1, max_length=64)
    movement: Movement
    quantity: StrictInt = Field(ge=0, le=1_000_000)
    checked_at: AwareDatetime | None = Field(default=None, description="when the person checked; default now")
    checked_by: str | None = Field(
        default=None, max_length=128, description="optional; must be the person the bearer token belongs to"
    )
    note: str | None = Field(default=None, max_length=2000)


class ResolutionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    note: str = Field(min_length=1, max_length=4000)


CHECK_EXAMPLE = {
    "check_id": "chk-1",
    "return_id": "0b9e7f3c-59a4-4a0e-9a52-3f1f6f0c2d11",
    "sku": "SKU-1",
    "movement": "restock",
    "quantity": 1,
    "note": "counted at the returns desk",
}
RESOLUTION_EXAMPLE = {"note": "recounted: the warehouse scanned one item twice"}


RESOLUTION_BODY_LIMIT = 64 * 1024


# -- who is asking ---------------------------------------------------------------------------------
async def returns_team_person(ctx: Ctx, token: BearerToken) -> str:
    """The returns-team person a bearer token belongs to; 401 otherwise."""
    person = find_by_token(token, ctx.people_by_token)
    if person is None:
        raise unauthorized("a returns-team bearer token is required (Authorization: Bearer <token>)")
    return person


Person = Annotated[str, Depends(returns_team_person)]


async def people_reader(ctx: AuditContext, token: str) -> Reader | None:
    """The returns-team people (AuditSettings.tokens) read the audit with the role `auditor`."""
    person = find_by_token(token, ctx.people_by_token)
    return Reader(person, "auditor") if person is not None else None


# Every audit read: ops and auditors.
AuditReader = Annotated[Reader, Depends(reader("ops", "auditor"))]
READ_ERRORS = problems(401, 403)
CSV = {"text/csv": {"schema": {"type": "string"}, "example": "id,reason,return_id\n"}}


# -- query parameters ------------------------------------------------------------------------------
def _iso_8601(v: Any) -> Any:
    """An ISO 8601 time, as the API documents it (pydantic alone would take `?since=6` as 6 s past 1970)."""
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("an ISO 8601 date-time, e.g. 2026-11-11T00:00:00+08:00") from None
    return v


def _utc_if_naive(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


Instant = Annotated[datetime | None, BeforeValidator(_iso_8601), AfterValidator(_utc_if_naive)]
Limit = Annotated[int, Field(ge=1, le=100_000)] | None


def bad_query(field: str, message: str) -> HttpProblem:
    return HttpProblem(422, "invalid query parameter", [{"field": field, "message": message}])


async def wants_csv(
    request: Request,
    fmt: Annotated[Literal["csv", "json"] | None, Query(alias="format", description="csv or json")] = None,
) -> bool:
    """CSV when `?format=csv`, or when the client accepts text/csv and names no format."""
    if fmt is not None:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == "text/csv" for part in accept.split(","))


CsvWanted = Annotated[bool, Depends(wants_csv)]


async def reasons_filter(
    reason: Annotated[
        list[str] | None, Query(description=f"one of {', '.join(REASONS)}; repeat or comma-separate")
    ] = None,
) -> tuple[str, ...]:
    reasons = tuple(r for v in reason or [] for r in v.split(",") if r)
    unknown = [r for r in reasons if r not in REASONS]
    if unknown:
        raise bad_query("reason", f"unknown reason {unknown[0]!r}; one of {', '.join(REASONS)}")
    return reasons


async def discrepancy_filter(
    reasons: Annotated[tuple[str, ...], Depends(reasons_filter)],
    status: Annotated[Literal["open", "resolved"] | None, Query()] = None,
    since: Annotated[Instant, Query(description="opened at or after (ISO 8601)")] = None,
    until: Annotated[Instant, Query(description="opened before (ISO 8601)")] = None,
    return_id: Annotated[UUID | None, Query()] = None,
    sku: Annotated[str | None, Query()] = None,
) -> views.DiscrepancyFilter:
    return views.DiscrepancyFilter(reasons, status, since, until, return_id, sku)


def csv_response(rows: list[dict[str, Any]], columns: list[str], filename: str) -> Response:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r[c] for c in columns])
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


# -- checks ----------------------------------------------------------------------------------------
def check_side(body: CheckRequest, person: str, now: datetime) -> Side:
    """The returns-team side a posted check attests (422 when it is dated in the future)."""
    checked_at = body.checked_at or now
    if rules.in_the_future(checked_at, now):
        raise HttpProblem(422, "validation failed", [{"field": "checked_at", "message": "is in the future"}])
    return Side(
        source="returns_team",
        side_id=body.check_id or uuid.uuid4().hex,
        return_id=body.return_id,
        sku=body.sku,
        movement=body.movement,
        quantity=body.quantity,
        person=person,
        attested_at=checked_at,
        received_at=now,
    )


@router.post(
    "/v1/inventory/checks",
    status_code=201,
    tags=["checks"],
    summary="A returns-team check of a stock movement (Authorization: Bearer <person's token>)",
    response_model=CheckRecorded,
    responses={
        201: {"model": CheckRecorded, "description": "recorded"},
        200: {"model": CheckRecorded, "description": "the same check again"},
        **problems(
            401,
            403,
            409,
            413,
            415,
            422,
            s403="checked_by is not the token's person",
            s409="this check_id was recorded with different content (the recorded one is in `recorded`)",
        ),
    },
    openapi_extra=json_body(CheckRequest, CHECK_EXAMPLE),
)
async def post_check(request: Request, ctx: Ctx, person: Person) -> Response:
    body = await json_request(request, CheckRequest, ctx.max_body_bytes)
    if body.checked_by is not None and body.checked_by != person:
        raise HttpProblem(
            403,
            "checked_by must be the person the token belongs to",
            [{"field": "checked_by", "message": f"this token belongs to {person}"}],
        )
    side = check_side(body, person, datetime.now(UTC))
    result = await handlers.submit_check(ctx, Incoming(side, "http", correlation_id(request), body.note))
    if result.conflict:
        message = f"check {side.side_id!r} was already recorded with different content"
        return error(409, message, recorded=views.check_view(result.state, True))
    return json_response(views.check_view(result.state, not result.created), 201 if result.created else 200)


@router.get(
    "/v1/audit/whoami",
    tags=["checks"],
    summary="The returns-team person a bearer token belongs to (what the workbench's sign-in checks)",
    response_model=AuditWhoAmI,
    responses=problems(401),
)
async def whoami(person: Person) -> Response:
    return json_response({"person_id": person, "role": "returns_team"})


# -- discrepancies ---------------------------------------------------------------------------------
@router.get(
    "/v1/audit/discrepancies",
    tags=["audit"],
    summary="Discrepancies (JSON, or CSV with ?format=csv; reader token: ops, auditor)",
    response_model=Discrepancies,
    responses={200: {"content": CSV}, **READ_ERRORS},
)
async def list_discrepancies(
    ctx: Ctx,
    _: AuditReader,
    found: Annotated[views.DiscrepancyFilter, Depends(discrepancy_filter)],
    as_csv: CsvWanted,
    limit: Annotated[Limit, Query(description="default 100 (10000 for CSV); at most 1000 (100000 for CSV)")] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    if limit is None:
        limit = 10_000 if as_csv else 100
    elif not as_csv and limit > 1000:
        raise bad_query("limit", "must be an integer from 1 to 1000")
    rows = await views.list_discrepancies(ctx.pool, found, limit, offset)
    if as_csv:
        return csv_response(views.discrepancies_csv_rows(rows), views.DISCREPANCY_COLUMNS, "discrepancies.csv")
    return json_response({"discrepancies": rows, "limit": limit, "offset": offset})


@router.get(
    "/v1/audit/discrepancies/{discrepancy_id}",
    tags=["audit"],
    summary="One discrepancy and its sides (reader token: ops, auditor)",
    response_model=Discrepancy,
    responses=problems(401, 403, 404),
)
async def get_discrepancy(ctx: Ctx, _: AuditReader, discrepancy_id: str) -> Response:
    found = await views.get_discrepancy(ctx.pool, discrepancy_id)
    if found is None:
        raise HttpProblem(404, f"unknown discrepancy {discrepancy_id!r}")
    return json_response(found)


REFUSAL_STATUS: dict[str, int] = {"unknown": 404, "already_resolved": 409, "attested_a_side": 403}


@router.post(
    "/v1/audit/discrepancies/{discrepancy_id}/resolution",
    tags=["audit"],
    summary="Resolve a discrepancy with a note (recorded in the log; Authorization: Bearer <token>)",
    response_model=Resolved,
    responses=problems(
        401,
        403,
        404,
        409,
        413,
        415,
        422,
        s403="the person attested a side of it",
        s404="unknown discrepancy",
        s409="already resolved",
    ),
    openapi_extra=json_body(ResolutionRequest, RESOLUTION_EXAMPLE),
)
async def resolve(request: Request, ctx: Ctx, person: Person, discrepancy_id: str) -> Response:
    body = await json_request(request, ResolutionRequest, RESOLUTION_BODY_LIMIT)
    resolved = await handlers.resolve(ctx, discrepancy_id, person, body.note, correlation_id(request))
    if isinstance(resolved, Refusal):
        raise HttpProblem(REFUSAL_STATUS[resolved.why], resolved.message)
    return json_response(resolved)


# -- reconciliation, a return, the log -------------------------------------------------------------
@router.get(
    "/v1/audit/reconciliation",
    tags=["audit"],
    summary="Per SKU: requested, received, attested, verified by movement, open discrepancies (CSV too; reader "
    "token: ops, auditor)",
    response_model=Reconciliation,
    responses={200: {"content": CSV}, **READ_ERRORS},
)
async def reconciliation(
    ctx: Ctx,
    _: AuditReader,
    as_csv: CsvWanted,
    sku: Annotated[str | None, Query()] = None,
    return_id: Annotated[UUID | None, Query()] = None,
) -> Response:
    rows = await views.reconciliation(ctx.pool, sku, return_id)
    if as_csv:
        return csv_response(*views.reconciliation_csv(rows), "reconciliation.csv")
    return json_response({"skus": rows})


@router.get(
    "/v1/audit/returns/{return_id}",
    tags=["audit"],
    summary="Sides, movements and discrepancies of a return (reader token: ops, auditor)",
    response_model=ReturnSides,
    responses=READ_ERRORS,
)
async def return_view(ctx: Ctx, _: AuditReader, return_id: UUID) -> Response:
    async with snapshot(ctx.pool) as db:  # sides, movements and discrepancies as of one moment
        return json_response(await views.return_view(db, return_id))


@router.get(
    "/v1/audit/log",
    tags=["audit"],
    summary="Log entries in sequence order (?after=<seq>&limit=; reader token: ops, auditor)",
    response_model=LogPage,
    responses=READ_ERRORS,
)
async def get_log(
    ctx: Ctx,
    _: AuditReader,
    after: Annotated[Annotated[int, Field(ge=0, le=2**62)] | None, Query()] = None,
    limit: Annotated[Annotated[int, Field(ge=1, le=1000)] | None, Query(description="default 100")] = None,
) -> Response:
    return json_response(await views.log_page(ctx.pool, after or 0, limit or 100))


@router.get(
    "/v1/audit/verify",
    tags=["audit"],
    summary="Recompute the hash chain (200 when intact, 409 naming the first entry that does not match; reader "
    "token: ops, auditor)",
    response_model=Verification,
    responses={**READ_ERRORS, **problems(409, s409="the chain is broken: first_bad_seq and problem say where")},
)
async def verify(
    ctx: Ctx,
    _: AuditReader,
    anchor: Annotated[list[str] | None, Query(description="<seq>:<hash> recorded elsewhere (repeatable)")] = None,
) -> Response:
    try:
        anchors = chain.parse_anchors(anchor or [])
    except ValueError as exc:
        raise bad_query("anchor", str(exc)) from None
    result = await views.verify_log(ctx.pool, anchors)
    if not result.ok:
        return problem_json(409, result.problem or "the audit log's chain is broken", **result.as_dict())
    return json_response(result.as_dict())
