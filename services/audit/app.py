"""audit service wiring: the dual-check inventory log.

In: warehouse attestations (`inventory.attestations`), returns-team checks (`inventory.checks`,
`POST /v1/inventory/checks`), `returns.requested` (which returns exist) and `returns.received`
(what came back, for reconciliation). Out: `inventory.verified`, `inventory.discrepancies`, an
append-only hash-chained log, discrepancy and reconciliation APIs. A background sweeper closes
sides left alone past the deadline; its state is in PostgreSQL, so it resumes after a restart.
"""

from __future__ import annotations

import asyncio
import csv
import hmac
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import Counter

from contracts.events import InventoryAttested, InventoryCheck, ReturnReceived, ReturnRequested
from returnflow.batching import GroupCommitter
from returnflow.consumer import Delivery, Handler
from returnflow.db import Conn
from returnflow.http import (
    HttpProblem,
    correlation_id,
    error,
    json_request,
    json_response,
)
from returnflow.logging import get_logger
from returnflow.service import ConsumerSpec, Runtime, ServiceSpec, create_app
from returnflow.settings import Settings
from services.audit import storage
from services.audit.domain import (
    REASONS,
    CheckRequest,
    Discrepancy,
    Outcome,
    Policy,
    ResolutionRequest,
    Side,
    Verified,
)

log = get_logger("services.audit")

CONSUMED_TOPICS = ["inventory.attestations", "inventory.checks", "returns.requested", "returns.received"]
OUTCOMES = Counter(
    "returnflow_audit_outcomes_total",
    "Dual-check outcomes recorded in the audit log (verified, discrepancy by reason, attached)",
    ["outcome", "reason"],
)
MAX_FUTURE_SKEW = timedelta(minutes=5)


def policy_of(settings: Settings) -> Policy:
    return Policy(
        deadline=timedelta(seconds=settings.audit_check_deadline_s),
        settle=timedelta(seconds=settings.audit_settle_s),
        unknown_grace=timedelta(seconds=settings.audit_unknown_return_grace_s),
    )


def _count(outcomes: Sequence[Outcome]) -> None:
    for o in outcomes:
        if isinstance(o, Verified):
            OUTCOMES.labels("verified", "").inc()
        elif isinstance(o, Discrepancy):
            OUTCOMES.labels("discrepancy", o.reason).inc()
        else:
            OUTCOMES.labels("attached", o.reason).inc()


# -- Kafka -----------------------------------------------------------------------------------------
def inventory_handler(rt: Runtime) -> Handler:
    policy = policy_of(rt.settings)

    async def handle(conn: Conn, batch: list[Delivery]) -> None:
        incoming: list[storage.Incoming] = []
        returns: list[ReturnRequested] = []
        receipts: list[ReturnReceived] = []
        for d in batch:
            e = d.event
            if isinstance(e, InventoryAttested):
                incoming.append(storage.Incoming(storage.side_from_attestation(e), "kafka", e.correlation_id))
            elif isinstance(e, InventoryCheck):
                incoming.append(storage.Incoming(storage.side_from_check(e), "kafka", e.correlation_id))
            elif isinstance(e, ReturnRequested):
                returns.append(e)
            elif isinstance(e, ReturnReceived):
                receipts.append(e)
        _count(await storage.ingest(conn, policy, incoming, returns, receipts))

    return handle


# -- the deadline sweeper --------------------------------------------------------------------------
async def deadline_sweeper(rt: Runtime) -> None:
    """Close sides left alone past the deadline (and sides of unknown returns past the grace).
    Everything it needs is in PostgreSQL, so a restart loses nothing; several instances are safe
    (each round holds the log lock)."""
    policy = policy_of(rt.settings)
    limit = rt.settings.audit_sweep_batch
    while True:
        more = False
        try:
            async with rt.pool.acquire() as conn, conn.transaction():
                looked, outcomes = await storage.sweep(conn, policy, limit)
            _count(outcomes)
            if outcomes:
                log.info("deadline sweep", cases=looked, outcomes=len(outcomes))
            more = looked >= limit
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("deadline sweep failed; retrying", error=repr(exc))
        if not more:
            await asyncio.sleep(rt.settings.audit_sweep_interval_s)


# -- HTTP: returns-team checks (group-committed) ---------------------------------------------------
@dataclass(frozen=True)
class CheckItem:
    incoming: storage.Incoming


@dataclass(frozen=True)
class CheckResult:
    created: bool
    conflict: bool
    state: dict[str, Any]


def _check_flush(policy: Policy) -> Any:
    async def flush(conn: Conn, items: Sequence[CheckItem]) -> list[CheckResult]:
        await storage.lock_log(conn)
        keys = [i.incoming.side.key for i in items]
        before = await storage.side_states(conn, keys)
        _count(await storage.ingest(conn, policy, [i.incoming for i in items]))
        after = await storage.side_states(conn, keys)
        results: list[CheckResult] = []
        seen: set[str] = set()
        for i in items:
            k = i.incoming.side.key
            state = after[k]
            created = k not in before and k not in seen
            seen.add(k)
            results.append(CheckResult(created, not storage.same_content(state, i.incoming.side), state))
        return results

    return flush


