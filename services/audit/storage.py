"""SQL of the audit service. Every writer runs inside the caller's transaction and starts with
`lock_log`, so appends to the hash chain (and the pairing decisions they record) are serialized."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from contracts.events import (
    DiscrepancyFound,
    InventoryAttested,
    InventoryCheck,
    Message,
    Movement,
    MovementVerified,
    ReturnReceived,
    ReturnRequested,
)
from returnflow.db import Conn
from returnflow.outbox import enqueue
from services.audit import chain
from services.audit.domain import (
    Case,
    Closed,
    Discrepancy,
    Outcome,
    Policy,
    Side,
    Verified,
    decide,
)

Db = Conn | asyncpg.Pool


@dataclass(frozen=True)
class Incoming:
    """A side as it arrives, with where it came from."""

    side: Side
    via: str  # kafka | http
    correlation_id: str
    note: str | None = None


@dataclass(frozen=True)
class NewEntry:
    type: str
    return_id: str | None
    sku: str | None
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Appended:
    seq: int
    hash: str


def side_from_attestation(e: InventoryAttested) -> Side:
    return Side(
        source=e.source,
        side_id=e.attestation_id,
        return_id=e.return_id,
        sku=e.sku,
        movement=e.movement,
        quantity=e.quantity,
        person=e.attested_by,
        attested_at=e.attested_at,
        received_at=e.occurred_at,  # replaced by the audit service's clock on ingest
    )


def side_from_check(e: InventoryCheck) -> Side:
    return Side(
        source="returns_team",
        side_id=e.check_id,
        return_id=e.return_id,
        sku=e.sku,
        movement=e.movement,
        quantity=e.quantity,
        person=e.checked_by,
        attested_at=e.checked_at,
        received_at=e.occurred_at,
    )


# -- the log ---------------------------------------------------------------------------------------
async def lock_log(conn: Conn) -> datetime:
    """Serialize writers on the log; returns the database clock after the lock was taken."""
    await conn.execute("LOCK TABLE audit_log IN EXCLUSIVE MODE")
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


async def append(conn: Conn, now: datetime, entries: Sequence[NewEntry]) -> list[Appended]:
    """Append entries to the chain (the caller holds the lock from `lock_log`)."""
    if not entries:
        return []
    head = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev = (int(head["seq"]), str(head["hash"])) if head else (0, chain.GENESIS)
    rows: list[tuple[int, str, datetime, str | None, str | None, str, str, str]] = []
    out: list[Appended] = []
    for e in entries:
        seq += 1
        content = chain.content_of(seq, e.type, now, e.return_id, e.sku, e.data)
        h = chain.entry_hash(prev, content)
        rows.append((seq, e.type, now, e.return_id, e.sku, content, prev, h))
        out.append(Appended(seq, h))
        prev = h
    await conn.execute(
        """INSERT INTO audit_log (seq, type, recorded_at, return_id, sku, content, prev_hash, hash)
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
               $6::text[], $7::text[], $8::text[])""",
        *[list(col) for col in zip(*rows, strict=True)],
    )
    return out


async def log_rows(db: Db, after_seq: int, limit: int) -> list[chain.Row]:
    rows = await db.fetch(
        """SELECT seq, type, recorded_at, return_id, sku, content, prev_hash, hash FROM audit_log
           WHERE seq > $1 ORDER BY seq LIMIT $2""",
        after_seq,
        limit,
    )
    return [chain.Row(**dict(r)) for r in rows]


async def verify_log(db: Db, anchors: Mapping[int, str] | None = None, chunk: int = 2000) -> chain.VerifyResult:
    """Recompute the whole chain from the stored rows (up to the head when the check started)."""
    head = await db.fetchval("SELECT max(seq) FROM audit_log") or 0
    verifier = chain.ChainVerifier(anchors=dict(anchors or {}))
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


# -- returns and receipts --------------------------------------------------------------------------
async def record_returns(conn: Conn, events: Sequence[ReturnRequested]) -> list[UUID]:
    """Remember returns; returns the ids seen for the first time."""
    if not events:
        return []
    rows = await conn.fetch(
        """INSERT INTO known_returns (return_id, kind, requested_at)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) ON CONFLICT DO NOTHING
           RETURNING return_id""",
        [e.return_id for e in events],
        [e.kind.value for e in events],
        [e.requested_at for e in events],
    )
    qty: dict[tuple[UUID, str], int] = {}
    for e in events:
        for line in e.lines:
            qty[(e.return_id, line.sku)] = qty.get((e.return_id, line.sku), 0) + line.qty
    new = {r["return_id"] for r in rows}
    lines = [(k, q) for k, q in qty.items() if k[0] in new]
    if lines:
        await conn.execute(
            """INSERT INTO requested_lines (return_id, sku, qty)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[]) ON CONFLICT DO NOTHING""",
            [k[0] for k, _ in lines],
            [k[1] for k, _ in lines],
            [q for _, q in lines],
        )
    return list(new)


async def record_receipts(conn: Conn, events: Sequence[ReturnReceived]) -> None:
    rows = [(e, n, line) for e in events for n, line in enumerate(e.lines, 1)]
    if not rows:
        return
    await conn.execute(
        """INSERT INTO received_lines (receipt_id, line_no, return_id, sku, qty_received, condition, disposition,
               received_at)
           SELECT * FROM unnest($1::text[], $2::int[], $3::uuid[], $4::text[], $5::int[], $6::text[], $7::text[],
               $8::timestamptz[])
           ON CONFLICT DO NOTHING""",
        [e.receipt_id for e, _, _ in rows],
        [n for _, n, _ in rows],
        [e.return_id for e, _, _ in rows],
        [line.sku for _, _, line in rows],
        [line.qty_received for _, _, line in rows],
        [line.condition.value for _, _, line in rows],
        [line.disposition.value for _, _, line in rows],
        [e.received_at for e, _, _ in rows],
    )


# -- sides and decisions ---------------------------------------------------------------------------
def _side_data(i: Incoming) -> dict[str, Any]:
    s = i.side
    return {
        "source": s.source,
        "id": s.side_id,
        "movement": s.movement.value,
        "quantity": s.quantity,
        "person": s.person,
        "attested_at": chain.timestamp(s.attested_at),
        "via": i.via,
        "note": i.note,
    }


def same_content(row: Mapping[str, Any], s: Side) -> bool:
    return (
        row["return_id"] == s.return_id
        and row["sku"] == s.sku
        and row["movement"] == s.movement.value
        and row["quantity"] == s.quantity
        and row["person"] == s.person
    )


async def ingest(
    conn: Conn,
    policy: Policy,
    incoming: Sequence[Incoming],
    returns: Sequence[ReturnRequested] = (),
    receipts: Sequence[ReturnReceived] = (),
) -> list[Outcome]:
    """Record new sides (a side already recorded under the same source and id is ignored), the
    returns and receipts, and settle every case they touch. One transaction, one lock."""
    now = await lock_log(conn)
    newly_known = await record_returns(conn, returns)
    await record_receipts(conn, receipts)
    by_key: dict[str, Incoming] = {}
    for i in incoming:
        by_key.setdefault(i.side.key, i)
    known: set[str] = set()
    if by_key:
        rows = await conn.fetch("SELECT key FROM sides WHERE key = ANY($1::text[])", list(by_key))
        known = {r["key"] for r in rows}
    fresh = [replace(i, side=replace(i.side, received_at=now)) for k, i in by_key.items() if k not in known]
    cases: set[tuple[UUID, str]] = {(i.side.return_id, i.side.sku) for i in fresh}
    if fresh:
        appended = await append(
            conn,
            now,
            [NewEntry("side.recorded", str(i.side.return_id), i.side.sku, _side_data(i)) for i in fresh],
        )
        await conn.execute(
            """INSERT INTO sides (key, source, side_id, return_id, sku, movement, quantity, person, attested_at,
                   received_at, via, correlation_id, note, log_seq)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[],
                   $7::int[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[],
                   $13::text[], $14::bigint[])""",
            [i.side.key for i in fresh],
            [i.side.source for i in fresh],
            [i.side.side_id for i in fresh],
            [i.side.return_id for i in fresh],
            [i.side.sku for i in fresh],
            [i.side.movement.value for i in fresh],
            [i.side.quantity for i in fresh],
            [i.side.person for i in fresh],
            [i.side.attested_at for i in fresh],
            [now] * len(fresh),
            [i.via for i in fresh],
            [i.correlation_id for i in fresh],
            [i.note for i in fresh],
            [a.seq for a in appended],
        )
    if newly_known:
        cases |= {
            (r["return_id"], r["sku"])
            for r in await conn.fetch(
                "SELECT DISTINCT return_id, sku FROM sides WHERE outcome IS NULL AND return_id = ANY($1::uuid[])",
                newly_known,
            )
        }
    return await settle(conn, now, policy, cases)


async def due_cases(conn: Conn, now: datetime, policy: Policy, limit: int) -> set[tuple[UUID, str]]:
    """Cases with a side past its deadline, or past the grace for an unknown return."""
    rows = await conn.fetch(
        """SELECT DISTINCT s.return_id, s.sku FROM sides s
           LEFT JOIN known_returns k USING (return_id)
           WHERE s.outcome IS NULL AND (
               (s.attested_at <= $1 AND s.received_at <= $2) OR (k.return_id IS NULL AND s.received_at <= $3))
           LIMIT $4""",
        now - policy.deadline,
        now - policy.settle,
        now - policy.unknown_grace,
        limit,
    )
    return {(r["return_id"], r["sku"]) for r in rows}


async def sweep(conn: Conn, policy: Policy, limit: int) -> tuple[int, list[Outcome]]:
    """One round of the deadline sweeper: (cases looked at, outcomes recorded)."""
    now = await lock_log(conn)
    cases = await due_cases(conn, now, policy, limit)
    return len(cases), await settle(conn, now, policy, cases)


async def load_cases(conn: Conn, keys: Iterable[tuple[UUID, str]]) -> tuple[list[Case], dict[str, str]]:
    keys = list(keys)
    if not keys:
        return [], {}
    rows = await conn.fetch(
        """SELECT s.*, (k.return_id IS NOT NULL) AS return_known FROM sides s
           JOIN unnest($1::uuid[], $2::text[]) AS c(return_id, sku) USING (return_id, sku)
           LEFT JOIN known_returns k USING (return_id)""",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    grouped: dict[tuple[UUID, str], list[asyncpg.Record]] = {}
    for r in rows:
        grouped.setdefault((r["return_id"], r["sku"]), []).append(r)
    cases: list[Case] = []
    correlation: dict[str, str] = {}
    for (rid, sku), rs in sorted(grouped.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        sides = []
        closed: dict[str, Closed] = {}
        for r in rs:
            sides.append(
                Side(
                    source=r["source"],
                    side_id=r["side_id"],
                    return_id=rid,
                    sku=sku,
                    movement=Movement(r["movement"]),
                    quantity=r["quantity"],
                    person=r["person"],
                    attested_at=r["attested_at"],
                    received_at=r["received_at"],
                )
            )
            correlation[r["key"]] = r["correlation_id"]
            if r["outcome"] is not None:
                closed[r["key"]] = Closed(r["outcome"], r["discrepancy_id"], r["reason"])
        cases.append(Case(rid, sku, bool(rs[0]["return_known"]), tuple(sides), closed))
    return cases, correlation


async def settle(conn: Conn, now: datetime, policy: Policy, keys: Iterable[tuple[UUID, str]]) -> list[Outcome]:
    cases, correlation = await load_cases(conn, keys)
    outcomes = [o for c in cases for o in decide(c, now, policy)]
    await record_outcomes(conn, now, outcomes, correlation)
    return outcomes


def _entry(o: Outcome) -> NewEntry:
    s0 = o.sides[0]
    rid, sku = str(s0.return_id), s0.sku
    if isinstance(o, Verified):
        return NewEntry(
            "movement.verified",
            rid,
            sku,
            {
                "movement": o.warehouse.movement.value,
                "quantity": o.warehouse.quantity,
                "warehouse": o.warehouse.key,
                "returns_team": o.returns_team.key,
                "warehouse_person": o.warehouse.person,
                "returns_team_person": o.returns_team.person,
            },
        )
    if isinstance(o, Discrepancy):
        return NewEntry(
            "discrepancy.opened",
            rid,
            sku,
            {
                "discrepancy_id": o.id,
                "reason": o.reason,
                "movement": o.movement.value,
                "sides": [s.key for s in o.sides],
                "details": o.details,
            },
        )
    return NewEntry(
        "side.attached", rid, sku, {"side": o.side.key, "discrepancy_id": o.discrepancy_id, "reason": o.reason}
    )


async def record_outcomes(
    conn: Conn, now: datetime, outcomes: Sequence[Outcome], correlation: Mapping[str, str]
) -> None:
    if not outcomes:
        return
    appended = await append(conn, now, [_entry(o) for o in outcomes])
    updates: list[tuple[str, str, str | None, str | None, str | None]] = []
    events: list[Message] = []
    verified_rows = []
    discrepancy_rows = []
    for o, a in zip(outcomes, appended, strict=True):
        # the event follows the correlation id of the side that completed the outcome
        last = max(o.sides, key=lambda s: (s.received_at, s.key))
        cid = correlation.get(last.key) or "audit"
        if isinstance(o, Verified):
            w, r = o.warehouse, o.returns_team
            updates += [(w.key, "verified", None, None, r.key), (r.key, "verified", None, None, w.key)]
            verified_rows.append((w, r, a))
            events.append(
                MovementVerified(
                    occurred_at=now,
                    return_id=w.return_id,
                    correlation_id=cid,
                    sku=w.sku,
                    movement=w.movement,
                    quantity=w.quantity,
                    warehouse_attested_by=w.person,
                    returns_team_checked_by=r.person,
                    warehouse_attestation_id=w.side_id,
                    returns_team_check_id=r.side_id,
                    audit_seq=a.seq,
                    audit_hash=a.hash,
                )
            )
        elif isinstance(o, Discrepancy):
            partner = {s.key: next((p.key for p in o.sides if p.key != s.key), None) for s in o.sides}
            updates += [(s.key, "discrepancy", o.id, o.reason, partner[s.key]) for s in o.sides]
            discrepancy_rows.append((o, a))
            s0 = o.sides[0]
            events.append(
                DiscrepancyFound(
                    occurred_at=now,
                    return_id=s0.return_id,
                    correlation_id=cid,
                    discrepancy_id=o.id,
                    reason=o.reason,
                    sku=s0.sku,
                    details=o.details,
                    movement=o.movement,
                    sides=[s.key for s in o.sides],
                    audit_seq=a.seq,
                    audit_hash=a.hash,
                )
            )
        else:
            updates.append((o.side.key, "attached", o.discrepancy_id, o.reason, None))
    if verified_rows:
        await conn.execute(
            """INSERT INTO movements (return_id, sku, movement, quantity, warehouse_key, returns_team_key,
                   verified_at, log_seq)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[],
                   $7::timestamptz[], $8::bigint[])""",
            [w.return_id for w, _, _ in verified_rows],
            [w.sku for w, _, _ in verified_rows],
            [w.movement.value for w, _, _ in verified_rows],
            [w.quantity for w, _, _ in verified_rows],
            [w.key for w, _, _ in verified_rows],
            [r.key for _, r, _ in verified_rows],
            [now] * len(verified_rows),
            [a.seq for _, _, a in verified_rows],
        )
    if discrepancy_rows:
        await conn.execute(
            """INSERT INTO discrepancies (id, reason, return_id, sku, movement, details, opened_at, log_seq)
               SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                   $7::timestamptz[], $8::bigint[])""",
            [o.id for o, _ in discrepancy_rows],
            [o.reason for o, _ in discrepancy_rows],
            [o.sides[0].return_id for o, _ in discrepancy_rows],
            [o.sides[0].sku for o, _ in discrepancy_rows],
            [o.movement.value for o, _ in discrepancy_rows],
            [o.details for o, _ in discrepancy_rows],
            [now] * len(discrepancy_rows),
            [a.seq for _, a in discrepancy_rows],
        )
    await conn.execute(
        """UPDATE sides s SET outcome = u.outcome, discrepancy_id = u.did, reason = u.reason,
               partner_key = u.partner, closed_at = $6
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
               AS u(key, outcome, did, reason, partner)
           WHERE s.key = u.key AND s.outcome IS NULL""",
        [u[0] for u in updates],
        [u[1] for u in updates],
        [u[2] for u in updates],
        [u[3] for u in updates],
        [u[4] for u in updates],
        now,
    )
    await enqueue(conn, events)


# -- resolution ------------------------------------------------------------------------------------
class ResolveError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def resolve(conn: Conn, discrepancy_id: str, person: str, note: str, correlation_id: str) -> dict[str, Any]:
    now = await lock_log(conn)
    row = await conn.fetchrow("SELECT * FROM discrepancies WHERE id = $1", discrepancy_id)
    if row is None:
        raise ResolveError(404, f"unknown discrepancy {discrepancy_id!r}")
    if row["status"] == "resolved":
        raise ResolveError(409, f"discrepancy {discrepancy_id} was already resolved by {row['resolved_by']}")
    people = {
        r["person"].strip().casefold()
        for r in await conn.fetch("SELECT person FROM sides WHERE discrepancy_id = $1", discrepancy_id)
    }
    if person.strip().casefold() in people:
        raise ResolveError(403, f"{person} attested a side of this discrepancy; someone else must resolve it")
    (a,) = await append(
        conn,
        now,
        [
            NewEntry(
                "discrepancy.resolved",
                str(row["return_id"]),
                row["sku"],
                {
                    "discrepancy_id": discrepancy_id,
                    "reason": row["reason"],
                    "resolved_by": person,
                    "note": note,
                    "correlation_id": correlation_id,
                },
            )
        ],
    )
    updated = await conn.fetchrow(
        """UPDATE discrepancies SET status = 'resolved', resolved_at = $2, resolved_by = $3, resolution_note = $4,
               resolution_seq = $5 WHERE id = $1 RETURNING *""",
        discrepancy_id,
        now,
        person,
        note,
        a.seq,
    )
    assert updated is not None
    return {**dict(updated), "resolution_hash": a.hash}


# -- queries ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscrepancyFilter:
    reasons: tuple[str, ...] = ()
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    return_id: UUID | None = None
    sku: str | None = None


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
    return {
        "return_id": str(return_id),
        "known": known is not None,
        "kind": known["kind"] if known else None,
        "sides": [dict(r) for r in sides],
        "movements": [dict(r) for r in movements],
        "discrepancies": [dict(r) for r in discrepancies],
    }


MOVEMENTS = [m.value for m in Movement]


async def reconciliation(db: Db, sku: str | None = None, return_id: UUID | None = None) -> list[dict[str, Any]]:
    """Per SKU: requested, received (and the receipt's dispositions), attested per source, verified per
    movement, open discrepancies, and what was received but not (yet) accounted for by a verified
    restock, destroy or refurbish."""
    where = "WHERE ($1::text IS NULL OR sku = $1) AND ($2::uuid IS NULL OR return_id = $2)"
    args = (sku, return_id)
    out: dict[str, dict[str, Any]] = {}

    def row(s: str) -> dict[str, Any]:
        return out.setdefault(
            s,
            {
                "sku": s,
                "requested": 0,
                "received": 0,
                "received_by_disposition": {},
                "warehouse_attested": dict.fromkeys(MOVEMENTS, 0),
                "returns_team_checked": dict.fromkeys(MOVEMENTS, 0),
                "verified": dict.fromkeys(MOVEMENTS, 0),
                "open_discrepancies": 0,
                "resolved_discrepancies": 0,
            },
        )

    for r in await db.fetch(f"SELECT sku, sum(qty)::bigint AS q FROM requested_lines {where} GROUP BY sku", *args):
        row(r["sku"])["requested"] = r["q"]
    for r in await db.fetch(
        f"""SELECT sku, disposition, sum(qty_received)::bigint AS q FROM received_lines {where}
            GROUP BY sku, disposition""",
        *args,
    ):
        x = row(r["sku"])
        x["received"] += r["q"]
        x["received_by_disposition"][r["disposition"]] = r["q"]
    for r in await db.fetch(
        f"SELECT sku, source, movement, sum(quantity)::bigint AS q FROM sides {where} GROUP BY sku, source, movement",
        *args,
    ):
        field = "warehouse_attested" if r["source"] == "warehouse" else "returns_team_checked"
        row(r["sku"])[field][r["movement"]] = r["q"]
    for r in await db.fetch(
        f"SELECT sku, movement, sum(quantity)::bigint AS q FROM movements {where} GROUP BY sku, movement", *args
    ):
        row(r["sku"])["verified"][r["movement"]] = r["q"]
    for r in await db.fetch(
        f"""SELECT sku, count(*) FILTER (WHERE status = 'open') AS open_n,
                   count(*) FILTER (WHERE status = 'resolved') AS resolved_n
            FROM discrepancies {where} GROUP BY sku""",
        *args,
    ):
        row(r["sku"])["open_discrepancies"] = r["open_n"]
        row(r["sku"])["resolved_discrepancies"] = r["resolved_n"]
    for x in out.values():
        v = x["verified"]
        x["unaccounted"] = x["received"] - (v["restock"] + v["destroy"] + v["refurbish"])
    return [out[k] for k in sorted(out)]


async def side_states(db: Db, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = await db.fetch(
        """SELECT key, source, side_id, return_id, sku, movement, quantity, person, attested_at, outcome,
                  discrepancy_id, reason, partner_key, log_seq
           FROM sides WHERE key = ANY($1::text[])""",
        list(keys),
    )
    return {r["key"]: dict(r) for r in rows}
