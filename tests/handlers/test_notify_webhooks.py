"""notify's merchant webhooks against a real PostgreSQL, without a broker: the lifecycle consumer records one
delivery per (endpoint, event) in the event's transaction — for the endpoints of the return's shop that take
the event's type, none for a duplicate, none for a shop without endpoints — and news that comes before its
return's request waits for it."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from contracts.events import RefundFailed
from returnflow.settings import Settings
from services.notify import SPEC, webhook_sender
from services.notify import webhook_repository as repo
from services.notify.settings import NotifySettings
from services.notify.webhook_rules import News
from tests.handlers.harness import Harness, harness
from tests.integration.merchant_receiver import MerchantReceiver, serve_receiver
from tests.integration.notify_support import escalated, issued, received, requested

SHOPS = """
shops:
  shop-1:
    webhooks:
      - {url: "http://127.0.0.1:9/all", secret: whsec_c2VjcmV0LWtleS1mb3ItYWxs}
      - {url: "http://127.0.0.1:9/money", secret: plain-secret, events: [refund.paid, refund.failed]}
  shop-2: {name: Quiet Shop}
"""


def settings_with_shops(settings: Settings, tmp_path: Path, text: str = SHOPS) -> Settings:
    path = tmp_path / "shops.yaml"
    path.write_text(text)
    return settings.model_copy(update={"shops_file": path})


async def deliveries(h: Harness, return_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await h.pool.fetch(
        "SELECT url, type, webhook_id, event_id, body, status, shop_id FROM webhook_deliveries "
        "WHERE return_id = $1 ORDER BY id",
        return_id,
    )
    return [dict(r) for r in rows]


def refund_failed(rid: uuid.UUID) -> RefundFailed:
    return RefundFailed(
        occurred_at=datetime.now(UTC),
        return_id=rid,
        correlation_id="corr-fail",
        refund_id="rf-1",
        amount=5000,
        currency="CNY",
        error="card_declined",
        retryable=False,
    )


async def test_lifecycle_events_record_one_delivery_per_subscribed_endpoint(
    handler_settings: Settings, tmp_path: Path
) -> None:
    async with harness(SPEC, settings_with_shops(handler_settings, tmp_path)) as h:
        req = requested()
        rid = req.return_id
        await h.apply("lifecycle", [req])
        got = await deliveries(h, rid)
        assert [(d["url"], d["type"]) for d in got] == [("http://127.0.0.1:9/all", "return.requested")]

        paid = issued(rid)
        await h.apply("lifecycle", [received(rid), paid, escalated(rid), refund_failed(rid)])
        got = await deliveries(h, rid)
        by_url: dict[str, list[str]] = {}
        for d in got:
            by_url.setdefault(d["url"].rsplit("/", 1)[1], []).append(d["type"])
        assert sorted(by_url["all"]) == sorted(
            ["return.requested", "return.received", "refund.paid", "return.needs_person", "refund.failed"]
        )
        assert sorted(by_url["money"]) == ["refund.failed", "refund.paid"]
        assert all(d["status"] == "pending" and d["shop_id"] == "shop-1" for d in got)

        # one webhook-id per event, the same on each endpoint; the payload as documented, no phone number
        paid_rows = [d for d in got if d["type"] == "refund.paid"]
        assert {d["webhook_id"] for d in paid_rows} == {f"msg_{paid.event_id.hex}"}
        body = orjson.loads(bytes(paid_rows[0]["body"]))
        assert body["type"] == "refund.paid" and body["version"] == 1
        assert body["data"] == {
            "shop_id": "shop-1",
            "return_id": str(rid),
            "platform_return_id": req.platform_return_id,
            "order_id": req.order_id,
            "kind": "return_and_refund",
            "status": "refunded",
            "refund_id": paid.refund_id,
            "basis": "warehouse_receipt",
            "amount": 5000,
            "currency": "CNY",
        }
        assert datetime.fromisoformat(body["timestamp"]) == paid.occurred_at
        assert all(req.customer.phone.encode() not in bytes(d["body"]) for d in got)

        # the same event again (redelivered, replayed from the DLQ): no second delivery
        await h.apply("lifecycle", [paid])
        await h.pool.execute("DELETE FROM processed_events")  # even past the consumer's own dedupe
        await h.apply("lifecycle", [paid, received(rid)])
        after = await deliveries(h, rid)
        assert len(after) == len(got) + 1  # only the new return.received (a new event id) was added


async def test_a_shop_without_endpoints_gets_no_delivery(handler_settings: Settings, tmp_path: Path) -> None:
    async with harness(SPEC, settings_with_shops(handler_settings, tmp_path)) as h:
        quiet = requested().model_copy(update={"shop_id": "shop-2"})
        unlisted = requested().model_copy(update={"shop_id": "shop-9"})
        await h.apply("lifecycle", [quiet, unlisted, issued(quiet.return_id), issued(unlisted.return_id)])
        assert await h.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
        assert await h.pool.fetchval("SELECT count(*) FROM webhook_waiting") == 0


async def test_no_shop_with_endpoints_records_nothing_at_all(handler_settings: Settings, tmp_path: Path) -> None:
    plain = settings_with_shops(handler_settings, tmp_path, "shops:\n  shop-1: {name: Maple}\n")
    async with harness(SPEC, plain) as h:
        rid = uuid.uuid4()
        await h.apply("lifecycle", [issued(rid)])  # before its request: not even kept waiting
        await h.apply("lifecycle", [requested(rid=rid)])
        assert await h.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
        assert await h.pool.fetchval("SELECT count(*) FROM webhook_waiting") == 0


async def test_news_before_the_request_waits_for_its_shop(handler_settings: Settings, tmp_path: Path) -> None:
    async with harness(SPEC, settings_with_shops(handler_settings, tmp_path)) as h:
        rid = uuid.uuid4()
        await h.apply("lifecycle", [issued(rid)])
        assert await deliveries(h, rid) == []
        assert await h.pool.fetchval("SELECT count(*) FROM webhook_waiting WHERE return_id = $1", rid) == 1
        await h.apply("lifecycle", [requested(rid=rid)])
        got = {(d["url"].rsplit("/", 1)[1], d["type"]) for d in await deliveries(h, rid)}
        assert got == {("all", "return.requested"), ("all", "refund.paid"), ("money", "refund.paid")}
        assert await h.pool.fetchval("SELECT count(*) FROM webhook_waiting") == 0


async def test_the_worker_sweeps_news_held_while_its_request_was_applied_in_parallel(
    handler_settings: Settings, tmp_path: Path
) -> None:
    """Two consumers, one applying the request and one a refund of the same return, each in its own
    transaction: the refund's news can be held after the request looked for it. The worker fans it out."""
    async with harness(SPEC, settings_with_shops(handler_settings, tmp_path)) as h:
        req = requested()
        await h.apply("lifecycle", [req])
        late = issued(req.return_id)
        news = News(late.event_id, late.return_id, "refund.paid", late.occurred_at, late.correlation_id, {"amount": 1})
        async with h.pool.acquire() as conn:
            await repo.hold_waiting(conn, [news])
        assert await h.ctx.webhooks.sweep() == 2  # both endpoints take refund.paid
        assert {d["type"] for d in await deliveries(h, req.return_id)} == {"return.requested", "refund.paid"}
        assert await h.ctx.webhooks.sweep() == 0


