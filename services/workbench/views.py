"""The read side of the workbench: the queue gathered from the services' queues, and one return gathered
from the five services, all read with the workbench's read token (the person's role is checked first)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from services.workbench.handlers import WorkbenchContext
from services.workbench.rules import QueueItem
from services.workbench.upstream import Answer

FETCH = 1000  # per source and page: what the services' lists answer at most


def _at(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value)
            return at if at.tzinfo else at.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def _items(answer: Answer, key: str) -> list[dict[str, Any]]:
    if not answer.ok or not isinstance(answer.body, dict):
        return []
    found = answer.body.get(key)
    return [x for x in found if isinstance(x, dict)] if isinstance(found, list) else []


async def queue_items(ctx: WorkbenchContext) -> tuple[list[QueueItem], list[str]]:
    """Every open item needing a person, and the sources that did not answer (named on the page)."""
    up, token = ctx.upstream, ctx.read_token
    esc, claw, disc, parked, fail = await asyncio.gather(
        up.get("refunds", "/v1/refunds/escalations", token, limit=FETCH),
        up.get("refunds", "/v1/refunds/clawbacks", token, limit=FETCH),
        up.get("audit", "/v1/audit/discrepancies", token, status="open", limit=FETCH),
        up.get("warehouse", "/v1/warehouse/scans/parked", token, limit=FETCH),
        up.get("refunds", "/v1/refunds/failures", token, limit=FETCH),
    )
    missing = [name for name, a in (("refunds", esc), ("audit", disc), ("warehouse", parked)) if not a.ok]
    items: list[QueueItem] = []
    for e in _items(esc, "escalations"):
        items.append(
            QueueItem(
                "escalation",
                str(e.get("escalation_id")),
                _at(e.get("created_at")),
                str(e.get("return_id")),
                e.get("required_role"),
                e.get("amount"),
                e.get("currency"),
                e.get("shop_id"),
                str(e.get("reason") or ""),
            )
        )
    for c in _items(claw, "clawbacks"):  # open ones (the list's default state)
        items.append(
            QueueItem(
                "clawback",
                str(c.get("clawback_id")),
                _at(c.get("flagged_at")),
                str(c.get("return_id")),
                None,
                c.get("amount"),
                c.get("currency"),
                c.get("shop_id"),
                str(c.get("reason") or ""),
            )
        )
    for f in _items(fail, "failures"):  # GET /v1/refunds/failures: declined refunds (when the service has it)
        items.append(
            QueueItem(
                "failure",
                str(f.get("refund_id")),
                _at(f.get("failed_at") or f.get("created_at")),
                str(f.get("return_id")),
                None,
                f.get("amount"),
                f.get("currency"),
                f.get("shop_id"),
                str(f.get("last_error") or f.get("reason") or ""),
            )
        )
    for d in _items(disc, "discrepancies"):
        items.append(
            QueueItem(
                "discrepancy",
                str(d.get("id")),
                _at(d.get("opened_at")),
                str(d.get("return_id")) if d.get("return_id") else None,
                "returns_team",
                None,
                None,
                d.get("shop_id"),
                f"{d.get('reason')} · {d.get('sku') or ''} {d.get('movement') or ''}".strip(),
            )
        )
    parked_before = datetime.now(UTC) - timedelta(seconds=ctx.settings.parked_after_s)
    for p in _items(parked, "scans"):
        at = _at(p.get("received_at"))
        if at <= parked_before:
            items.append(
                QueueItem(
                    "parked_scan",
                    str(p.get("scan_id")),
                    at,
                    None,
                    None,
                    None,
                    None,
                    None,
                    f"{p.get('carrier')} {p.get('tracking_no')} {p.get('scan_code')}",
                )
            )
    return items, missing


async def return_page(ctx: WorkbenchContext, return_id: str) -> dict[str, Any] | None:
    """One return from every service (None when the returns service does not know it)."""
    up, token = ctx.upstream, ctx.read_token
    ret, timeline, ledger, parcel, sms, audit = await asyncio.gather(
        up.get("returns", f"/v1/returns/{return_id}", token),
        up.get("returns", f"/v1/returns/{return_id}/timeline", token),
        up.get("refunds", f"/v1/refunds/{return_id}", token),
        up.get("warehouse", f"/v1/warehouse/parcels/{return_id}", token),
        up.get("notify", f"/v1/returns/{return_id}/sms", token),
        up.get("audit", f"/v1/audit/returns/{return_id}", token),
    )
    if not ret.ok:
        return None
    failures = await up.get("refunds", "/v1/refunds/failures", token, limit=FETCH)
    return {
        "failures": [f for f in _items(failures, "failures") if str(f.get("return_id")) == return_id],
        "ret": ret.body,
        "timeline": (timeline.body or {}).get("entries", []) if timeline.ok else [],
        "ledger": ledger.body if ledger.ok else None,
        "parcel": parcel.body if parcel.ok else None,
        "sms": (sms.body or {}).get("messages", []) if sms.ok else [],
        "audit": audit.body if audit.ok else None,
    }


async def search(ctx: WorkbenchContext, q: str) -> list[dict[str, Any]]:
    """Returns by order id, phone (exact) or tracking number, where the returns service can search
    (GET /v1/returns?...); each is tried, the answers merged."""
    up, token = ctx.upstream, ctx.read_token
    answers = await asyncio.gather(
        up.get("returns", "/v1/returns", token, order_id=q),
        up.get("returns", "/v1/returns", token, phone=q),
        up.get("returns", "/v1/returns", token, tracking_number=q),
    )
    seen: dict[str, dict[str, Any]] = {}
    for a in answers:
        for r in _items(a, "returns"):
            rid = str(r.get("id") or r.get("return_id"))
            seen.setdefault(rid, r)
    return list(seen.values())


async def parcel_by_tracking(ctx: WorkbenchContext, tracking: str) -> dict[str, Any] | None:
    """The expected parcel for a tracking number (GET /v1/warehouse/parcels?tracking_number=), or for a
    return id typed or scanned from the return's label."""
    try:
        return await parcel_of(ctx, str(UUID(tracking)))
    except ValueError:
        pass
    a = await ctx.upstream.get("warehouse", "/v1/warehouse/parcels", ctx.read_token, tracking_number=tracking)
    if not a.ok or not isinstance(a.body, dict):
        return None
    parcels = a.body.get("parcels")
    if isinstance(parcels, list):
        return parcels[0] if parcels else None
    return a.body if a.body.get("return_id") else None


