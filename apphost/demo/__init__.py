"""`make run`'s demo: signed webhooks in, the timeline of each return out."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from apphost.registry import DEV_OPS_TOKEN, SERVICES, base_url_for
from apphost.stack import Stack
from returnflow.settings import Settings
from returnflow.signing import DELIVERY_HEADER, SIGNATURE_HEADER, sign

DemoStep = Callable[[httpx.AsyncClient, Settings, list[dict[str, Any]]], Awaitable[None]]


def _demo_step(service: str) -> DemoStep | None:
    """A service may add to the demo with `apphost/demo/<name>.py: async def play(client, settings, returns)`."""
    try:
        module = importlib.import_module(f"apphost.demo.{service}")
    except ModuleNotFoundError:
        return None
    step: DemoStep = module.play
    return step


def demo_returns(run: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()

    def body(
        n: int, kind: str, lines: list[dict[str, Any]], paid: int, locale: str, tz: str, phone: str
    ) -> dict[str, Any]:
        return {
            "platform_return_id": f"demo-{run}-{n}",
            "order_id": f"order-{run}-{n}",
            "shop_id": "demo-shop",
            "kind": kind,
            "currency": "CNY",
            "paid_total": paid,
            "lines": lines,
            "requested_at": now,
            "customer": {"id": f"cust-{n}", "phone": phone, "locale": locale, "timezone": tz},
            "requested_by": {"type": "customer"},
        }

    return [
        body(
            1,
            "refund_only",
            [{"sku": "LIPSTICK-01", "qty": 1, "unit_price": 1590, "reason": "damaged"}],
            1590,
            "zh-CN",
            "Asia/Shanghai",
            "+8613800000001",
        ),
        body(
            2,
            "return_and_refund",
            [
                {"sku": "JACKET-M", "qty": 1, "unit_price": 29900, "reason": "size_too_small"},
                {"sku": "SCARF-01", "qty": 2, "unit_price": 4500, "reason": "not_as_described", "note": "colour"},
            ],
            38900,
            "en",
            "Europe/London",
            "+447700900002",
        ),
        body(
            3,
            "exchange",
            [
                {
                    "sku": "SHOES-42",
                    "qty": 1,
                    "unit_price": 45900,
                    "reason": "size_too_big",
                    "replacement_sku": "SHOES-41",
                }
            ],
            45900,
            "es",
            "Europe/Madrid",
            "+34600000003",
        ),
    ]


async def post_signed(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], secret: bytes, delivery_id: str | None = None
) -> httpx.Response:
    raw = orjson.dumps(body)
    return await client.post(
        url,
        content=raw,
        headers={
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(secret, raw),
            DELIVERY_HEADER: delivery_id or str(uuid.uuid4()),
        },
    )


async def run_demo(stack: Stack) -> None:
    settings = stack.settings
    base = base_url_for(settings, "returns")
    secret = settings.secrets_for("generic")[0]
    run = uuid.uuid4().hex[:6]
    print("\ndemo: three signed return webhooks, one delivered twice, one invalid")
    ids: list[str] = []
    # the demo reads (timelines, parcels, SMS, audit) with the development ops token
    async with httpx.AsyncClient(timeout=10, headers={"authorization": f"Bearer {DEV_OPS_TOKEN}"}) as client:
        for body in demo_returns(run):
            delivery = str(uuid.uuid4())
            r = await post_signed(client, f"{base}/v1/webhooks/generic/returns", body, secret, delivery)
            print(f"  POST {body['kind']:<18} -> {r.status_code} {r.json()}")
            ids.append(r.json()["return_id"])
        again = await post_signed(client, f"{base}/v1/webhooks/generic/returns", demo_returns(run)[0], secret, delivery)
        print(f"  POST same delivery again -> {again.status_code} (duplicate: no second event)")
        bad = dict(demo_returns(run)[0], paid_total=-5, kind="swap")
        r = await post_signed(client, f"{base}/v1/webhooks/generic/returns", bad, secret)
        print(f"  POST invalid body        -> {r.status_code} {r.json()['fields']}")
        returns = [{"return_id": rid, **b} for rid, b in zip(ids, demo_returns(run), strict=True)]
        for name in SERVICES:
            step = _demo_step(name)
            if step is not None:
                print(f"\ndemo: {name}")
                await step(client, settings, returns)
        await asyncio.sleep(1.5)
        for rid in ids:
            t = (await client.get(f"{base}/v1/returns/{rid}/timeline")).json()
            print(f"\n  return {rid}  status={t['status']}")
            print(f"    {base}/v1/returns/{rid}/timeline")
            for e in t["entries"]:
                print(f"    {e['occurred_at'][:19]}  {e['summary']}")
    print()