async def _start_checks(rt: Runtime) -> None:
    rt.state["checks"] = GroupCommitter(
        rt.pool,
        _check_flush(policy_of(rt.settings)),
        max_size=rt.settings.audit_checks_batch_max,
        max_wait_s=0.002,
        writers=1,  # every writer takes the log lock anyway
    )


async def _stop_checks(rt: Runtime) -> None:
    await rt.state["checks"].close()


def person_for(request: Request, settings: Settings) -> str | None:
    """The returns-team person a bearer token belongs to (compared in constant time)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    given = token.strip().encode()
    found = None
    for person, secret in settings.audit_tokens.items():
        if hmac.compare_digest(secret.get_secret_value().encode(), given):
            found = person
    return found


def _unauthorized() -> Response:
    r = error(401, "a returns-team bearer token is required (Authorization: Bearer <token>)")
    r.headers["WWW-Authenticate"] = 'Bearer realm="returnflow-audit"'
    return r


def _check_view(state: dict[str, Any], duplicate: bool) -> dict[str, Any]:
    return {
        "check_id": state["side_id"],
        "side": state["key"],
        "return_id": str(state["return_id"]),
        "sku": state["sku"],
        "movement": state["movement"],
        "quantity": state["quantity"],
        "checked_by": state["person"],
        "checked_at": state["attested_at"],
        "status": state["outcome"] or "pending",
        "discrepancy_id": state["discrepancy_id"],
        "reason": state["reason"],
        "paired_with": state["partner_key"],
        "log_seq": state["log_seq"],
        "duplicate": duplicate,
    }


# -- HTTP: query helpers ---------------------------------------------------------------------------
def bad_query(field: str, message: str) -> HttpProblem:
    return HttpProblem(422, "invalid query parameter", [{"field": field, "message": message}])


def _time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_query(name, "must be an ISO 8601 time, e.g. 2026-11-22T08:00:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise bad_query(name, f"must be an integer from {lo} to {hi}")
    return int(raw)


def _uuid_param(request: Request, name: str) -> uuid.UUID | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise bad_query(name, "must be a UUID") from None


def _wants_csv(request: Request) -> bool:
    fmt = request.query_params.get("format")
    if fmt is not None:
        if fmt not in ("csv", "json"):
            raise bad_query("format", "must be csv or json")
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == "text/csv" for part in accept.split(","))


def _csv_response(rows: list[dict[str, Any]], columns: list[str], filename: str) -> Response:
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


DISCREPANCY_COLUMNS = [
    "id",
    "reason",
    "status",
    "return_id",
    "sku",
    "movement",
    "details",
    "sides",
    "opened_at",
    "resolved_at",
    "resolved_by",
    "resolution_note",
    "log_seq",
    "resolution_seq",
]


def _parse_anchors(values: list[str]) -> dict[int, str]:
    anchors: dict[int, str] = {}
    for v in values:
        seq, sep, h = v.partition(":")
        if not sep or not seq.isdigit() or len(h) != 64:
            raise bad_query("anchor", "must look like <seq>:<64 hex hash>")
        anchors[int(seq)] = h.lower()
    return anchors


def routes(app: FastAPI, rt: Runtime) -> None:
    settings = rt.settings

    @app.post(
        "/v1/inventory/checks",
        status_code=201,
        tags=["checks"],
        summary="A returns-team check of a stock movement (Authorization: Bearer <person's token>)",
    )
    async def post_check(request: Request) -> Response:
        person = person_for(request, settings)
        if person is None:
            return _unauthorized()
        body = await json_request(request, CheckRequest, settings.webhook_max_body_bytes)
        if body.checked_by is not None and body.checked_by != person:
            return error(
                403,
                "checked_by must be the person the token belongs to",
                fields=[{"field": "checked_by", "message": f"this token belongs to {person}"}],
            )
        now = datetime.now(UTC)
        checked_at = body.checked_at or now
        if checked_at > now + MAX_FUTURE_SKEW:
            return error(422, "validation failed", fields=[{"field": "checked_at", "message": "is in the future"}])
        side = Side(
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
        result: CheckResult = await rt.state["checks"].submit(
            CheckItem(storage.Incoming(side, "http", correlation_id(request), body.note))
        )
        if result.conflict:
            return error(
                409,
                f"check {side.side_id!r} was already recorded with different content",
                recorded=_check_view(result.state, True),
            )
        return json_response(_check_view(result.state, not result.created), 201 if result.created else 200)

    @app.get("/v1/audit/discrepancies", tags=["audit"], summary="Discrepancies (JSON, or CSV with ?format=csv)")
    async def list_discrepancies(request: Request) -> Response:
        q = request.query_params
        reasons = tuple(r for v in q.getlist("reason") for r in v.split(",") if r)
        bad = [r for r in reasons if r not in REASONS]
        if bad:
            raise bad_query("reason", f"unknown reason {bad[0]!r}; one of {', '.join(REASONS)}")
        status = q.get("status") or None
        if status not in (None, "open", "resolved"):
            raise bad_query("status", "must be open or resolved")
        as_csv = _wants_csv(request)
        f = storage.DiscrepancyFilter(
            reasons=reasons,
            status=status,
            since=_time_param(request, "since"),
            until=_time_param(request, "until"),
            return_id=_uuid_param(request, "return_id"),
            sku=q.get("sku") or None,
        )
        limit = _int_param(request, "limit", 10_000 if as_csv else 100, 1, 100_000 if as_csv else 1000)
        offset = _int_param(request, "offset", 0, 0, 10**9)
        rows = await storage.list_discrepancies(rt.pool, f, limit, offset)
        if as_csv:
            for r in rows:
                r["sides"] = " ".join(r["sides"])
            return _csv_response(rows, DISCREPANCY_COLUMNS, "discrepancies.csv")
        return json_response({"discrepancies": rows, "limit": limit, "offset": offset})

    @app.get("/v1/audit/discrepancies/{discrepancy_id}", tags=["audit"], summary="One discrepancy and its sides")
    async def get_discrepancy(discrepancy_id: str) -> Response:
        found = await storage.get_discrepancy(rt.pool, discrepancy_id)
        if found is None:
            return error(404, f"unknown discrepancy {discrepancy_id!r}")
        return json_response(found)

    @app.post(
        "/v1/audit/discrepancies/{discrepancy_id}/resolution",
        tags=["audit"],
        summary="Resolve a discrepancy with a note (recorded in the log; Authorization: Bearer <token>)",
    )
    async def resolve(discrepancy_id: str, request: Request) -> Response:
        person = person_for(request, settings)
        if person is None:
            return _unauthorized()
        body = await json_request(request, ResolutionRequest, 64 * 1024)
        try:
            async with rt.pool.acquire() as conn, conn.transaction():
                resolved = await storage.resolve(conn, discrepancy_id, person, body.note, correlation_id(request))
        except storage.ResolveError as exc:
            return error(exc.status, str(exc))
        return json_response(resolved)

    @app.get(
        "/v1/audit/reconciliation",
        tags=["audit"],
        summary="Per SKU: requested, received, attested, verified by movement, open discrepancies (CSV too)",
    )
    async def reconciliation(request: Request) -> Response:
        as_csv = _wants_csv(request)
        rows = await storage.reconciliation(
            rt.pool, request.query_params.get("sku") or None, _uuid_param(request, "return_id")
        )
        if as_csv:
            flat = []
            for r in rows:
                x = {k: v for k, v in r.items() if not isinstance(v, dict)}
                for group in ("verified", "warehouse_attested", "returns_team_checked", "received_by_disposition"):
                    for k, v in r[group].items():
                        x[f"{group}_{k}"] = v
                flat.append(x)
            columns = ["sku", "requested", "received", "unaccounted", "open_discrepancies", "resolved_discrepancies"]
            columns += sorted({k for x in flat for k in x} - set(columns))
            return _csv_response(flat, columns, "reconciliation.csv")
        return json_response({"skus": rows})

    @app.get("/v1/audit/returns/{return_id}", tags=["audit"], summary="Sides, movements and discrepancies of a return")
    async def return_view(return_id: str) -> Response:
        try:
            rid = uuid.UUID(return_id)
        except ValueError:
            return error(422, "invalid return id", fields=[{"field": "return_id", "message": "must be a UUID"}])
        return json_response(await storage.return_view(rt.pool, rid))

    @app.get("/v1/audit/log", tags=["audit"], summary="Log entries in sequence order (?after=<seq>&limit=)")
    async def get_log(request: Request) -> Response:
        after = _int_param(request, "after", 0, 0, 2**62)
        limit = _int_param(request, "limit", 100, 1, 1000)
        rows = await storage.log_rows(rt.pool, after, limit)
        return json_response(
            {
                "entries": [
                    {"seq": r.seq, "prev_hash": r.prev_hash, "hash": r.hash, "content": orjson.loads(r.content)}
                    for r in rows
                ]
            }
        )

    @app.get(
        "/v1/audit/verify",
        tags=["audit"],
        summary="Recompute the hash chain (200 when intact, 409 naming the first entry that does not match)",
    )
    async def verify(request: Request) -> Response:
        anchors = _parse_anchors(request.query_params.getlist("anchor"))
        result = await storage.verify_log(rt.pool, anchors)
        return json_response(result.as_dict(), 200 if result.ok else 409)


SPEC: ServiceSpec[Any] = ServiceSpec(
    name="audit",
    folder=Path(__file__).parent,
    description=(
        "Dual-check inventory log: every stock movement of a return attested by the warehouse and by the "
        "returns team (two people, within a deadline); discrepancies for the rest; an append-only "
        "hash-chained log with `returnflow audit verify`."
    ),
    consumers=[ConsumerSpec("inventory", CONSUMED_TOPICS, inventory_handler)],
    routes=routes,
    background=[deadline_sweeper],
    on_start=[_start_checks],
    on_stop=[_stop_checks],
)


def app() -> FastAPI:
    return create_app(SPEC)
