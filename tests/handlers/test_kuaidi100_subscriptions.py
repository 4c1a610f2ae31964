"""Kuaidi100 subscriptions, the warehouse's steps against a real PostgreSQL and the local Kuaidi100
(services/warehouse/dev/kuaidi100.py, over HTTP): each recorded tracking number subscribed once, with the
callback, salt and resultv2 the feed needs; Kuaidi100 busy -> asked again later; refused -> failed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import SecretStr

from contracts.events import TrackingRegistered
from services.warehouse import SPEC, dev, views
from services.warehouse.dev.kuaidi100 import serve_kuaidi100
from services.warehouse.handlers import subscribe_due
from tests.handlers.harness import harness

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
CALLBACK = "https://returns.example.com/v1/webhooks/couriers/kuaidi100"


def registered(tracking_no: str, carrier: str | None) -> TrackingRegistered:
    return TrackingRegistered(
        occurred_at=T0, return_id=uuid.uuid4(), correlation_id="corr-k", tracking_no=tracking_no, carrier=carrier
    )


async def test_each_tracking_number_is_subscribed_once_and_kuaidi100s_answers_are_kept(handler_settings):
    async with serve_kuaidi100({"k-live"}) as (url, sim):
        own = dev.dev_settings(
            kuaidi100_key=SecretStr("k-live"), kuaidi100_callback_url=CALLBACK, kuaidi100_poll_url=f"{url}/poll"
        )
        async with harness(SPEC, handler_settings, own) as h:
            sf, unknown, short = "SF1402918820461", "YT7514628834901", "SF12"
            await h.apply("lifecycle", [registered(unknown, None), registered(short, "sf")])
            assert await subscribe_due(h.ctx) == 0
            rows = await _rows(h)
            assert rows[unknown]["status"] == "subscribed" and rows[unknown]["last_error"] is None
            assert rows[short]["status"] == "failed" and rows[short]["last_error"] == "400 数据不完整"

            sf_registered = registered(sf, "sf")
            await h.apply("lifecycle", [sf_registered])
            await h.apply("lifecycle", [sf_registered])  # delivered again: still one subscription
            sim.busy = 1  # the next request is answered 502 (Kuaidi100 busy)
            assert await subscribe_due(h.ctx) == 0
            busy = (await _rows(h))[sf]
            assert busy["status"] == "pending" and busy["attempts"] == 1 and "502" in busy["last_error"]
            assert await _pending_backlog(h) == 1  # ops see it waiting (returnflow_backlog_items)
            assert await subscribe_due(h.ctx) > 20  # it waits 30 s before it is asked again
            await h.pool.execute("UPDATE kuaidi100_subscriptions SET next_attempt_at = now()")
            assert await subscribe_due(h.ctx) == 0
            assert {t: r["status"] for t, r in (await _rows(h)).items()} == {
                sf: "subscribed",
                unknown: "subscribed",
                short: "failed",
            }
            assert await subscribe_due(h.ctx) is None  # nothing pending any more
            assert await _pending_backlog(h) == 0

    assert sim.subscriptions[sf]["company"] == "shunfeng" and sim.subscriptions[sf]["key"] == "k-live"
    assert sim.subscriptions[sf]["parameters"] == {"callbackurl": CALLBACK, "salt": dev.KUAIDI100_SALT, "resultv2": "4"}
    assert sim.subscriptions[unknown]["parameters"]["autoCom"] == "1"  # no carrier: Kuaidi100 recognises it
    assert sim.requests == 4  # sf, unknown, short, then the busy one again


async def _pending_backlog(h) -> int:
    async with h.pool.acquire() as conn:
        found = {b.name: b.items for b in await views.backlogs(conn)}
    return found["kuaidi100_subscriptions_pending"]


async def _rows(h):
    rows = await h.pool.fetch("SELECT tracking_no, status, attempts, last_error FROM kuaidi100_subscriptions")
    return {r["tracking_no"]: dict(r) for r in rows}
