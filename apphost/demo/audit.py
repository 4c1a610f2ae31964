"""`make run`'s audit step: one verified movement and one discrepancy, then the chain verified.

The warehouse side normally comes from the warehouse service (its receipts publish
inventory.attestations). If, after a short wait, no warehouse attestation has reached the audit
service for the demo's return-and-refund, this step publishes stand-in warehouse attestations
itself through the broker (marked `demo-stand-in`), so the audit demo never depends on another
service's demo. The returns-team side is posted through the real HTTP API with a dev token.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from apphost.registry import base_url_for
from contracts.events import InventoryAttested, Movement
from returnflow.settings import Settings
from services.audit import dev as audit_dev
from services.audit.settings import AuditSettings

WAIT_FOR_WAREHOUSE_S = 6.0


async def _view(client: httpx.AsyncClient, base: str, rid: str) -> dict[str, Any]:
    r = await client.get(f"{base}/v1/audit/returns/{rid}")
    r.raise_for_status()
    view: dict[str, Any] = r.json()
    return view


def _open_warehouse_sides(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in view["sides"] if s["source"] == "warehouse" and s["outcome"] is None]


async def _wait_for_warehouse(client: httpx.AsyncClient, base: str, rid: str, want: int, wait_s: float) -> list[Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    sides: list[dict[str, Any]] = []
    while loop.time() < deadline:
        sides = _open_warehouse_sides(await _view(client, base, rid))
        if len(sides) >= want:
            break
        await asyncio.sleep(0.3)
    return sides


async def _publish_stand_in(settings: Settings, ret: dict[str, Any], skus: list[str]) -> None:
    """Stand-in for the warehouse service: its attestation of each line, published to the broker."""
    from aiokafka import AIOKafkaProducer

    from returnflow.outbox import event_record

    bootstrap = settings.kafka_bootstrap or f"{settings.host}:{settings.embedded_kafka_port}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n, line in enumerate(x for x in ret["lines"] if x["sku"] in skus):
            movement = Movement.destroy if n % 2 else Movement.restock
            e = InventoryAttested(
                occurred_at=datetime.now(UTC),
                return_id=uuid.UUID(ret["return_id"]),
                correlation_id=f"demo-{ret['return_id'][:8]}",
                attestation_id=f"demo-stand-in-{uuid.uuid4().hex[:8]}",
                source="warehouse",
                sku=line["sku"],
                movement=movement,
                quantity=line["qty"],
                attested_by="wh-demo-inspector",
                attested_at=datetime.now(UTC),
            )
            rec = event_record(e)
            await producer.send_and_wait(
                rec.topic, rec.value, key=rec.key, headers=[(k, v.encode()) for k, v in rec.headers.items()]
            )
            print(f"  (stand-in) warehouse attests {movement.value} {line['sku']} x{line['qty']}")
    finally:
        await producer.stop()


def returns_team_tokens() -> dict[str, str]:
    """The tokens the audit service accepts: RETURNFLOW_AUDIT_TOKENS when set (it overrides the dev
    fixtures, as it does for the service `returnflow up` starts), else the dev people's."""
    configured = AuditSettings.load().tokens
    if configured:
        return {person: secret.get_secret_value() for person, secret in configured.items()}
    return dict(audit_dev.DEV_TOKENS)


async def play(client: httpx.AsyncClient, settings: Settings, returns: list[dict[str, Any]]) -> None:
    base = base_url_for(settings, "audit")
    tokens = returns_team_tokens()
    if not tokens:
        print("  no returns-team tokens configured (RETURNFLOW_AUDIT_TOKENS); skipping the audit demo")
        return
    ret = next((r for r in returns if r["kind"] == "return_and_refund"), returns[0])
    rid = ret["return_id"]
    want = min(2, len(ret["lines"]))
    sides = await _wait_for_warehouse(client, base, rid, want, WAIT_FOR_WAREHOUSE_S)
    if len(sides) < want:
        have = {s["sku"] for s in sides}
        missing = [x["sku"] for x in ret["lines"] if x["sku"] not in have][: want - len(sides)]
        print(f"  no warehouse receipt for {rid} reached audit yet; publishing stand-in attestations")
        await _publish_stand_in(settings, ret, missing)
        sides = await _wait_for_warehouse(client, base, rid, want, 10.0)
    if not sides:
        print("  the audit service did not see any warehouse attestation; skipping")
        return
    person, token = next(iter(tokens.items()))
    auth = {"authorization": f"Bearer {token}"}
    for i, side in enumerate(sides[:2]):
        qty = side["quantity"] if i == 0 else side["quantity"] + 1  # the second count is off by one
        r = await client.post(
            f"{base}/v1/inventory/checks",
            json={
                "check_id": f"demo-{rid[:8]}-{i}",
                "return_id": rid,
                "sku": side["sku"],
                "movement": side["movement"],
                "quantity": qty,
                "note": "demo check",
            },
            headers=auth,
        )
        body = r.json()
        what = body.get("status")
        if body.get("reason"):
            what = f"{what} ({body['reason']})"
        print(
            f"  warehouse {side['movement']} {side['sku']} x{side['quantity']} by {side['person']}; "
            f"returns team ({person}) counts x{qty} -> {r.status_code} {what}"
        )
    print(f"    {base}/v1/audit/returns/{rid}")
    print(f"    {base}/v1/audit/discrepancies?status=open   (CSV: &format=csv)")
    print(f"    {base}/v1/audit/reconciliation?return_id={rid}")
    v = (await client.get(f"{base}/v1/audit/verify")).json()
    state = "intact" if v["ok"] else f"BROKEN at entry {v['first_bad_seq']}: {v['problem']}"
    print(f"  audit log {state}: {v['checked']} entries, head {v['head']['seq']} {v['head']['hash'][:16]}...")
    print("    returnflow audit verify   # recomputes the same chain from PostgreSQL")
