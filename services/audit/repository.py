"""SQL writes (and the reads they need) of the audit service; nothing is decided here. Every writer runs
inside the caller's transaction after `lock_log`, so appends to the hash chain (and the pairing
decisions they record) are serialized."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from contracts.events import Movement, ReturnReceived, ReturnRequested
from returnflow.db import Conn
from services.audit import chain
from services.audit.events import Appended, LogEntry
from services.audit.rules import (
    Case,
    Closed,
    Discrepancy,
    Incoming,
    LastAnchor,
    Outcome,
    Policy,
    RefusedCheck,
    Side,
    Verified,
)

CaseKey = tuple[UUID, str]  # (return, SKU)


# -- the log ---------------------------------------------------------------------------------------
async def lock_log(conn: Conn) -> datetime:
    """Serialize writers on the log; returns the database clock after the lock was taken."""
    await conn.execute("LOCK TABLE audit_log IN EXCLUSIVE MODE")
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


async def append(conn: Conn, now: datetime, entries: Sequence[LogEntry]) -> list[Appended]:
    """Append entries to the chain (the caller holds the lock from `lock_log`)."""
    if not entries:
        return []
    seq, prev = await head(conn)
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


async def head(conn: Conn) -> tuple[int, str]:
    """The last entry's (seq, hash); (0, GENESIS) for an empty log."""
    row = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    return (int(row["seq"]), str(row["hash"])) if row else (0, chain.GENESIS)


# -- anchors ---------------------------------------------------------------------------------------
ANCHOR_CHANNEL = "audit_anchors"  # NOTIFY at commit: the anchor keeper writes the new anchors to the file


async def last_anchor(db: Conn | asyncpg.Pool) -> LastAnchor | None:
    row = await db.fetchrow("SELECT seq, anchored_at FROM anchors ORDER BY id DESC LIMIT 1")
    return LastAnchor(int(row["seq"]), row["anchored_at"]) if row else None


async def hashes_after(conn: Conn, after_seq: int, limit: int) -> list[str]:
    """Hashes of the entries after `after_seq` in order, at most the last `limit` of them."""
    rows = await conn.fetch(
        """SELECT hash FROM (SELECT seq, hash FROM audit_log WHERE seq > $1 ORDER BY seq DESC LIMIT $2) t
           ORDER BY seq""",
        after_seq,
        limit,
    )
    return [r["hash"] for r in rows]


async def record_anchor(conn: Conn, seq: int, anchored_at: datetime, value: str) -> None:
    await conn.execute("INSERT INTO anchors (seq, anchored_at, value) VALUES ($1, $2, $3)", seq, anchored_at, value)
    await conn.execute("SELECT pg_notify($1, '')", ANCHOR_CHANNEL)


async def anchors_to_file(db: Conn | asyncpg.Pool, limit: int) -> list[tuple[int, str]]:
    rows = await db.fetch("SELECT id, value FROM anchors WHERE NOT filed ORDER BY id LIMIT $1", limit)
    return [(r["id"], r["value"]) for r in rows]


async def mark_filed(db: Conn | asyncpg.Pool, ids: Sequence[int]) -> None:
    await db.execute("UPDATE anchors SET filed = true WHERE id = ANY($1::bigint[])", list(ids))


# -- returns and receipts --------------------------------------------------------------------------
async def record_returns(conn: Conn, events: Sequence[ReturnRequested]) -> list[UUID]:
    """Remember returns and their requested lines; returns the ids seen for the first time."""
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
    new = {r["return_id"] for r in rows}
    qty: dict[tuple[UUID, str], int] = {}
    for e in events:
        for line in e.lines:
            qty[(e.return_id, line.sku)] = qty.get((e.return_id, line.sku), 0) + line.qty
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


# -- sides -----------------------------------------------------------------------------------------
async def recorded_keys(conn: Conn, keys: Sequence[str]) -> set[str]:
    if not keys:
        return set()
    rows = await conn.fetch("SELECT key FROM sides WHERE key = ANY($1::text[])", list(keys))
    return {r["key"] for r in rows}


async def insert_sides(conn: Conn, now: datetime, fresh: Sequence[Incoming], appended: Sequence[Appended]) -> None:
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


async def open_cases_of(conn: Conn, return_ids: Sequence[UUID]) -> set[CaseKey]:
    """Cases of these returns with a side not decided yet."""
    if not return_ids:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT return_id, sku FROM sides WHERE outcome IS NULL AND return_id = ANY($1::uuid[])",
        list(return_ids),
    )
    return {(r["return_id"], r["sku"]) for r in rows}


async def due_cases(conn: Conn, now: datetime, policy: Policy, limit: int) -> set[CaseKey]:
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


async def database_now(conn: Conn) -> datetime:
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


def _side_of(r: asyncpg.Record) -> Side:
    return Side(
        source=r["source"],
        side_id=r["side_id"],
        return_id=r["return_id"],
        sku=r["sku"],
        movement=Movement(r["movement"]),
        quantity=r["quantity"],
        person=r["person"],
        attested_at=r["attested_at"],
        received_at=r["received_at"],
    )


def _case_of(rows: Sequence[asyncpg.Record]) -> Case:
    closed = {
        r["key"]: Closed(r["outcome"], r["discrepancy_id"], r["reason"]) for r in rows if r["outcome"] is not None
    }
    first = rows[0]
    return Case(first["return_id"], first["sku"], bool(first["return_known"]), tuple(map(_side_of, rows)), closed)


