"""Shared pieces of the money-path tests: returns + warehouse + refunds services on the real broker and
PostgreSQL, the simulated gateway (or the local Stripe) on a free loopback port, signed scans and device
receipts."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from returnflow.service import ConsumerSpec
from returnflow.settings import Settings
from returnflow.signing import SIGNATURE_HEADER, sign
from services.refunds import SPEC as REFUNDS
from services.refunds import repository as refunds_repository
from services.refunds.dev import DEV_ROSTER
from services.refunds.dev.gateway_sim import serve_gateway
from services.refunds.dev.stripe_server import LocalStripe, serve_stripe
from services.refunds.settings import RefundsSettings
from services.returns import SPEC as RETURNS
from services.warehouse import SPEC as WAREHOUSE
from services.warehouse import dev as warehouse_dev
from tests.idle import wait_idle
from tests.kafkautil import wait_for
from tests.readers import READ
from tests.webhooks import return_body, signed

CARRIER_SECRET = b"carrier-secret"
STRIPE_KEY = "sk_test_money_path"
STRIPE_WEBHOOK_SECRET = "whsec_money_path"
DEVICE = {"authorization": f"Bearer {warehouse_dev.DEVICE_TOKEN}"}
TOKENS = {e.actor_id: e.token for e in DEV_ROSTER}


def auth(actor_id: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[actor_id]}"}


def refunds_settings(gateway_url: str, **over: Any) -> RefundsSettings:
    """The refunds service paying through the simulated gateway at `gateway_url`, with short waits."""
    short = {"gateway_timeout_s": 0.3, "gateway_backoff_s": 0.05, "payment_poll_s": 0.2, "payment_retry_max_s": 0.5}
    return RefundsSettings(gateway_url=gateway_url, **{**short, **over})


@dataclass
class Platform:
    settings: Settings
    gateway: httpx.AsyncClient
    returns: httpx.AsyncClient
    warehouse: httpx.AsyncClient
    refunds: list[httpx.AsyncClient]
    refunds_pool: Any
    warehouse_pool: Any
    running: list[Any] = field(default_factory=list)
    stripe: LocalStripe | None = None  # the local Stripe, when the refunds provider is `stripe`

    async def idle(self) -> None:
        """Every service consumed to the end, drained its outbox and has no payment due: nothing more comes."""
        await wait_idle(*self.running)

    async def new_return(self, **over: Any) -> uuid.UUID:
        raw, hdrs = signed(return_body(**over))
        r = await self.returns.post("/v1/webhooks/generic/returns", content=raw, headers=hdrs)
        assert r.status_code == 202, r.text
        return uuid.UUID(r.json()["return_id"])

    async def scan(
        self, tracking_no: str, code: str = "picked_up", at: datetime | None = None, carrier: str = "sf"
    ) -> httpx.Response:
        body = {
            "tracking_no": tracking_no,
            "scan_code": code,
            "scanned_at": (at or datetime(2026, 11, 22, 9, 0, tzinfo=UTC)).isoformat(),
            "location": "Hangzhou",
        }
        raw = orjson.dumps(body)
        hdrs = {"content-type": "application/json", SIGNATURE_HEADER: sign(CARRIER_SECRET, raw)}
        return await self.warehouse.post(f"/v1/webhooks/carriers/{carrier}/scans", content=raw, headers=hdrs)

    async def receipt(self, **body: Any) -> httpx.Response:
        body.setdefault("inspector_id", "insp-wang")
        if "return_id" in body:
            body["return_id"] = str(body["return_id"])
        return await self.warehouse.post("/v1/warehouse/receipts", json=body, headers=DEVICE)

    async def ledger(self, rid: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self.refunds_pool.fetch(
            "SELECT refund_id, cause, amount, basis, status, actor_id FROM refunds WHERE return_id = $1", rid
        )
        return [dict(r) for r in rows]

    async def wait_issued(self, rid: uuid.UUID, n: int = 1, timeout_s: float = 20) -> list[dict[str, Any]]:
        async def issued() -> list[dict[str, Any]] | None:
            rows = [r for r in await self.ledger(rid) if r["status"] == "issued"]
            return rows if len(rows) >= n else None

        result: list[dict[str, Any]] = await wait_for(issued, timeout_s)
        return result

    async def gateway_refunds(self, rid: uuid.UUID) -> list[dict[str, Any]]:
        data = (await self.gateway.get("/v1/refunds")).json()["data"]
        return [r for r in data if r["metadata"].get("return_id") == str(rid)]

    async def timeline(self, rid: uuid.UUID, types: list[str], timeout_s: float = 15) -> list[dict[str, Any]]:
        async def got() -> list[dict[str, Any]] | None:
            entries = (await self.returns.get(f"/v1/returns/{rid}/timeline")).json()["entries"]
            have = [e["type"] for e in entries]
            return entries if all(t in have for t in types) else None

        result: list[dict[str, Any]] = await wait_for(got, timeout_s)
        return result


@contextlib.asynccontextmanager
async def platform(
    settings: Settings, service_runner: Any, refunds_instances: int = 1, gateway: str = "simulated", **over: Any
) -> AsyncIterator[Platform]:
    """returns + warehouse + refunds (one or more instances) + the simulated gateway (or, `gateway="stripe"`,
    the local Stripe sending its webhooks to the first refunds instance), roster seeded.
    A second refunds instance consumes in its own consumer group, so both apply every event to the
    same database at the same time: a real race, not a partition hand-over. `over`: refunds settings."""
    async with contextlib.AsyncExitStack() as stack:
        stripe: LocalStripe | None = None
        gw_headers: dict[str, str] = {}
        if gateway == "stripe":
            # every payment the tests name exists at Stripe, with more than enough to refund
            stripe = await stack.enter_async_context(
                serve_stripe(STRIPE_KEY, STRIPE_WEBHOOK_SECRET, auto_charge_amount=10**9)
            )
            gw_url, gw_headers = stripe.url, {"authorization": f"Bearer {STRIPE_KEY}"}
            over = {
                "gateway": "stripe",
                "stripe_base_url": stripe.url,
                "stripe_api_key": STRIPE_KEY,
                "stripe_webhook_secret": STRIPE_WEBHOOK_SECRET,
                **over,
            }
        else:
            # the simulator; another provider (alipay) names its own local server in `over`
            gw_url = await stack.enter_async_context(serve_gateway())
            over = {"gateway": gateway, **over}
        s = settings
        # each service's own settings
        own = {REFUNDS.name: refunds_settings(gw_url, **over), WAREHOUSE.name: warehouse_dev.dev_settings()}
        specs = [RETURNS, WAREHOUSE, REFUNDS]
        for i in range(1, refunds_instances):
            specs.append(
                replace(
                    REFUNDS,
                    consumers=[ConsumerSpec(f"lifecycle-{i}", c.topics, apply=c.apply) for c in REFUNDS.consumers],
                )
            )
        # started side by side: each one's start is mostly waiting for its consumer group to form
        ret, wh, *refunds = await asyncio.gather(
            *(stack.enter_async_context(service_runner(x, s, own.get(x.name))) for x in specs)
        )
        pool = refunds[0].runtime.pool
        async with pool.acquire() as conn:
            await refunds_repository.seed_roster(conn, list(DEV_ROSTER))
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=u, timeout=10, headers=h))
            for u, h in [
                (gw_url, gw_headers),
                (ret.base_url, READ),
                (wh.base_url, READ),
                *((r.base_url, {}) for r in refunds),
            ]
        ]
        if stripe is not None:
            stripe.state.webhook_url = f"{refunds[0].base_url}/v1/webhooks/stripe/refunds"
        yield Platform(
            s, clients[0], clients[1], clients[2], clients[3:], pool, wh.runtime.pool, [ret, wh, *refunds], stripe
        )
