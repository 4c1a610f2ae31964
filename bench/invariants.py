"""Invariant checker for the fault drills: reads every service's tables, the broker's topics, the
simulated gateway and the SMS file, and reports with numbers whether anything was lost, paid twice,
sent twice, left unverified or left stuck.

    report = await check(Target(...), accepted_ids, poisons)
    report["violations"]  # [] when every invariant holds
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from apphost import registry
from apphost.registry import DEV_OPS_TOKEN, SERVICES
from contracts.catalog import (
    HEADER_DLQ_ERROR_TYPE,
    HEADER_DLQ_OFFSET,
    HEADER_DLQ_PARTITION,
    HEADER_DLQ_TOPIC,
    dlq_topic,
)

DLQ_HEADERS = (HEADER_DLQ_TOPIC, HEADER_DLQ_PARTITION, HEADER_DLQ_OFFSET, HEADER_DLQ_ERROR_TYPE)


@dataclass
class Target:
    dsn: str
    bootstrap: str
    gateway_url: str
    audit_url: str
    sms_file: Path
    gateway_api_key: str | None = None  # the local Stripe lists refunds to its secret key only
    gateway_refunds_path: str = "/v1/refunds"  # the local Shopify's listing: /_dev/refunds


@dataclass
class Poison:
    topic: str
    value: bytes
    partition: int = -1
    offset: int = -1


@dataclass
class Report:
    numbers: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": not self.violations, "numbers": self.numbers, "violations": self.violations}


def consumer_groups() -> dict[str, list[str]]:
    return registry.consumer_groups()


def consumed_topics() -> list[str]:
    return sorted({t for topics in consumer_groups().values() for t in topics})


async def _fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


# -- pieces -------------------------------------------------------------------------------------
async def returns_present(dsn: str) -> set[str]:
    return {str(r["id"]) for r in await _fetch(dsn, "SELECT id FROM returns.returns")}


async def outbox_backlog(dsn: str) -> dict[str, int]:
    out = {}
    for name in SERVICES:
        rows = await _fetch(dsn, f"SELECT count(*) AS n FROM {name}.outbox WHERE published_at IS NULL")
        out[name] = int(rows[0]["n"])
    return out


async def consumer_lag(bootstrap: str) -> dict[str, int]:
    """Messages not yet committed per group (end offset - committed offset, summed over partitions)."""
    lag: dict[str, int] = {}
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await probe.start()
    try:
        for group, topics in consumer_groups().items():
            tps = []
            for t in topics:
                parts = probe.partitions_for_topic(t)
                if not parts:
                    await probe._client.force_metadata_update()
                    parts = probe.partitions_for_topic(t) or set()
                tps += [TopicPartition(t, p) for p in parts]
            ends = await probe.end_offsets(tps)
            c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
            await c.start()
            try:
                total = 0
                for tp in tps:
                    committed = await c.committed(tp) or 0
                    total += max(0, ends[tp] - committed)
                lag[group] = total
            finally:
                await c.stop()
    finally:
        await probe.stop()
    return lag


async def pending_work(dsn: str) -> dict[str, int]:
    """Work a service holds for later that should be done once the drill is over."""
    refunds = await _fetch(dsn, "SELECT count(*) AS n FROM refunds.refunds WHERE status = 'pending'")
    sms = await _fetch(
        dsn, "SELECT count(*) AS n FROM notify.messages WHERE status IN ('queued', 'sending') AND due_at <= now()"
    )
    return {"refunds_pending": int(refunds[0]["n"]), "sms_due_unsent": int(sms[0]["n"])}


async def dead_lettered(dsn: str, poisons: list[Poison]) -> dict[bytes, set[str]]:
    """Poison value -> consumer groups that recorded it in their dead_letters table."""
    found: dict[bytes, set[str]] = defaultdict(set)
    values = [p.value for p in poisons]
    for name in SERVICES:
        for r in await _fetch(
            dsn, f"SELECT consumer, value FROM {name}.dead_letters WHERE value = ANY($1::bytea[])", values
        ):
            found[bytes(r["value"])].add(r["consumer"])
    return found


async def dlq_records(
    bootstrap: str, topics: Iterable[str], timeout_s: float = 5.0
) -> dict[bytes, list[dict[str, str]]]:
    """Every record of the given DLQ topics: value -> list of header dicts."""
    out: dict[bytes, list[dict[str, str]]] = defaultdict(list)
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await c.start()
    try:
        tps = []
        for t in topics:
            parts = c.partitions_for_topic(t)
            if not parts:
                await c._client.force_metadata_update()
                parts = c.partitions_for_topic(t) or set()
            tps += [TopicPartition(t, p) for p in parts]
        if not tps:
            return out
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            positions = [await c.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await c.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    hdrs = {k: v.decode(errors="replace") for k, v in rec.headers or ()}
                    out[rec.value or b""].append(hdrs)
    finally:
        await c.stop()
    return out


async def gateway_refunds(
    gateway_url: str, api_key: str | None = None, path: str = "/v1/refunds"
) -> list[dict[str, Any]]:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10, headers=headers) as client:
        r = await client.get(path)
        r.raise_for_status()
        data: list[dict[str, Any]] = r.json()["data"]
        return data


async def audit_verify(audit_url: str, token: str = DEV_OPS_TOKEN) -> dict[str, Any]:
    """The chain as the audit service verifies it (a read: the development ops token on the local stack)."""
    async with httpx.AsyncClient(base_url=audit_url, timeout=30) as client:
        r = await client.get("/v1/audit/verify", headers={"authorization": f"Bearer {token}"})
        body: dict[str, Any] = r.json()
        body["http_status"] = r.status_code
        return body


def sms_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


# -- waiting for quiet ----------------------------------------------------------------------------
async def quiet(target: Target) -> dict[str, Any]:
    """One look at everything that should reach zero once the system has caught up."""
    backlog = await outbox_backlog(target.dsn)
    lag = await consumer_lag(target.bootstrap)
    work = await pending_work(target.dsn)
    return {"outbox_unpublished": backlog, "consumer_lag": lag, **work}


def is_quiet(q: dict[str, Any]) -> bool:
    return (
        not any(q["outbox_unpublished"].values())
        and not any(q["consumer_lag"].values())
        and q["refunds_pending"] == 0
        and q["sms_due_unsent"] == 0
    )


async def wait_quiet(target: Target, timeout_s: float, out: Any = print) -> tuple[bool, float, dict[str, Any]]:
    """Poll until outboxes are drained, consumers caught up and due work done; (ok, seconds, last look)."""
    started = time.monotonic()
    last: dict[str, Any] = {}
    while True:
        try:
            last = await quiet(target)
            if is_quiet(last):
                return True, time.monotonic() - started, last
        except Exception as exc:  # a service or the broker still restarting: look again
            last = {"error": repr(exc)}
        if time.monotonic() - started > timeout_s:
            return False, time.monotonic() - started, last
        await asyncio.sleep(1.0)


# -- the check ----------------------------------------------------------------------------------
async def check(
    target: Target,
    accepted: set[str],
    poisons: list[Poison],
    settle_timeout_s: float = 120.0,
    out: Any = print,
    notify_crashes: list[str] | None = None,
) -> dict[str, Any]:
    rep = Report()
    n, v = rep.numbers, rep.violations

    ok, waited, last = await wait_quiet(target, settle_timeout_s, out)
    n["settle_seconds"] = round(waited, 1)
    n["stuck"] = last
    if not ok:
        v.append(f"not quiet after {waited:.0f}s: {last}")

    # 1. nothing lost
    present = await returns_present(target.dsn)
    lost = accepted - present
    n["returns_accepted"] = len(accepted)
    n["returns_present"] = len(present & accepted)
    n["returns_lost"] = len(lost)
    if lost:
        v.append(f"{len(lost)} accepted returns missing, e.g. {sorted(lost)[:3]}")
    # every return reached the services that keep a copy
    for schema, col in (("warehouse", "parcels"), ("refunds", "returns"), ("notify", "returns")):
        have = {str(r["return_id"]) for r in await _fetch(target.dsn, f"SELECT return_id FROM {schema}.{col}")}
        n[f"{schema}_{col}_known"] = len(have & accepted)
        missing = accepted - have
        if missing:
            v.append(f"{schema}: {len(missing)} accepted returns never arrived")

    # 2. money: one series per return at the gateway and in the ledger, never above paid_total
    ledger = await _fetch(
        target.dsn,
        """SELECT f.refund_id, f.return_id::text AS return_id, f.cause, f.amount, f.status, f.idempotency_key,
                  r.paid_total
             FROM refunds.refunds f JOIN refunds.returns r USING (return_id)""",
    )
    paid = {
        str(r["return_id"]): int(r["paid_total"])
        for r in await _fetch(target.dsn, "SELECT return_id, paid_total FROM refunds.returns")
    }
    by_return: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for r in ledger:
        by_return[r["return_id"]].append(r)
    over_ledger = [
        rid for rid, rows in by_return.items() if sum(x["amount"] for x in rows if x["status"] != "failed") > paid[rid]
    ]
    causes = Counter((r["return_id"], r["cause"]) for r in ledger)
    gw = await gateway_refunds(target.gateway_url, target.gateway_api_key, target.gateway_refunds_path)
    gw_by_return: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for g in gw:
        gw_by_return[str(g.get("metadata", {}).get("return_id"))].append(g)
    over_gateway = [rid for rid, rows in gw_by_return.items() if sum(x["amount"] for x in rows) > paid.get(rid, 0)]
    issued = Counter(r["return_id"] for r in ledger if r["status"] == "issued")
    mismatch = [rid for rid in set(issued) | set(gw_by_return) if issued.get(rid, 0) != len(gw_by_return.get(rid, []))]
    n["ledger_refunds"] = len(ledger)
    n["ledger_refunds_by_status"] = dict(Counter(r["status"] for r in ledger))
    n["returns_refunded"] = len(issued)
    n["gateway_refunds"] = len(gw)
    n["max_gateway_refunds_per_return"] = max((len(x) for x in gw_by_return.values()), default=0)
    n["max_ledger_refunds_per_return_and_cause"] = max(causes.values(), default=0)
    n["returns_over_paid_ledger"] = len(over_ledger)
    n["returns_over_paid_gateway"] = len(over_gateway)
    n["returns_gateway_vs_ledger_mismatch"] = len(mismatch)
    if over_ledger or over_gateway:
        v.append(f"refunds above paid_total: ledger {len(over_ledger)}, gateway {len(over_gateway)}")
    if mismatch:
        v.append(f"{len(mismatch)} returns where gateway refunds != issued ledger refunds, e.g. {mismatch[:3]}")
    if n["max_ledger_refunds_per_return_and_cause"] > 1:
        v.append("more than one ledger refund for one return and cause")

    # 3. SMS: at most one per (return, step), in the database and at the provider
    sent = await _fetch(
        target.dsn,
        "SELECT return_id::text AS return_id, step, count(*) AS n FROM notify.messages"
        " WHERE status = 'sent' GROUP BY 1, 2",
    )
    lines = sms_lines(target.sms_file)
    per_step = Counter((str(x.get("return_id")), x.get("step")) for x in lines)
    n["sms_sent_rows"] = sum(int(r["n"]) for r in sent)
    n["sms_provider_messages"] = len(lines)
    n["max_sms_per_return_step_db"] = max((int(r["n"]) for r in sent), default=0)
    n["max_sms_per_return_step_provider"] = max(per_step.values(), default=0)
    n["sms_by_status"] = {
        r["status"]: int(r["n"])
        for r in await _fetch(target.dsn, "SELECT status, count(*) AS n FROM notify.messages GROUP BY 1")
    }
    # A notify process killed after the provider accepted a message and before its outcome committed
    # leaves it `sending`; after the lease it is sent again (documented at-least-once at the provider
    # boundary: SMS APIs take no idempotency key). Such a copy is reported, not hidden; a duplicate
    # that no crash of notify explains is a violation.
    crashes = sorted(datetime.fromisoformat(t) for t in notify_crashes or [])
    sends: dict[tuple[str, Any], list[datetime]] = defaultdict(list)
    for x in lines:
        sends[(str(x.get("return_id")), x.get("step"))].append(datetime.fromisoformat(x["at"]))
    dup = [k for k, c in per_step.items() if c > 1]
    explained = [
        k for k in dup if (ts := sorted(sends[k])) and any(ts[0] <= c <= ts[-1] for c in crashes) and len(ts) == 2
    ]
    unexplained = [k for k in dup if k not in explained]
    n["sms_resent_after_notify_kill"] = len(explained)
    n["sms_duplicates_unexplained"] = len(unexplained)
    if n["max_sms_per_return_step_db"] > 1 or unexplained:
        v.append(f"SMS sent more than once for {len(unexplained)} (return, step) pairs, e.g. {unexplained[:3]}")

    # 4. the dual-check log verifies
    verified = await audit_verify(target.audit_url)
    n["audit_verify"] = {k: verified[k] for k in verified if k in ("ok", "entries", "checked", "http_status")}
    n["audit_log_entries"] = int((await _fetch(target.dsn, "SELECT count(*) AS n FROM audit.audit_log"))[0]["n"])
    if verified.get("http_status") != 200 or verified.get("ok") is False:
        v.append(f"audit chain does not verify: {verified}")

    # 5b. exchanges: at most one replacement shipment per exchange line, never more than it asked for
    shipped = await _fetch(
        target.dsn,
        """SELECT x.return_id::text AS return_id, l->>'sku' AS sku, count(*) AS n, sum((l->>'qty')::int) AS qty
             FROM warehouse.replacements x, jsonb_array_elements(x.lines) l GROUP BY 1, 2""",
    )
    wanted = {
        (r["return_id"], r["sku"]): int(r["qty"])
        for r in await _fetch(
            target.dsn,
            """SELECT return_id::text AS return_id, COALESCE(replacement_sku, sku) AS sku, sum(qty) AS qty
                 FROM warehouse.parcel_lines GROUP BY 1, 2""",
        )
    }
    published = await _fetch(
        target.dsn,
        """SELECT return_id::text AS return_id, count(*) AS n FROM returns.timeline
            WHERE type = 'exchange.replacement_shipped' GROUP BY 1""",
    )
    twice = [(r["return_id"], r["sku"]) for r in shipped if int(r["n"]) > 1]
    over = [(r["return_id"], r["sku"]) for r in shipped if int(r["qty"]) > wanted.get((r["return_id"], r["sku"]), 0)]
    events_twice = [r["return_id"] for r in published if int(r["n"]) > 1]
    n["replacement_shipments"] = len({r["return_id"] for r in shipped})
    n["replacement_lines_shipped"] = len(shipped)
    n["max_replacement_shipments_per_exchange_line"] = max((int(r["n"]) for r in shipped), default=0)
    n["max_replacement_shipped_events_per_exchange"] = max((int(r["n"]) for r in published), default=0)
    delivered = await _fetch(
        target.dsn, "SELECT count(*) AS n FROM warehouse.replacements WHERE delivered_at IS NOT NULL"
    )
    n["replacements_delivered"] = int(delivered[0]["n"])
    if twice or events_twice:
        v.append(f"replacement shipped more than once: {len(twice)} lines, {len(events_twice)} exchanges")
    if over:
        v.append(f"{len(over)} exchange lines shipped more than they asked for, e.g. {over[:3]}")

    # 5. every poison message in its DLQ (table and topic), with headers
    groups = consumer_groups()
    tables = await dead_lettered(target.dsn, poisons)
    topics = await dlq_records(target.bootstrap, sorted({dlq_topic(p.topic) for p in poisons}))
    in_tables = in_topics = 0
    for p in poisons:
        want = {g for g, ts in groups.items() if p.topic in ts}
        got = tables.get(p.value, set())
        if want <= got:
            in_tables += 1
        else:
            v.append(f"poison on {p.topic} not dead-lettered by {sorted(want - got)}")
        hdrs = topics.get(p.value, [])
        good = [h for h in hdrs if all(k in h for k in DLQ_HEADERS) and h[HEADER_DLQ_TOPIC] == p.topic]
        if good:
            in_topics += 1
        else:
            v.append(f"poison on {p.topic} not in {dlq_topic(p.topic)} with headers (seen {len(hdrs)})")
    n["poison_injected"] = len(poisons)
    n["poison_in_dead_letters_tables"] = in_tables
    n["poison_in_dlq_topics_with_headers"] = in_topics
    total = 0
    other: list[tuple[str, str, str, str]] = []
    for s in SERVICES:
        total += int((await _fetch(target.dsn, f"SELECT count(*) AS n FROM {s}.dead_letters"))[0]["n"])
        for r in await _fetch(
            target.dsn,
            f"SELECT topic, error_type, error_message FROM {s}.dead_letters WHERE NOT (value = ANY($1::bytea[]))",
            [p.value for p in poisons],
        ):
            other.append((s, r["topic"], r["error_type"], r["error_message"][:200]))
    n["dead_letters_total"] = total
    n["dead_letters_not_poison"] = len(other)
    if other:
        v.append(f"{len(other)} real events dead-lettered, e.g. {other[:3]}")
    return rep.as_dict()


def new_poison(topic: str) -> Poison:
    """A value no consumer can decode (truncated JSON), unique so it can be found again."""
    return Poison(topic, b'{"chaos_poison": "' + uuid.uuid4().hex.encode() + b'", "type": ')
