"""The read side of the workbench: the queue gathered from the services' queues, and one return gathered
from the five services, all read with the workbench's read token (the person's role is checked first)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from services.workbench.handlers import WorkbenchContext
from services.workbench.rules import KINDS, QueueFilter, QueueItem, queue_page
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


@dataclass(frozen=True)
class Queue:
    items: list[QueueItem]
    counts: dict[str, int]  # per kind, over the whole filter (the services count)
    next_cursor: str | None
    missing: list[str]  # services that did not answer: their items are not shown
    capped: list[str] = field(default_factory=list)  # kinds whose count stops at what one list answers (FETCH)


def _escalation(e: dict[str, Any]) -> QueueItem:
    return QueueItem(
        "escalation",
        str(e.get("escalation_id")),
        _at(e.get("created_at") or e.get("raised_at")),
        str(e.get("return_id")),
        e.get("required_role"),
        e.get("amount"),
        e.get("currency"),
        e.get("shop_id"),
        str(e.get("reason") or ""),
    )


def _failure(f: dict[str, Any]) -> QueueItem:
    # resolving a declined refund takes a supervisor or above (refunds answers 403 below)
    return QueueItem(
        "failure",
        str(f.get("refund_id")),
        _at(f.get("failed_at") or f.get("created_at")),
        str(f.get("return_id")),
        "supervisor",
        f.get("amount"),
        f.get("currency"),
        f.get("shop_id"),
        str(f.get("last_error") or f.get("reason") or ""),
    )


def _clawback(c: dict[str, Any]) -> QueueItem:
    return QueueItem(
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


def _discrepancy(d: dict[str, Any]) -> QueueItem:
    return QueueItem(
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


def _parked(p: dict[str, Any]) -> QueueItem:
    return QueueItem(
        "parked_scan",
        str(p.get("scan_id")),
        _at(p.get("received_at")),
        summary=f"{p.get('carrier')} {p.get('tracking_no')} {p.get('scan_code')}",
    )


def _sms(a: dict[str, Any]) -> QueueItem:
    """An SMS not delivered, or a number opted out, on an open return (notify): someone of the team reaches
    the customer another way; it leaves the queue when the return is cancelled or the number opts in."""
    if a.get("kind") == "opted_out":
        summary = f"opted out ({a.get('detail') or ''}) · {a.get('phone_masked') or ''}"
    else:
        summary = f"not delivered: {a.get('step') or ''} ({a.get('detail') or ''}) · {a.get('phone_masked') or ''}"
    return QueueItem(
        "sms",
        str(a.get("item_id")),
        _at(a.get("at")),
        str(a.get("return_id")) if a.get("return_id") else None,
        "agent",
        None,
        None,
        a.get("shop_id"),
        summary,
    )


# The refunds service's queues filter, count and page themselves (oldest first, cursor pages): the
# workbench passes the person's filter and cursor on. kind -> (path, list key, count key, to item).
REFUNDS_QUEUES: dict[str, tuple[str, str, str, Any]] = {
    "escalation": ("/v1/refunds/escalations", "escalations", "total", _escalation),
    "failure": ("/v1/refunds/failures", "failures", "total", _failure),
    "clawback": ("/v1/refunds/clawbacks", "clawbacks", "open", _clawback),
}
LOCAL_KINDS = ("discrepancy", "parked_scan", "sms")  # lists read whole and filtered here
# a kind's fixed role needed (None: any); an SMS problem: anyone who decides can reach the customer
ROLE_OF = {"failure": "supervisor", "discrepancy": "returns_team", "sms": "agent"}


def _wanted(kind: str, f: QueueFilter) -> bool:
    if f.kind and f.kind != kind:
        return False
    if f.role is None:
        return True
    return kind == "escalation" or ROLE_OF.get(kind) == f.role


async def _refunds_queue(
    ctx: WorkbenchContext, kind: str, f: QueueFilter, cursor: str | None, limit: int
) -> tuple[list[QueueItem], int, str | None, bool]:
    path, key, count_key, to_item = REFUNDS_QUEUES[kind]
    params: dict[str, Any] = {
        "limit": limit,
        "shop": f.shop,
        "min_amount": f.min_amount,
        "older_than": int(f.min_age_s) if f.min_age_s is not None else None,
        "cursor": cursor,
        "role": f.role if kind == "escalation" else None,
    }
    a = await ctx.upstream.get("refunds", path, ctx.read_token, **params)
    counts = a.body.get("counts", {}) if a.ok and isinstance(a.body, dict) else {}
    nxt = a.body.get("next_cursor") if a.ok and isinstance(a.body, dict) else None
    return [to_item(x) for x in _items(a, key)], int(counts.get(count_key) or 0), nxt, a.ok


async def _local_queues(ctx: WorkbenchContext) -> tuple[list[QueueItem], list[str]]:
    """Open discrepancies and scans parked past `parked_after_s`: lists without the workbench's filters,
    read whole (at most FETCH each) and filtered here."""
    up, token = ctx.upstream, ctx.read_token
    disc, parked, sms = await asyncio.gather(
        up.get("audit", "/v1/audit/discrepancies", token, status="open", limit=FETCH),
        up.get("warehouse", "/v1/warehouse/scans/parked", token, limit=FETCH),
        up.get("notify", "/v1/notify/attention", token, limit=FETCH),
    )
    parked_before = datetime.now(UTC) - timedelta(seconds=ctx.settings.parked_after_s)
    items = [_discrepancy(d) for d in _items(disc, "discrepancies")]
    items += [p for p in map(_parked, _items(parked, "scans")) if p.created_at <= parked_before]
    items += [_sms(a) for a in _items(sms, "items")]
    missing = [name for name, a in (("audit", disc), ("warehouse", parked), ("notify", sms)) if not a.ok]
    return items, missing


async def queue(ctx: WorkbenchContext, f: QueueFilter, cursor: str | None, size: int) -> Queue:
    """The queue, shared for `queue_cache_s` by everyone asking the same (filter, cursor): the team's pages
    reload every second, and one read of the services serves them all (one in flight per key)."""
    if ctx.settings.queue_cache_s <= 0:
        return await _queue(ctx, f, cursor, size)
    key = (f, cursor, size)
    now = time.monotonic()
    cached = ctx.queue_cache.get(key)
    if cached is None or cached[0] <= now:
        if len(ctx.queue_cache) > 1000:  # forget expired keys now and then
            for k in [k for k, (until, _) in ctx.queue_cache.items() if until <= now]:
                del ctx.queue_cache[k]
        cached = (now + ctx.settings.queue_cache_s, asyncio.ensure_future(_queue(ctx, f, cursor, size)))
        ctx.queue_cache[key] = cached
    try:
        return await asyncio.shield(cached[1])
    except Exception:
        ctx.queue_cache.pop(key, None)
        raise


async def _queue(ctx: WorkbenchContext, f: QueueFilter, cursor: str | None, size: int) -> Queue:
    """The work needing a person under the filter, oldest first. One kind: that kind's own cursor pages
    (the refunds service's, or the workbench's over a read list). All kinds: the oldest `size` of them
    (the oldest of all are among the oldest `size` of each kind), with each kind's count to go further."""
    now = datetime.now(UTC)
    refunds_kinds = [k for k in REFUNDS_QUEUES if _wanted(k, f)]
    refunds_pages = asyncio.gather(
        *(_refunds_queue(ctx, k, f, cursor if f.kind == k else None, size) for k in refunds_kinds)
    )
    answers, (local, missing) = await asyncio.gather(refunds_pages, _local_queues(ctx))
    counts: dict[str, int] = dict.fromkeys(KINDS, 0)
    items: list[QueueItem] = []
    next_cursor: str | None = None
    for kind, (found, count, nxt, ok) in zip(refunds_kinds, answers, strict=True):
        counts[kind] = count
        items += found
        if f.kind == kind:
            next_cursor = nxt
        if not ok and "refunds" not in missing:
            missing.append("refunds")
    local_filter = QueueFilter(None, f.shop, f.role, f.min_age_s, f.min_amount)
    kept = [i for i in local if _wanted(i.kind, f) and local_filter.keeps(i, now, ignore_kind=True)]
    for i in kept:
        counts[i.kind] += 1
    capped = [k for k in LOCAL_KINDS if counts[k] >= FETCH]
    if f.kind in LOCAL_KINDS:
        page = queue_page(kept, f, now, cursor, size)
        return Queue(page.items, counts, page.next_cursor, missing, capped)
    items += kept
    first = queue_page(items, QueueFilter(kind=f.kind), now, None, size)
    return Queue(first.items, counts, next_cursor if f.kind else None, missing, capped)


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


async def team(ctx: WorkbenchContext, start: date, end: date, shop: str | None) -> Answer:
    """The team's numbers (refunds' GET /v1/refunds/team), days counted in the workbench's `team_tz`."""
    params = {"from": start.isoformat(), "to": end.isoformat(), "tz": ctx.settings.team_tz, "shop": shop}
    return await ctx.upstream.get("refunds", "/v1/refunds/team", ctx.read_token, **params)