SECRET = "whsec_c2VjcmV0LWtleS1mb3ItYWxs"


async def worker_until(h: Harness, done: str, timeout_s: float = 15.0) -> dict[str, Any]:
    """Worker rounds, as its loop runs them, until the (one) delivery's status is `done`."""
    deadline = time.monotonic() + timeout_s
    while True:
        await h.ctx.webhooks.step()
        row = await h.pool.fetchrow("SELECT * FROM webhook_deliveries")
        if row is not None and row["status"] == done and not h.ctx.webhooks.inflight:
            return dict(row)
        assert time.monotonic() < deadline, f"delivery not {done} in time: {row and dict(row)}"
        await asyncio.sleep(0.02)


async def test_a_refused_delivery_is_retried_until_its_deadline_then_failed(
    handler_settings: Settings, tmp_path: Path
) -> None:
    receiver = MerchantReceiver(SECRET, fail_first=None, always=503)
    async with serve_receiver(receiver) as url:
        shops = f"shops:\n  shop-1:\n    webhooks: [{{url: '{url}/h', secret: {SECRET}}}]\n"
        fast = NotifySettings(webhook_retry_base_s=0.05, webhook_retry_max_s=0.1, webhook_give_up_after_s=0.5)
        async with harness(SPEC, settings_with_shops(handler_settings, tmp_path, shops), fast) as h:
            await h.apply("lifecycle", [requested()])
            row = await worker_until(h, "failed")
            assert row["attempts"] >= 3 and row["last_status"] == 503
            assert row["last_error"].startswith(f"gave up after {row['attempts']} attempts: HTTP 503")
            assert row["next_attempt_at"] is None and row["delivered_at"] is None
            assert len(receiver.received) == row["attempts"] and all(r.verified for r in receiver.received)
            assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
            assert await h.ctx.webhooks.idle()


