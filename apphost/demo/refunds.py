"""`make run`'s refunds step: the roster seeded with `returnflow roster seed`, then each money path on
a timeline — an early refund on a moving scan (and the clawback when goods turn out missing), a
receipt refund for the quantity received, a refund-only within an agent's authority, and an
escalation approved by a supervisor with a signed command on `refunds.commands`."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from apphost.registry import base_url_for
from returnflow.settings import Settings
from services.refunds.dev import DEV_ROSTER

TOKENS = {e.actor_id: e.token for e in DEV_ROSTER}
DEVICE = {"authorization": "Bearer dev-device-token-dock-1"}


def _auth(actor: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[actor]}"}


async def signed_approval(settings: Settings, return_id: str, actor: str, note: str) -> None:
    """What a person's Kafka tooling does: an approve command signed with their key (here the development
    key of a development actor), produced to refunds.commands."""
    from aiokafka import AIOKafkaProducer

    from apphost.ops import bootstrap_of
    from contracts.events import RefundCommand
    from returnflow.commands import signed_message
    from returnflow.outbox import event_record
    from services.refunds.dev import dev_signing_key

    cmd = RefundCommand(
        occurred_at=datetime.now(UTC),
        return_id=uuid.UUID(return_id),
        correlation_id=f"demo-{uuid.uuid4().hex[:8]}",
        action="approve",
        actor_id=actor,
        note=note,
    )
    rec = event_record(signed_message(cmd, dev_signing_key(actor)))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_of(settings), acks="all")
    await producer.start()
    try:
        headers = [(k, v.encode()) for k, v in rec.headers.items()]
        await producer.send_and_wait(rec.topic, rec.value, key=rec.key, headers=headers)
    finally:
        await producer.stop()


def _money(minor: int) -> str:
    return f"CNY {minor // 100}.{minor % 100:02d}"


async def _until(check: Callable[[], Awaitable[Any]], timeout_s: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        found = await check()
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.25)


async def seed_roster() -> None:
    print("  $ returnflow roster seed")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "apphost.cli", "roster", "seed", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    for line in out.decode().splitlines():
        print(f"    {line}")


async def play(client: httpx.AsyncClient, settings: Settings, returns: list[dict[str, Any]]) -> None:
    from apphost.demo import post_signed
    from apphost.demo.warehouse import post_scan

    refunds = base_url_for(settings, "refunds")
    wh = base_url_for(settings, "warehouse")
    await seed_roster()

    async def ledger(rid: str) -> dict[str, Any]:
        r = await client.get(f"{refunds}/v1/refunds/{rid}", headers=_auth("owner-oz"))
        return r.json() if r.status_code == 200 else {}

    async def issued(rid: str, n: int = 1) -> list[dict[str, Any]]:
        async def check() -> list[dict[str, Any]] | None:
            rows = [x for x in (await ledger(rid)).get("refunds", []) if x["status"] == "issued"]
            return rows if len(rows) >= n else None

        return list(await _until(check) or [])

    async def decide(rid: str, actor: str, body: dict[str, Any]) -> httpx.Response:
        r = await client.post(f"{refunds}/v1/refunds/{rid}/decisions", json=body, headers=_auth(actor))
        extra = f" needs a {r.json()['required_role']}" if r.json().get("required_role") else ""
        amount = f" {_money(body['amount'])}" if body.get("amount") else ""
        print(f"  {actor} {body['action']}{amount} -> {r.status_code} {r.json().get('result')}{extra}")
        return r

    async def new_return(n: int, kind: str, lines: list[dict[str, Any]], tracking: str | None = None) -> str:
        run = uuid.uuid4().hex[:6]
        body = {
            "platform_return_id": f"demo-{run}-{n}",
            "order_id": f"order-{run}-{n}",
            "shop_id": "demo-shop",
            "kind": kind,
            "currency": "CNY",
            "paid_total": sum(x["qty"] * x["unit_price"] for x in lines),
            "lines": lines,
            "tracking_no": tracking,
            "requested_at": datetime.now(UTC).isoformat(),
            "customer": {"id": f"cust-{n}", "phone": f"+861380000000{n}", "locale": "zh-CN"},
        }
        r = await post_signed(
            client,
            f"{base_url_for(settings, 'returns')}/v1/webhooks/generic/returns",
            body,
            settings.secrets_for("generic")[0],
        )
        rid: str = r.json()["return_id"]
        await _until(lambda: ledger(rid))
        return rid

    # 1. early refund on the first moving scan (the warehouse step's parcel), then a clawback
    jacket = next(r for r in returns if r["kind"] == "return_and_refund")
    rows = await issued(jacket["return_id"])
    for x in rows:
        print(f"  early refund on the moving scan: {_money(x['amount'])} paid ({x['basis']}), before any receipt")
    receipt = {
        "return_id": jacket["return_id"],
        "receipt_id": f"dock-1-{uuid.uuid4().hex[:8]}",
        "inspector_id": "insp-wang",
        "lines": [
            {"sku": "JACKET-M", "qty_received": 1, "condition": "as_described", "disposition": "restock"},
            {"sku": "SCARF-01", "qty_received": 1, "condition": "as_described", "disposition": "restock"},
            {"sku": "SCARF-01", "qty_received": 0, "condition": "missing"},
        ],
    }
    r = await client.post(f"{wh}/v1/warehouse/receipts", json=receipt, headers=DEVICE)
    print(f"  warehouse receipt: jacket + 1 of 2 scarves, 1 scarf missing -> {r.status_code}")

    async def clawback() -> list[dict[str, Any]]:
        return list((await ledger(jacket["return_id"])).get("clawbacks", []))

    for c in await _until(clawback) or []:
        print(f"  clawback flagged for a person: {_money(c['amount'])} — {c['reason']} (never charged automatically)")

    # 2. receipt refund for the quantity received (above the early-refund cap, so no early refund)
    serum = [{"sku": "SERUM-30ML", "qty": 2, "unit_price": 32_000, "reason": "allergy"}]
    tracking = f"YT{uuid.uuid4().hex[:10].upper()}"
    rid_serum = await new_return(4, "return_and_refund", serum, tracking)
    r = await post_scan(client, settings, tracking, "picked_up", datetime.now(UTC))
    print(
        f"  return {rid_serum[:8]}: 2 serums, CNY 640.00 — above the CNY 500.00 early-refund cap; "
        f"scan -> {r.status_code}"
    )
    r = await client.post(
        f"{wh}/v1/warehouse/receipts",
        headers=DEVICE,
        json={
            "tracking_no": tracking,
            "inspector_id": "insp-li",
            "lines": [
                {"sku": "SERUM-30ML", "qty_received": 1, "condition": "as_described", "disposition": "destroy"},
                {"sku": "SERUM-30ML", "qty_received": 0, "condition": "missing"},
            ],
        },
    )
    print(f"  warehouse receipt by tracking number: 1 of 2 serums (destroyed: cosmetics) -> {r.status_code}")
    for x in await issued(rid_serum):
        print(f"  receipt refund: {_money(x['amount'])} paid ({x['basis']}) — for the 1 unit received")

    # 3. refund-only within an agent's authority
    lipstick = next(r for r in returns if r["kind"] == "refund_only")
    await _until(lambda: ledger(lipstick["return_id"]))
    await decide(lipstick["return_id"], "agent-amy", {"action": "approve", "note": "broken in transit"})

    # 4. above an agent's authority: escalated, then a supervisor approves with a command on
    # refunds.commands, signed with the key the roster holds for them
    kit = [{"sku": "MAKEUP-KIT", "qty": 1, "unit_price": 4_500, "reason": "damaged"}]
    rid_kit = await new_return(5, "refund_only", kit)
    await decide(rid_kit, "agent-amy", {"action": "approve"})
    print(f"  sup-sam approves {rid_kit[:8]} with a signed command on refunds.commands (Ed25519, dev key)")
    await signed_approval(settings, rid_kit, "sup-sam", "approved by a supervisor")

    # 5. a goodwill free refund on the exchange, within an agent's authority
    shoes = next(r for r in returns if r["kind"] == "exchange")
    await decide(shoes["return_id"], "agent-bo", {"action": "grant_free_refund", "amount": 1_000, "note": "goodwill"})

    for rid in (lipstick["return_id"], rid_kit, shoes["return_id"]):
        await issued(rid)
    base = base_url_for(settings, "returns")
    for rid in (rid_serum, rid_kit):
        await asyncio.sleep(0.5)
        t = (await client.get(f"{base}/v1/returns/{rid}/timeline")).json()
        print(f"\n  return {rid}  status={t['status']}")
        for e in t["entries"]:
            print(f"    {e['occurred_at'][:19]}  {e['summary']}")
