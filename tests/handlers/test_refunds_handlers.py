"""The refunds service's handlers against a real PostgreSQL, without a broker: the lifecycle consumer
(a return requested, the first moving scan and its early refund, the warehouse receipt, a cancellation,
people's commands on `refunds.commands` including those parked until their return arrives), a person's
decision as the HTTP API makes it, and the payment worker's step against the simulated gateway."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from contracts.events import (
    ClawbackFlagged,
    Customer,
    ExchangeOutOfStock,
    ParcelScanned,
    ReceivedLine,
    RefundBasis,
    RefundCommand,
    RefundDecided,
    RefundEscalated,
    RefundFailed,
    RefundIssued,
    ReplacementShipped,
    RequestedBy,
    ReturnCancelled,
    ReturnKind,
    ReturnLine,
    ReturnReceived,
    ReturnRequested,
    Role,
    ScanCode,
)
from returnflow import metrics
from returnflow.commands import signed_message
from returnflow.settings import Settings
from services.refunds import SPEC, handlers, repository
from services.refunds.dev import DEV_ROSTER, dev_signing_key
from services.refunds.dev.gateway_sim import serve_gateway
from services.refunds.rules import CommandIn
from services.refunds.settings import RefundsSettings
from tests.handlers.harness import Harness, delivery_of, harness

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
NOWHERE = "http://127.0.0.1:9"  # a gateway the lifecycle tests never call


@contextlib.asynccontextmanager
async def refunds(settings: Settings, gateway_url: str = NOWHERE, **over: Any) -> AsyncIterator[Harness]:
    own = RefundsSettings(gateway_url=gateway_url, gateway_timeout_s=0.5, gateway_backoff_s=0.01, **over)
    async with harness(SPEC, settings, own) as h:
        async with h.pool.acquire() as conn:
            await repository.seed_roster(conn, list(DEV_ROSTER))
        yield h


def requested(
    kind: ReturnKind = ReturnKind.return_and_refund,
    paid_total: int = 4000,
    qty: int = 2,
    unit_price: int = 2000,
    agent: str | None = None,
    return_id: uuid.UUID | None = None,
    customer: str = "c-1",
) -> ReturnRequested:
    return ReturnRequested(
        occurred_at=T0,
        return_id=return_id or uuid.uuid4(),
        correlation_id="corr-request",
        shop_id="shop-1",
        platform="generic",
        platform_return_id=f"p-{uuid.uuid4().hex[:8]}",
        order_id="order-1",
        kind=kind,
        customer=Customer(id=customer, phone="+8613800000000"),
        currency="CNY",
        paid_total=paid_total,
        lines=[ReturnLine(sku="SKU-1", qty=qty, unit_price=unit_price, reason="damaged")],
        requested_by=RequestedBy(type="agent", agent_id=agent) if agent else RequestedBy(type="customer"),
        requested_at=T0,
    )


def scanned(rid: uuid.UUID, code: ScanCode = ScanCode.picked_up, minutes: int = 60) -> ParcelScanned:
    return ParcelScanned(
        occurred_at=T0,
        return_id=rid,
        correlation_id="corr-scan",
        scan_id=f"scan-{uuid.uuid4().hex[:8]}",
        tracking_no="SF1",
        carrier="sf",
        scan_code=code,
        scanned_at=T0 + timedelta(minutes=minutes),
        first_moving=True,
    )


def received(rid: uuid.UUID, *conditions: str) -> ReturnReceived:
    """One unit of SKU-1 per condition."""
    return ReturnReceived(
        occurred_at=T0,
        return_id=rid,
        correlation_id="corr-receipt",
        receipt_id=f"rcpt-{uuid.uuid4().hex[:8]}",
        warehouse_id="WH-1",
        inspector_id="insp-1",
        received_at=T0 + timedelta(days=2),
        lines=[
            ReceivedLine(
                sku="SKU-1",
                qty_requested=len(conditions),
                qty_received=1,
                unit_price=2000,
                condition=c,
                disposition="restock" if c == "as_described" else "quarantine",
            )
            for c in conditions
        ],
    )


def unsigned(rid: uuid.UUID, action: str, actor: str, amount: int | None = None) -> RefundCommand:
    return RefundCommand(
        occurred_at=T0, return_id=rid, correlation_id="corr-cmd", action=action, actor_id=actor, amount=amount
    )


def command(
    rid: uuid.UUID, action: str, actor: str, amount: int | None = None, signer: str | None = None
) -> RefundCommand:
    """A command signed with the development key of `signer` (by default the actor it names)."""
    return signed_message(unsigned(rid, action, actor, amount), dev_signing_key(signer or actor))


async def ledger(h: Harness, rid: uuid.UUID) -> list[dict[str, Any]]:
    rows = await h.pool.fetch(
        "SELECT cause, amount, basis, status, actor_id FROM refunds WHERE return_id = $1 ORDER BY created_at", rid
    )
    return [dict(r) for r in rows]


async def commands_log(h: Harness, rid: uuid.UUID) -> list[tuple[str, str, int | None]]:
    rows = await h.pool.fetch(
        "SELECT actor_id, status, http_status FROM commands WHERE return_id = $1 ORDER BY created_at", rid
    )
    return [(r["actor_id"], r["status"], r["http_status"]) for r in rows]


@contextlib.asynccontextmanager
async def gateway_faults(url: str, fault: dict[str, Any]) -> AsyncIterator[None]:
    async with httpx.AsyncClient(base_url=url) as client:
        await client.post("/_sim/faults", json=fault)
        try:
            yield
        finally:
            await client.delete("/_sim/faults")


# -- the lifecycle consumer ---------------------------------------------------------------------------------


async def test_a_moving_scan_refunds_early_once(handler_settings: Settings) -> None:
    ret = requested()
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [ret])
        assert await ledger(h, ret.return_id) == []
        scan = scanned(ret.return_id)
        await h.apply("lifecycle", [scan, scanned(ret.return_id, ScanCode.in_transit, minutes=90)])
        await h.apply("lifecycle", [scan, scanned(ret.return_id, ScanCode.delivered, minutes=600)])
        (decided,) = await h.published(RefundDecided)
        assert (decided.amount, decided.basis, decided.correlation_id) == (4000, RefundBasis.early_scan, "corr-scan")
        assert await ledger(h, ret.return_id) == [
            {"cause": "early_scan", "amount": 4000, "basis": "early_scan", "status": "pending", "actor_id": None}
        ]


async def test_a_scan_that_shows_no_movement_refunds_nothing(handler_settings: Settings) -> None:
    ret = requested()
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [ret, scanned(ret.return_id, ScanCode.accepted)])
        assert await ledger(h, ret.return_id) == [] and await h.published(RefundDecided) == []


async def test_a_scan_before_its_return_refunds_once_the_return_arrives(handler_settings: Settings) -> None:
    ret = requested()
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [scanned(ret.return_id)])
        assert await h.pool.fetchval("SELECT count(*) FROM returns") == 0
        await h.apply("lifecycle", [ret])
        (decided,) = await h.published(RefundDecided)
        assert decided.basis == RefundBasis.early_scan and decided.return_id == ret.return_id


async def test_above_the_early_refund_cap_the_receipt_refunds_what_came_back_as_described(
    handler_settings: Settings,
) -> None:
    ret = requested()
    async with refunds(handler_settings, early_refund_cap={"CNY": 1000}) as h:
        await h.apply("lifecycle", [ret, scanned(ret.return_id)])
        detail = await h.pool.fetchval("SELECT detail FROM decisions WHERE cause = 'early_scan'")
        assert "above the early-refund cap" in detail
        await h.apply("lifecycle", [received(ret.return_id, "as_described", "damaged")])
        (refund,) = await h.published(RefundDecided)
        assert (refund.amount, refund.basis) == (2000, RefundBasis.warehouse_receipt)
        (review,) = await h.published(RefundEscalated)  # the damaged unit: a person decides
        assert review.amount == 2000 and review.required_role == Role.agent and "damaged" in review.reason


async def test_goods_missing_after_an_early_refund_flag_a_clawback_never_a_charge(handler_settings: Settings) -> None:
    ret = requested()
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [ret, scanned(ret.return_id)])
        receipt = received(ret.return_id, "as_described", "wrong_item")
        await h.apply("lifecycle", [receipt])
        (flagged,) = await h.published(ClawbackFlagged)
        assert (flagged.amount, flagged.receipt_id) == (2000, receipt.receipt_id) and "wrong_item" in flagged.reason
        assert flagged.refund_id is not None
        assert [r["cause"] for r in await ledger(h, ret.return_id)] == ["early_scan"]
        (row,) = await h.pool.fetch("SELECT customer_key, amount FROM clawbacks")
        assert (row["customer_key"], row["amount"]) == ("shop-1:c-1", 2000)
        # the same customer's next parcel moves: no early refund now (0 clawbacks allowed in 90 days)
        nxt = requested()
        await h.apply("lifecycle", [nxt, scanned(nxt.return_id)])
        assert await ledger(h, nxt.return_id) == []


async def test_a_cancellation_after_an_early_refund_flags_a_clawback_and_closes_escalations(
    handler_settings: Settings,
) -> None:
    early, waiting = requested(), requested(kind=ReturnKind.refund_only, paid_total=5000, qty=1, unit_price=5000)
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [early, scanned(early.return_id), waiting])
        (esc,) = await h.published(RefundEscalated)
        assert esc.return_id == waiting.return_id
        await h.apply(
            "lifecycle",
            [
                ReturnCancelled(occurred_at=T0, return_id=r, correlation_id="c")
                for r in (early.return_id, waiting.return_id)
            ],
        )
        (flagged,) = await h.published(ClawbackFlagged)
        assert (flagged.return_id, flagged.amount) == (early.return_id, 4000) and "cancelled" in flagged.reason
        assert await h.pool.fetchval("SELECT status FROM escalations") == "cancelled"


async def test_a_refund_only_request_by_an_agent_within_authority_refunds_at_once(handler_settings: Settings) -> None:
    small = requested(kind=ReturnKind.refund_only, paid_total=1500, qty=1, unit_price=1500, agent="agent-amy")
    big = requested(kind=ReturnKind.refund_only, paid_total=3000, qty=1, unit_price=3000, agent="agent-amy")
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [small, big])
        (decided,) = await h.published(RefundDecided)
        assert (decided.return_id, decided.actor_id, decided.actor_role) == (small.return_id, "agent-amy", Role.agent)
        (esc,) = await h.published(RefundEscalated)
        assert (esc.return_id, esc.required_role, esc.requested_by) == (big.return_id, Role.supervisor, "agent-amy")


# -- people's commands ----------------------------------------------------------------------------------------


async def test_commands_approve_within_authority_and_refuse_unknown_actors(handler_settings: Settings) -> None:
    ret = requested(kind=ReturnKind.refund_only, paid_total=3000, qty=1, unit_price=3000)
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [ret])
        await h.apply("lifecycle", [command(ret.return_id, "approve", "agent-amy")])  # 30.00 is above an agent
        await h.apply("lifecycle", [command(ret.return_id, "approve", "nobody")])
        assert await ledger(h, ret.return_id) == []
        await h.apply("lifecycle", [command(ret.return_id, "approve", "sup-sam")])
        assert [(r["amount"], r["actor_id"]) for r in await ledger(h, ret.return_id)] == [(3000, "sup-sam")]
        assert await h.pool.fetchval("SELECT status FROM escalations") == "approved"
        assert await commands_log(h, ret.return_id) == [
            ("agent-amy", "done", 202),
            ("nobody", "done", 401),
            ("sup-sam", "done", 200),
        ]


def refused_count(reason: str) -> float:
    return metrics.COMMANDS_REFUSED.labels("refunds", reason)._value.get()


async def test_a_command_that_does_not_prove_its_actor_is_refused_recorded_and_never_executed(
    handler_settings: Settings,
) -> None:
    ret = requested(kind=ReturnKind.exchange, paid_total=50_000)
    rid = ret.return_id
    good = command(rid, "grant_free_refund", "owner-oz", 20_000)
    tampered = command(rid, "grant_free_refund", "owner-oz", 20_000).model_copy(update={"amount": 40_000})
    cases = {
        "unsigned": delivery_of(unsigned(rid, "grant_free_refund", "owner-oz", 20_000)),
        "bad_signature": delivery_of(command(rid, "grant_free_refund", "owner-oz", 20_000, signer="agent-amy")),
        "tampered": delivery_of(tampered, value=tampered.model_dump_json().encode()),
        "stale": delivery_of(
            command(rid, "grant_free_refund", "owner-oz", 20_000), timestamp=T0 + timedelta(minutes=6)
        ),
        "from_the_future": delivery_of(
            command(rid, "grant_free_refund", "owner-oz", 20_000), timestamp=T0 - timedelta(minutes=1)
        ),
    }
    before = {r: refused_count(r) for r in ("unsigned", "bad_signature", "stale", "from_the_future")}
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [ret])
        for d in cases.values():
            await h.apply("lifecycle", [d])
        assert await ledger(h, rid) == []
        assert await h.published(RefundDecided) == [] and await h.published(RefundEscalated) == []
        rows = await h.pool.fetch(
            "SELECT http_status, result, message FROM commands WHERE return_id = $1 ORDER BY created_at", rid
        )
        assert [(r["http_status"], r["result"]) for r in rows] == [(401, "refused")] * 5
        reasons = [r["message"].split(" ")[2] for r in rows]
        assert reasons == ["unsigned", "bad_signature", "bad_signature", "stale", "from_the_future"]
        assert refused_count("bad_signature") - before["bad_signature"] == 2
        for r in ("unsigned", "stale", "from_the_future"):
            assert refused_count(r) - before[r] == 1
        # the one that proves its actor, fresh (a backlog read 5 minutes later still counts), takes effect
        await h.apply("lifecycle", [delivery_of(good, timestamp=T0 + timedelta(minutes=5))])
        assert [(r["amount"], r["actor_id"]) for r in await ledger(h, rid)] == [(20_000, "owner-oz")]


async def test_an_actor_without_a_key_on_file_cannot_command_over_kafka(handler_settings: Settings) -> None:
    ret = requested(kind=ReturnKind.exchange, paid_total=5000)
    async with refunds(handler_settings) as h:
        async with h.pool.acquire() as conn:
            await conn.execute("UPDATE roster SET public_key = NULL WHERE actor_id = 'owner-oz'")
        await h.apply("lifecycle", [ret, command(ret.return_id, "grant_free_refund", "owner-oz", 500)])
        assert await ledger(h, ret.return_id) == []
        assert "unknown_actor" in await h.pool.fetchval("SELECT message FROM commands")


async def test_a_command_before_its_return_is_parked_then_applied_when_it_arrives(handler_settings: Settings) -> None:
    ret = requested(kind=ReturnKind.exchange, paid_total=5000)
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [command(ret.return_id, "grant_free_refund", "agent-amy", 500)])
        assert await commands_log(h, ret.return_id) == [("agent-amy", "parked", 202)]
        await h.apply("lifecycle", [ret])
        (decided,) = await h.published(RefundDecided)
        assert (decided.amount, decided.basis, decided.actor_id) == (500, RefundBasis.agent_authority, "agent-amy")
        assert await commands_log(h, ret.return_id) == [("agent-amy", "done", 200)]


async def test_a_decision_over_http_answers_a_retry_with_the_first_answer(handler_settings: Settings) -> None:
    ret = requested(kind=ReturnKind.exchange, paid_total=5000)
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [ret])

        def grant(amount: int, key: str | None) -> CommandIn:
            cid = str(uuid.uuid4())
            return CommandIn(cid, ret.return_id, "http", "agent-amy", "grant_free_refund", amount, None, "c", key)

        first = await handlers.decide(h.ctx, grant(500, "agent-amy:click-1"))
        again = await handlers.decide(h.ctx, grant(500, "agent-amy:click-1"))
        assert (first.status, first.result) == (200, "refunded")
        assert (again.status, again.result, again.message, again.amount) == (200, "refunded", first.message, 500)
        above = await handlers.decide(h.ctx, grant(2000, None))  # 25.00 in all
        assert (above.status, above.required_role) == (202, Role.supervisor)
        assert [r["amount"] for r in await ledger(h, ret.return_id)] == [500]


def http_command(
    rid: uuid.UUID, action: str, actor: str, amount: int | None = None, key: str | None = None
) -> CommandIn:
    """A decision as the HTTP API makes it (a fresh command id per request, the key scoped to the actor)."""
    return CommandIn(str(uuid.uuid4()), rid, "http", actor, action, amount, None, "corr-http", key)


async def test_a_decision_over_http_before_its_return_waits_for_it_and_a_retry_gets_the_final_answer(
    handler_settings: Settings,
) -> None:
    ret = requested(kind=ReturnKind.exchange, paid_total=5000)
    grant = http_command(ret.return_id, "grant_free_refund", "agent-amy", 500, "agent-amy:early-1")
    async with refunds(handler_settings) as h:
        first = await handlers.decide(h.ctx, grant)
        assert (first.status, first.result) == (202, "parked")
        retry = await handlers.decide(h.ctx, replace(grant, command_id=str(uuid.uuid4())))
        assert (retry.status, retry.result) == (202, "parked")  # never a stored 404
        assert await commands_log(h, ret.return_id) == [("agent-amy", "parked", 202)]
        await h.apply("lifecycle", [ret])
        (decided,) = await h.published(RefundDecided)
        assert (decided.amount, decided.actor_id) == (500, "agent-amy")
        after = await handlers.decide(h.ctx, replace(grant, command_id=str(uuid.uuid4())))
        assert (after.status, after.result, after.amount) == (200, "refunded", 500)
        assert [r["amount"] for r in await ledger(h, ret.return_id)] == [500]


async def test_concurrent_decisions_with_one_key_get_one_answer(handler_settings: Settings) -> None:
    ret = requested(kind=ReturnKind.exchange, paid_total=5000)
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [ret])
        escalated = await handlers.decide(h.ctx, http_command(ret.return_id, "grant_free_refund", "agent-amy", 3000))
        assert escalated.status == 202 and escalated.result == "escalated"
        approve = http_command(ret.return_id, "approve", "sup-sam", key="sup-sam:click-1")
        answers = await asyncio.gather(
            *(handlers.decide(h.ctx, replace(approve, command_id=str(uuid.uuid4()))) for _ in range(4))
        )
        assert {(o.status, o.result, o.message, o.amount) for o in answers} == {
            (200, "refunded", "escalated refund approved", 3000)
        }
        assert [r["amount"] for r in await ledger(h, ret.return_id)] == [3000]
        # the same for a return not known yet: one parked command, the same answer four times
        early = http_command(uuid.uuid4(), "grant_free_refund", "agent-amy", 500, "agent-amy:early-2")
        answers = await asyncio.gather(
            *(handlers.decide(h.ctx, replace(early, command_id=str(uuid.uuid4()))) for _ in range(4))
        )
        assert {(o.status, o.result) for o in answers} == {(202, "parked")}
        assert len(await commands_log(h, early.return_id)) == 1


async def test_a_key_used_again_for_another_request_is_refused_naming_what_differs(
    handler_settings: Settings,
) -> None:
    ret = requested(kind=ReturnKind.exchange, paid_total=5000)
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [ret])
        first = await handlers.decide(
            h.ctx, http_command(ret.return_id, "grant_free_refund", "agent-amy", 500, "agent-amy:k")
        )
        assert first.status == 200
        other = await handlers.decide(
            h.ctx, http_command(ret.return_id, "grant_free_refund", "agent-amy", 700, "agent-amy:k")
        )
        assert (other.status, other.field) == (422, "Idempotency-Key") and "amount" in other.message
        elsewhere = await handlers.decide(
            h.ctx, http_command(uuid.uuid4(), "grant_free_refund", "agent-amy", 500, "agent-amy:k")
        )
        assert elsewhere.status == 422 and "return_id" in elsewhere.message
        assert [r["amount"] for r in await ledger(h, ret.return_id)] == [500]


# -- the payment worker -----------------------------------------------------------------------------------


async def test_the_payment_step_pays_a_due_refund_once(handler_settings: Settings) -> None:
    ret = requested()
    async with serve_gateway() as url, refunds(handler_settings, url) as h:
        assert await handlers.pay_due_refunds(h.ctx) is None  # nothing pending
        await h.apply("lifecycle", [ret, scanned(ret.return_id)])
        assert not await handlers.nothing_to_pay(h.ctx)  # the idle barrier waits for this payment
        assert await handlers.pay_due_refunds(h.ctx) == 0
        assert await handlers.pay_due_refunds(h.ctx) is None
        assert await handlers.nothing_to_pay(h.ctx)
        (issued,) = await h.published(RefundIssued)
        assert (issued.amount, issued.basis) == (4000, RefundBasis.early_scan) and issued.gateway_reference
        assert [r["status"] for r in await ledger(h, ret.return_id)] == ["issued"]


async def test_a_declined_refund_fails_for_good_and_releases_its_amount(handler_settings: Settings) -> None:
    ret = requested()
    async with serve_gateway() as url, refunds(handler_settings, url) as h:
        await h.apply("lifecycle", [ret, scanned(ret.return_id)])
        async with gateway_faults(url, {"mode": "decline"}):
            assert await handlers.pay_due_refunds(h.ctx) == 0
        (failed,) = await h.published(RefundFailed)
        assert failed.retryable is False and "402" in failed.error
        assert await h.pool.fetchval("SELECT reserved FROM returns") == 0
        assert await handlers.pay_due_refunds(h.ctx) is None  # a person decides what next


async def test_an_unknown_outcome_is_asked_again_later_with_the_same_key(handler_settings: Settings) -> None:
    ret = requested()
    async with serve_gateway() as url, refunds(handler_settings, url, gateway_attempts=2, payment_retry_base_s=60) as h:
        await h.apply("lifecycle", [ret, scanned(ret.return_id)])
        async with gateway_faults(url, {"mode": "error", "status": 503, "count": 2}):
            assert await handlers.pay_due_refunds(h.ctx) == 0
        (failed,) = await h.published(RefundFailed)
        assert failed.retryable is True and failed.attempts == 1
        # scheduled again later, with a jittered backoff (at least half the base); nothing is due meanwhile
        delay = await h.pool.fetchval(
            "SELECT EXTRACT(EPOCH FROM next_attempt_at - $1::timestamptz) FROM refunds", failed.occurred_at
        )
        assert delay >= 30
        wait = await handlers.pay_due_refunds(h.ctx)
        assert wait is not None and wait > 0
        await h.pool.execute("UPDATE refunds SET next_attempt_at = now()")
        assert await handlers.pay_due_refunds(h.ctx) == 0
        (issued,) = await h.published(RefundIssued)
        assert issued.refund_id == failed.refund_id


async def test_an_exchange_converts_to_a_refund_until_its_replacement_ships(handler_settings: Settings) -> None:
    stock_out, shipped_first = requested(kind=ReturnKind.exchange), requested(kind=ReturnKind.exchange)
    shipped = ReplacementShipped(
        occurred_at=T0,
        return_id=shipped_first.return_id,
        correlation_id="corr-ship",
        shipment_id="pack-1",
        warehouse_id="WH-1",
        carrier="sf",
        tracking_no="SFOUT1",
        lines=[{"sku": "SKU-1", "qty": 2}],
        shipped_by="packer-li",
        shipped_at=T0,
    )
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [shipped])  # before its return: kept
        await h.apply("lifecycle", [stock_out, shipped_first])
        await h.apply(
            "lifecycle", [received(r.return_id, "as_described", "as_described") for r in (stock_out, shipped_first)]
        )
        converted = await handlers.decide(h.ctx, http_command(stock_out.return_id, "convert_to_refund", "sup-sam"))
        assert (converted.status, converted.result, converted.amount) == (200, "refunded", 4000)
        (decided,) = [e for e in await h.published(RefundDecided) if e.return_id == stock_out.return_id]
        assert decided.basis == RefundBasis.exchange_conversion and decided.actor_id == "sup-sam"
        late = await handlers.decide(h.ctx, http_command(shipped_first.return_id, "convert_to_refund", "sup-sam"))
        assert (late.status, late.message) == (
            409,
            "the exchange's replacement already shipped: it is not converted to a refund",
        )
        assert await ledger(h, shipped_first.return_id) == []


async def test_an_exchange_out_of_stock_waits_in_the_peoples_queue_and_approval_converts_it(
    handler_settings: Settings,
) -> None:
    ret = requested(kind=ReturnKind.exchange)
    stock_out = ExchangeOutOfStock(
        occurred_at=T0,
        return_id=ret.return_id,
        correlation_id="c",
        skus=["SKU-1"],
        warehouse_id="WH-1",
        reported_by="p",
    )
    async with refunds(handler_settings) as h:
        await h.apply("lifecycle", [stock_out])  # before its return: kept
        await h.apply("lifecycle", [ret, received(ret.return_id, "as_described", "as_described"), stock_out])
        (esc,) = await h.published(RefundEscalated)
        assert (esc.basis, esc.amount, esc.required_role) == (RefundBasis.exchange_conversion, 4000, Role.supervisor)
        queue = await h.pool.fetch("SELECT return_id FROM escalations WHERE status = 'open'")
        assert [r["return_id"] for r in queue] == [ret.return_id]
        approved = await handlers.decide(h.ctx, http_command(ret.return_id, "approve", "sup-sam"))
        assert (approved.status, approved.amount) == (200, 4000)
        (decided,) = await h.published(RefundDecided)
        assert decided.basis == RefundBasis.exchange_conversion