async def load_cases(conn: Conn, keys: Iterable[CaseKey]) -> tuple[list[Case], dict[str, str]]:
    """The cases (ordered by return and SKU), and the correlation id each side arrived with."""
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
    grouped: dict[CaseKey, list[asyncpg.Record]] = {}
    for r in rows:
        grouped.setdefault((r["return_id"], r["sku"]), []).append(r)
    cases = [_case_of(rs) for _, rs in sorted(grouped.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))]
    return cases, {r["key"]: r["correlation_id"] for r in rows}


async def side_states(db: Conn | asyncpg.Pool, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = await db.fetch(
        """SELECT key, source, side_id, return_id, sku, movement, quantity, person, attested_at, outcome,
                  discrepancy_id, reason, partner_key, log_seq
           FROM sides WHERE key = ANY($1::text[])""",
        list(keys),
    )
    return {r["key"]: dict(r) for r in rows}


# -- outcomes --------------------------------------------------------------------------------------
Closure = tuple[str, str, str | None, str | None, str | None]  # side key, outcome, discrepancy, reason, partner


def _closures(o: Outcome) -> list[Closure]:
    if isinstance(o, Verified):
        w, r = o.warehouse, o.returns_team
        return [(w.key, "verified", None, None, r.key), (r.key, "verified", None, None, w.key)]
    if isinstance(o, Discrepancy):
        partner = {s.key: next((p.key for p in o.sides if p.key != s.key), None) for s in o.sides}
        return [(s.key, "discrepancy", o.id, o.reason, partner[s.key]) for s in o.sides]
    return [(o.side.key, "attached", o.discrepancy_id, o.reason, None)]


async def record_outcomes(conn: Conn, now: datetime, outcomes: Sequence[Outcome], appended: Sequence[Appended]) -> None:
    """Verified movements, opened discrepancies, and every side they close."""
    if not outcomes:
        return
    verified = [(o, a) for o, a in zip(outcomes, appended, strict=True) if isinstance(o, Verified)]
    opened = [(o, a) for o, a in zip(outcomes, appended, strict=True) if isinstance(o, Discrepancy)]
    await insert_movements(conn, now, verified)
    await insert_discrepancies(conn, now, opened)
    await close_sides(conn, now, [c for o in outcomes for c in _closures(o)])


async def insert_movements(conn: Conn, now: datetime, verified: Sequence[tuple[Verified, Appended]]) -> None:
    if not verified:
        return
    await conn.execute(
        """INSERT INTO movements (return_id, sku, movement, quantity, warehouse_key, returns_team_key,
               verified_at, log_seq)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[],
               $7::timestamptz[], $8::bigint[])""",
        [v.warehouse.return_id for v, _ in verified],
        [v.warehouse.sku for v, _ in verified],
        [v.warehouse.movement.value for v, _ in verified],
        [v.warehouse.quantity for v, _ in verified],
        [v.warehouse.key for v, _ in verified],
        [v.returns_team.key for v, _ in verified],
        [now] * len(verified),
        [a.seq for _, a in verified],
    )


async def insert_discrepancies(conn: Conn, now: datetime, opened: Sequence[tuple[Discrepancy, Appended]]) -> None:
    if not opened:
        return
    await conn.execute(
        """INSERT INTO discrepancies (id, reason, return_id, sku, movement, details, opened_at, log_seq)
           SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[],
               $7::timestamptz[], $8::bigint[])""",
        [d.id for d, _ in opened],
        [d.reason for d, _ in opened],
        [d.sides[0].return_id for d, _ in opened],
        [d.sides[0].sku for d, _ in opened],
        [d.movement.value for d, _ in opened],
        [d.details for d, _ in opened],
        [now] * len(opened),
        [a.seq for _, a in opened],
    )


async def close_sides(conn: Conn, now: datetime, closures: Sequence[Closure]) -> None:
    await conn.execute(
        """UPDATE sides s SET outcome = u.outcome, discrepancy_id = u.did, reason = u.reason,
               partner_key = u.partner, closed_at = $6
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
               AS u(key, outcome, did, reason, partner)
           WHERE s.key = u.key AND s.outcome IS NULL""",
        [c[0] for c in closures],
        [c[1] for c in closures],
        [c[2] for c in closures],
        [c[3] for c in closures],
        [c[4] for c in closures],
        now,
    )


# -- resolution ------------------------------------------------------------------------------------
async def discrepancy(conn: Conn, discrepancy_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM discrepancies WHERE id = $1", discrepancy_id)
    return dict(row) if row is not None else None


async def people_of(conn: Conn, discrepancy_id: str) -> list[str]:
    """Who attested the sides of a discrepancy."""
    rows = await conn.fetch("SELECT person FROM sides WHERE discrepancy_id = $1", discrepancy_id)
    return [r["person"] for r in rows]


async def mark_resolved(
    conn: Conn, discrepancy_id: str, now: datetime, person: str, note: str, a: Appended
) -> dict[str, Any]:
    row = await conn.fetchrow(
        """UPDATE discrepancies SET status = 'resolved', resolved_at = $2, resolved_by = $3, resolution_note = $4,
               resolution_seq = $5 WHERE id = $1 RETURNING *""",
        discrepancy_id,
        now,
        person,
        note,
        a.seq,
    )
    assert row is not None
    return dict(row)


async def record_refused_checks(conn: Conn, refused: Sequence[RefusedCheck]) -> None:
    """Keep each refused check with its reason (once per event id)."""
    if not refused:
        return
    await conn.execute(
        """INSERT INTO refused_checks (event_id, return_id, check_id, claimed_by, reason, correlation_id, command)
           SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])
           ON CONFLICT (event_id) DO NOTHING""",
        [r.event_id for r in refused],
        [r.return_id for r in refused],
        [r.check_id for r in refused],
        [r.claimed_by for r in refused],
        [r.reason for r in refused],
        [r.correlation_id for r in refused],
        [r.command.decode() for r in refused],
    )
