"""Read-side queries of the audit service (the GETs, the CLI's `verify`): discrepancies, a return's
sides, per-SKU reconciliation, the log and its verification; and the shapes they are answered in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from contracts.events import Movement
from returnflow.backlogs import Backlog, backlogs_of
from returnflow.db import Conn
from returnflow.shops import Shops
from services.audit import chain

Db = Conn | asyncpg.Pool
MOVEMENTS = [m.value for m in Movement]


# -- discrepancies ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscrepancyFilter:
    reasons: tuple[str, ...] = ()
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    return_id: UUID | None = None
    sku: str | None = None


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


async def list_discrepancies(db: Db, f: DiscrepancyFilter, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    rows = await db.fetch(
        """SELECT d.*, coalesce((SELECT array_agg(s.key ORDER BY s.attested_at, s.key) FROM sides s
                                 WHERE s.discrepancy_id = d.id), '{}') AS sides
           FROM discrepancies d
           WHERE (cardinality($1::text[]) = 0 OR d.reason = ANY($1::text[]))
             AND ($2::text IS NULL OR d.status = $2)
             AND ($3::timestamptz IS NULL OR d.opened_at >= $3)
             AND ($4::timestamptz IS NULL OR d.opened_at < $4)
             AND ($5::uuid IS NULL OR d.return_id = $5)
             AND ($6::text IS NULL OR d.sku = $6)
           ORDER BY d.opened_at DESC, d.id
           LIMIT $7 OFFSET $8""",
        list(f.reasons),
        f.status,
        f.since,
        f.until,
        f.return_id,
        f.sku,
        limit,
        offset,
    )
    return [dict(r) for r in rows]


def discrepancies_csv_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "sides": " ".join(r["sides"])} for r in rows]


async def get_discrepancy(db: Db, discrepancy_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow("SELECT * FROM discrepancies WHERE id = $1", discrepancy_id)
    if row is None:
        return None
    sides = await db.fetch(
        """SELECT key, source, side_id, movement, quantity, person, attested_at, received_at, via, outcome, note
           FROM sides WHERE discrepancy_id = $1 ORDER BY attested_at, key""",
        discrepancy_id,
    )
    return {**dict(row), "sides": [dict(s) for s in sides]}


# -- a return --------------------------------------------------------------------------------------
async def return_view(db: Db, return_id: UUID) -> dict[str, Any]:
    known = await db.fetchrow("SELECT kind, requested_at FROM known_returns WHERE return_id = $1", return_id)
    sides = await db.fetch(
        """SELECT key, source, side_id, sku, movement, quantity, person, attested_at, received_at, via, outcome,
                  discrepancy_id, reason, partner_key
           FROM sides WHERE return_id = $1 ORDER BY attested_at, key""",
        return_id,
    )
    movements = await db.fetch(
        "SELECT sku, movement, quantity, warehouse_key, returns_team_key, verified_at, log_seq FROM movements "
        "WHERE return_id = $1 ORDER BY id",
        return_id,
    )
    discrepancies = await db.fetch(
        "SELECT id, reason, sku, movement, status, details, opened_at FROM discrepancies WHERE return_id = $1 "
        "ORDER BY opened_at, id",
        return_id,
    )
    refused = await db.fetch(
        "SELECT event_id, check_id, claimed_by, reason, correlation_id, refused_at FROM refused_checks "
        "WHERE return_id = $1 ORDER BY refused_at, event_id",
        return_id,
    )
    return {
        "return_id": str(return_id),
        "known": known is not None,
        "refused_checks": [dict(r) for r in refused],
        "kind": known["kind"] if known else None,
        "sides": [dict(r) for r in sides],
        "movements": [dict(r) for r in movements],
        "discrepancies": [dict(r) for r in discrepancies],
    }


def check_view(state: Mapping[str, Any], duplicate: bool) -> dict[str, Any]:
    """A returns-team check as `POST /v1/inventory/checks` answers it."""
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


# -- reconciliation --------------------------------------------------------------------------------
_WHERE = "WHERE ($1::text IS NULL OR sku = $1) AND ($2::uuid IS NULL OR return_id = $2)"


def _empty_sku(sku: str) -> dict[str, Any]:
    return {
        "sku": sku,
        "requested": 0,
        "received": 0,
        "received_by_disposition": {},
        "warehouse_attested": dict.fromkeys(MOVEMENTS, 0),
        "returns_team_checked": dict.fromkeys(MOVEMENTS, 0),
        "verified": dict.fromkeys(MOVEMENTS, 0),
        "open_discrepancies": 0,
        "resolved_discrepancies": 0,
    }


async def _count_lines(db: Db, args: tuple[Any, ...], row: Any) -> None:
    """Requested and received quantities (the receipt's dispositions too)."""
    for r in await db.fetch(f"SELECT sku, sum(qty)::bigint AS q FROM requested_lines {_WHERE} GROUP BY sku", *args):
        row(r["sku"])["requested"] = r["q"]
    for r in await db.fetch(
        f"""SELECT sku, disposition, sum(qty_received)::bigint AS q FROM received_lines {_WHERE}
            GROUP BY sku, disposition""",
        *args,
    ):
        x = row(r["sku"])
        x["received"] += r["q"]
        x["received_by_disposition"][r["disposition"]] = r["q"]


async def _count_movements(db: Db, args: tuple[Any, ...], row: Any) -> None:
    """Attested per source and verified, by movement."""
    for r in await db.fetch(
        f"SELECT sku, source, movement, sum(quantity)::bigint AS q FROM sides {_WHERE} GROUP BY sku, source, movement",
        *args,
    ):
        field = "warehouse_attested" if r["source"] == "warehouse" else "returns_team_checked"
        row(r["sku"])[field][r["movement"]] = r["q"]
    for r in await db.fetch(
        f"SELECT sku, movement, sum(quantity)::bigint AS q FROM movements {_WHERE} GROUP BY sku, movement", *args
    ):
        row(r["sku"])["verified"][r["movement"]] = r["q"]


async def _count_discrepancies(db: Db, args: tuple[Any, ...], row: Any) -> None:
    for r in await db.fetch(
        f"""SELECT sku, count(*) FILTER (WHERE status = 'open') AS open_n,
                   count(*) FILTER (WHERE status = 'resolved') AS resolved_n
            FROM discrepancies {_WHERE} GROUP BY sku""",
        *args,
    ):
        row(r["sku"])["open_discrepancies"] = r["open_n"]
        row(r["sku"])["resolved_discrepancies"] = r["resolved_n"]


async def reconciliation(db: Db, sku: str | None = None, return_id: UUID | None = None) -> list[dict[str, Any]]:
    """Per SKU: requested, received (and the receipt's dispositions), attested per source, verified per
    movement, open discrepancies, and what was received but not (yet) accounted for by a verified
    restock, destroy or refurbish."""
    out: dict[str, dict[str, Any]] = {}

    def row(s: str) -> dict[str, Any]:
        return out.setdefault(s, _empty_sku(s))

    args = (sku, return_id)
    await _count_lines(db, args, row)
    await _count_movements(db, args, row)
    await _count_discrepancies(db, args, row)
    for x in out.values():
        v = x["verified"]
        x["unaccounted"] = x["received"] - (v["restock"] + v["destroy"] + v["refurbish"])
    return [out[k] for k in sorted(out)]


RECONCILIATION_FIRST_COLUMNS = [
    "sku",
    "requested",
    "received",
    "unaccounted",
    "open_discrepancies",
    "resolved_discrepancies",
]
_GROUPS = ("verified", "warehouse_attested", "returns_team_checked", "received_by_disposition")


def reconciliation_csv(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows flattened (`verified_restock`, ...) and their columns."""
    flat = []
    for r in rows:
        x = {k: v for k, v in r.items() if not isinstance(v, dict)}
        for group in _GROUPS:
            for k, v in r[group].items():
                x[f"{group}_{k}"] = v
        flat.append(x)
    columns = list(RECONCILIATION_FIRST_COLUMNS)
    columns += sorted({k for x in flat for k in x} - set(columns))
    return flat, columns


# -- the log ---------------------------------------------------------------------------------------
async def log_rows(db: Db, after_seq: int, limit: int) -> list[chain.Row]:
    rows = await db.fetch(
        """SELECT seq, type, recorded_at, return_id, sku, content, prev_hash, hash FROM audit_log
           WHERE seq > $1 ORDER BY seq LIMIT $2""",
        after_seq,
        limit,
    )
    return [chain.Row(**dict(r)) for r in rows]


async def log_page(db: Db, after_seq: int, limit: int) -> dict[str, Any]:
    rows = await log_rows(db, after_seq, limit)
    entries = [
        {"seq": r.seq, "prev_hash": r.prev_hash, "hash": r.hash, "content": orjson.loads(r.content)} for r in rows
    ]
    return {"entries": entries}


async def verify_log(
    db: Db, anchors: Mapping[int, str] | None = None, chunk: int = 2000, origins: Mapping[int, str] | None = None
) -> chain.VerifyResult:
    """Recompute the whole chain from the stored rows (up to the head when the check started), checking
    each anchored entry against its anchor (`origins` says where each was read, for the report)."""
    head = await db.fetchval("SELECT max(seq) FROM audit_log") or 0
    verifier = chain.ChainVerifier(anchors=dict(anchors or {}), origins=dict(origins or {}))
    after = 0
    while after < head:
        rows = await log_rows(db, after, chunk)
        if not rows:
            break
        for row in rows:
            if row.seq > head:
                break
            if not verifier.feed(row):
                return verifier.result()
        after = rows[-1].seq
    return verifier.result()


async def backlogs(conn: Conn, shops: Shops | None = None) -> list[Backlog]:
    """What audit holds waiting (gauges): discrepancies open for a person (`GET /v1/audit/discrepancies`),
    and dual checks with one side waiting for the other."""
    row = await conn.fetchrow(
        """SELECT
             (SELECT count(*) FROM discrepancies WHERE status = 'open'),
             (SELECT extract(epoch FROM now() - min(opened_at)) FROM discrepancies WHERE status = 'open'),
             (SELECT count(*) FROM sides WHERE outcome IS NULL),
             (SELECT extract(epoch FROM now() - min(received_at)) FROM sides WHERE outcome IS NULL)"""
    )
    names = ("discrepancies_open", "checks_waiting_for_a_side")
    return backlogs_of(names, row)