async def parcel_of(ctx: WorkbenchContext, return_id: str) -> dict[str, Any] | None:
    a = await ctx.upstream.get("warehouse", f"/v1/warehouse/parcels/{return_id}", ctx.read_token)
    return a.body if a.ok and isinstance(a.body, dict) else None


async def check_result(ctx: WorkbenchContext, return_id: str, check_id: str) -> dict[str, Any] | None:
    """The returns-team side with this check id in the audit's view of the return (its outcome:
    pending, verified, or the discrepancy), with the warehouse's side now that the count is in."""
    a = await ctx.upstream.get("audit", f"/v1/audit/returns/{return_id}", ctx.read_token)
    if not a.ok or not isinstance(a.body, dict):
        return None
    sides = [s for s in a.body.get("sides", []) if isinstance(s, dict)]
    mine = next((s for s in sides if s.get("side_id") == check_id and s.get("source") == "returns_team"), None)
    if mine is None:
        return None
    partner = next((s for s in sides if mine.get("partner_key") and s.get("key") == mine.get("partner_key")), None)
    discrepancy = next(
        (d for d in a.body.get("discrepancies", []) if d.get("id") and d.get("id") == mine.get("discrepancy_id")),
        None,
    )
    return {"side": mine, "warehouse": partner, "discrepancy": discrepancy}