async def test_a_delivery_to_an_endpoint_taken_out_of_the_shops_file_fails_unsent(
    handler_settings: Settings, tmp_path: Path
) -> None:
    receiver = MerchantReceiver(SECRET, fail_first=None)
    async with serve_receiver(receiver) as url:
        shops = f"shops:\n  shop-1:\n    webhooks: [{{url: '{url}/h', secret: {SECRET}}}]\n"
        async with harness(SPEC, settings_with_shops(handler_settings, tmp_path, shops)) as h:
            await h.apply("lifecycle", [requested()])
            assert h.rt.shops.shops["shop-1"].webhooks
            (tmp_path / "shops.yaml").write_text("shops:\n  shop-1: {name: Maple}\n")
            assert h.rt.shops.reload()
            row = await worker_until(h, "failed")
            assert row["last_error"] == "endpoint no longer in the shops file" and row["last_status"] is None
            assert receiver.received == []


async def test_housekeeping_forgets_old_finished_deliveries_and_news_whose_request_never_came(
    handler_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # on a machine booted 5 minutes ago (monotonic time counts from boot): a fresh sender's first round
    # housekeeps all the same — this failed a clean clone's CI run started a minute after boot
    monkeypatch.setattr(webhook_sender, "time", SimpleNamespace(monotonic=lambda: 300.0))
    async with harness(SPEC, settings_with_shops(handler_settings, tmp_path)) as h:
        old, fresh = requested(), requested()
        await h.apply("lifecycle", [old, fresh, issued(uuid.uuid4())])  # the refund's request never comes
        await h.pool.execute(
            "UPDATE webhook_deliveries SET status = 'delivered', created_at = now() - interval '31 days' "
            "WHERE return_id = $1",
            old.return_id,
        )
        await h.pool.execute("UPDATE webhook_waiting SET created_at = now() - interval '25 hours'")
        await h.ctx.webhooks.housekeeping()
        assert await deliveries(h, old.return_id) == []
        assert len(await deliveries(h, fresh.return_id)) == 1  # pending, and recent: kept
        assert await h.pool.fetchval("SELECT count(*) FROM webhook_waiting") == 0


async def test_the_backlog_gauges_count_deliveries_waiting_and_failing(
    handler_settings: Settings, tmp_path: Path
) -> None:
    from returnflow import backlogs
    from tests.handlers.test_backlogs import gauge

    async with harness(SPEC, settings_with_shops(handler_settings, tmp_path)) as h:
        await h.apply("lifecycle", [requested()])  # one delivery, to the endpoint taking every event
        assert await backlogs.refresh("notify", h.pool, SPEC.backlogs)
        assert gauge("notify", "webhooks_waiting")[0] == 1
        assert gauge("notify", "webhooks_failing")[0] == 0
        await h.pool.execute(
            "UPDATE webhook_deliveries SET attempts = 2, last_error = 'HTTP 503', created_at = now() - interval '2 hours'"
        )
        assert await backlogs.refresh("notify", h.pool, SPEC.backlogs)
        items, age = gauge("notify", "webhooks_failing")
        assert items == 1 and age is not None and age >= 7200
        await h.pool.execute("UPDATE webhook_deliveries SET status = 'delivered'")
        assert await backlogs.refresh("notify", h.pool, SPEC.backlogs)
        assert gauge("notify", "webhooks_waiting") == (0, 0) and gauge("notify", "webhooks_failing") == (0, 0)
