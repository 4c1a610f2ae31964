"""The audit service's handlers against a real PostgreSQL, without a broker: the inventory consumer
(warehouse attestations, returns-team checks, the returns they belong to), the checks intake that
POST /v1/inventory/checks uses, the deadline sweeper's step and resolution. Time passing is simulated
by moving recorded times back in the database, never by sleeping."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from contracts.events import (
    NO_RETURN,
    AuditAnchored,
    Customer,
    DiscrepancyFound,
    DiscrepancyResolved,
    InventoryAttested,
    InventoryCheck,
    Movement,
    MovementVerified,
    ReceivedLine,
    RequestedBy,
    ReturnLine,
    ReturnReceived,
    ReturnRequested,
)
from returnflow import metrics
from returnflow.commands import signed_message
from returnflow.settings import Settings
from services.audit import SPEC, handlers, views
from services.audit.dev import DEV_PUBLIC_KEYS, dev_signing_key
from services.audit.rules import Incoming, Refusal, Side
from services.audit.settings import AuditSettings
from tests.handlers.harness import Harness, delivery_of, harness

T0 = datetime.now(UTC).replace(microsecond=0)


def audit_settings(**over: Any) -> AuditSettings:
    base: dict[str, Any] = {
        "tokens": {"rt-lin": SecretStr("tok-lin")},
        "public_keys": DEV_PUBLIC_KEYS,
        "check_deadline_s": 3600.0,
        "settle_s": 60.0,
        "unknown_return_grace_s": 600.0,
        "anchor_file": "off",  # the anchor tests below give a file
    }
    return AuditSettings(**{**base, **over})


@pytest.fixture
async def h(handler_settings: Settings) -> AsyncIterator[Harness]:
    async with harness(SPEC, handler_settings, audit_settings()) as running:
        yield running


def requested(rid: uuid.UUID, lines: dict[str, int]) -> ReturnRequested:
    return ReturnRequested(
        occurred_at=T0,
        return_id=rid,
        correlation_id=f"corr-{rid.hex[:8]}",
        shop_id="shop-1",
        platform="generic",
        platform_return_id=f"pr-{rid.hex[:8]}",
        order_id="o-1",
        kind="return_and_refund",
        customer=Customer(id="c-1", phone="+8613812345678"),
        currency="CNY",
        paid_total=1000 * sum(lines.values()),
        lines=[ReturnLine(sku=s, qty=q, unit_price=1000, reason="size") for s, q in lines.items()],
        requested_by=RequestedBy(type="customer"),
        requested_at=T0,
    )


def received(rid: uuid.UUID, sku: str, qty: int, disposition: str) -> ReturnReceived:
    line = ReceivedLine(
        sku=sku, qty_requested=qty, qty_received=qty, unit_price=1000, condition="as_described", disposition=disposition
    )
    return ReturnReceived(
        occurred_at=T0,
        return_id=rid,
        correlation_id=f"corr-{rid.hex[:8]}",
        receipt_id=f"rcpt-{rid.hex[:8]}",
        warehouse_id="wh-1",
        inspector_id="wh-kim",
        received_at=T0,
        lines=[line],
    )


def attested(
    rid: uuid.UUID, sku: str, movement: str, qty: int, by: str = "wh-kim", aid: str | None = None, at: datetime = T0
) -> InventoryAttested:
    return InventoryAttested(
        occurred_at=T0,
        return_id=rid,
        correlation_id=f"corr-att-{rid.hex[:8]}",
        attestation_id=aid or f"att-{uuid.uuid4().hex[:10]}",
        source="warehouse",
        sku=sku,
        movement=Movement(movement),
        quantity=qty,
        attested_by=by,
        attested_at=at,
    )


def checked(
    rid: uuid.UUID,
    sku: str,
    movement: str,
    qty: int,
    by: str = "rt-ana",
    cid: str | None = None,
    at: datetime = T0,
    signer: str | None = None,
) -> InventoryCheck:
    """A returns-team check signed with the development key of `signer` (by default the person it names)."""
    check = unsigned_check(rid, sku, movement, qty, by, cid, at)
    return signed_message(check, dev_signing_key(signer or by.strip().lower()))


def unsigned_check(
    rid: uuid.UUID, sku: str, movement: str, qty: int, by: str = "rt-ana", cid: str | None = None, at: datetime = T0
) -> InventoryCheck:
    return InventoryCheck(
        occurred_at=T0,
        return_id=rid,
        correlation_id=f"corr-chk-{rid.hex[:8]}",
        check_id=cid or f"chk-{uuid.uuid4().hex[:10]}",
        sku=sku,
        movement=Movement(movement),
        quantity=qty,
        checked_by=by,
        checked_at=at,
    )


def http_check(rid: uuid.UUID, sku: str, movement: str, qty: int, check_id: str, by: str = "rt-lin") -> Incoming:
    side = Side("returns_team", check_id, rid, sku, Movement(movement), qty, by, T0, T0)
    return Incoming(side, "http", "corr-http", "counted on the shelf")


async def outcomes(h: Harness) -> dict[str, tuple[str | None, str | None]]:
    rows = await h.pool.fetch("SELECT key, outcome, reason FROM sides")
    return {r["key"]: (r["outcome"], r["reason"]) for r in rows}


async def age(h: Harness, by: timedelta) -> None:
    """As if `by` had passed since everything was recorded."""
    await h.pool.execute("UPDATE sides SET received_at = received_at - $1::interval", by)


# -- the inventory consumer ------------------------------------------------------------------------
async def test_warehouse_attestation_and_returns_team_check_make_a_verified_movement(h: Harness) -> None:
    rid = uuid.uuid4()
    await h.apply("inventory", [requested(rid, {"JACKET-M": 1}), received(rid, "JACKET-M", 1, "restock")])
    await h.apply("inventory", [attested(rid, "JACKET-M", "restock", 1, aid="att-1")])
    assert await outcomes(h) == {"warehouse:att-1": (None, None)}  # waits for its counterpart
    check = checked(rid, "JACKET-M", "restock", 1, cid="chk-1")
    await h.apply("inventory", [check, check])  # a duplicate in the batch is applied once
    await h.apply("inventory", [check.model_copy(update={"event_id": uuid.uuid4()})])  # re-sent: same side

    assert await outcomes(h) == {"warehouse:att-1": ("verified", None), "returns_team:chk-1": ("verified", None)}
    (verified,) = await h.published(MovementVerified)
    assert (verified.sku, verified.movement, verified.quantity) == ("JACKET-M", Movement.restock, 1)
    assert (verified.warehouse_attested_by, verified.returns_team_checked_by) == ("wh-kim", "rt-ana")
    assert verified.correlation_id == f"corr-chk-{rid.hex[:8]}"  # the side that completed the pair
    assert verified.audit_seq == 3 and verified.audit_hash and len(verified.audit_hash) == 64
    assert await h.published(DiscrepancyFound) == []
    (recon,) = await views.reconciliation(h.pool, return_id=rid)
    assert recon["received"] == 1 and recon["verified"]["restock"] == 1 and recon["unaccounted"] == 0
    result = await views.verify_log(h.pool)
    assert result.ok and result.checked == 3  # two sides recorded, one movement verified


async def test_a_check_that_does_not_prove_its_person_is_refused_kept_and_never_a_side(h: Harness) -> None:
    rid = uuid.uuid4()
    await h.apply("inventory", [requested(rid, {"RING-1": 1}), attested(rid, "RING-1", "restock", 1)])
    tampered = checked(rid, "RING-1", "restock", 1, cid="t").model_copy(update={"quantity": 3})
    cases = [
        delivery_of(unsigned_check(rid, "RING-1", "restock", 1, cid="u")),
        delivery_of(checked(rid, "RING-1", "restock", 1, cid="o", signer="rt-lin")),  # rt-lin signs as rt-ana
        delivery_of(tampered, value=tampered.model_dump_json().encode()),
        delivery_of(checked(rid, "RING-1", "restock", 1, cid="s"), timestamp=T0 + timedelta(seconds=301)),
        delivery_of(checked(rid, "RING-1", "restock", 1, cid="f"), timestamp=T0 - timedelta(seconds=31)),
        delivery_of(checked(rid, "RING-1", "restock", 1, by="rt-zed", cid="z")),  # no key on file
    ]
    before = metrics.COMMANDS_REFUSED.labels("audit", "bad_signature")._value.get()
    await h.apply("inventory", cases)
    assert await h.pool.fetchval("SELECT count(*) FROM sides WHERE source = 'returns_team'") == 0
    assert await h.published(MovementVerified) == [] and await h.published(DiscrepancyFound) == []
    view = await views.return_view(h.pool, rid)
    refused = {r["check_id"]: r["reason"] for r in view["refused_checks"]}
    assert refused == {
        "u": "unsigned",
        "o": "bad_signature",
        "t": "bad_signature",
        "s": "stale",
        "f": "from_the_future",
        "z": "unknown_actor",
    }
    assert metrics.COMMANDS_REFUSED.labels("audit", "bad_signature")._value.get() - before == 2
    # the person's own signed, fresh check is recorded and verifies the movement
    await h.apply("inventory", [checked(rid, "RING-1", "restock", 1, cid="ok")])
    assert len(await h.published(MovementVerified)) == 1


async def test_one_person_on_both_sides_is_same_person(h: Harness) -> None:
    rid = uuid.uuid4()
    await h.apply(
        "inventory",
        [requested(rid, {"CREAM-50": 1}), attested(rid, "CREAM-50", "destroy", 1, by="rt-lin", aid="a")],
    )
    await h.apply("inventory", [checked(rid, "CREAM-50", "destroy", 1, by=" RT-Lin ", cid="c")])
    (found,) = await h.published(DiscrepancyFound)
    assert found.reason == "same_person" and sorted(found.sides or []) == ["returns_team:c", "warehouse:a"]
    assert await h.published(MovementVerified) == []


async def test_counts_that_differ_are_a_quantity_mismatch(h: Harness) -> None:
    rid = uuid.uuid4()
    await h.apply("inventory", [requested(rid, {"SCARF-01": 2}), attested(rid, "SCARF-01", "restock", 2)])
    await h.apply("inventory", [checked(rid, "SCARF-01", "restock", 1)])
    (found,) = await h.published(DiscrepancyFound)
    assert found.reason == "quantity_mismatch"
    assert found.details == "restock SCARF-01: warehouse counted 2, returns team 1"
    row = await h.pool.fetchrow("SELECT reason, status, log_seq FROM discrepancies")
    assert (row["reason"], row["status"], row["log_seq"]) == ("quantity_mismatch", "open", found.audit_seq)


async def test_a_sku_relisted_twice_is_one_double_relist_and_a_third_joins_it(h: Harness) -> None:
    rid = uuid.uuid4()
    first = attested(rid, "BAG-9", "relist", 1, aid="rl-1")
    second = attested(rid, "BAG-9", "relist", 1, aid="rl-2", at=T0 + timedelta(minutes=1))
    await h.apply("inventory", [requested(rid, {"BAG-9": 1}), first, second, checked(rid, "BAG-9", "relist", 1)])
    (verified,) = await h.published(MovementVerified)
    assert verified.warehouse_attestation_id == "rl-1"
    (double,) = await h.published(DiscrepancyFound)
    assert double.reason == "double_relist" and double.sides == ["warehouse:rl-2"]

    await h.apply("inventory", [attested(rid, "BAG-9", "relist", 1, aid="rl-3", at=T0 + timedelta(minutes=2))])
    assert (await outcomes(h))["warehouse:rl-3"] == ("attached", "double_relist")
    assert len(await h.published(DiscrepancyFound)) == 1  # joining an open discrepancy announces nothing new
    attached = await h.pool.fetchval("SELECT discrepancy_id FROM sides WHERE key = 'warehouse:rl-3'")
    assert attached == double.discrepancy_id


async def test_sides_of_a_return_not_yet_requested_wait_for_it(h: Harness) -> None:
    rid = uuid.uuid4()
    await h.apply("inventory", [checked(rid, "KEY-1", "restock", 1), attested(rid, "KEY-1", "restock", 1)])
    assert set((await outcomes(h)).values()) == {(None, None)}
    await h.apply("inventory", [requested(rid, {"KEY-1": 1})])  # the return arrives: its cases are settled
    assert set((await outcomes(h)).values()) == {("verified", None)}
    assert len(await h.published(MovementVerified)) == 1


# -- the checks intake (POST /v1/inventory/checks) -------------------------------------------------
async def test_posted_checks_are_recorded_once_and_paired(h: Harness) -> None:
    rid = uuid.uuid4()
    await h.apply("inventory", [requested(rid, {"JACKET-M": 1}), attested(rid, "JACKET-M", "restock", 1, aid="w1")])

    first = await handlers.submit_check(h.ctx, http_check(rid, "JACKET-M", "restock", 1, "chk-http"))
    assert first.created and not first.conflict
    assert first.state["outcome"] == "verified" and first.state["partner_key"] == "warehouse:w1"
    again = await handlers.submit_check(h.ctx, http_check(rid, "JACKET-M", "restock", 1, "chk-http"))
    assert not again.created and not again.conflict
    other = await handlers.submit_check(h.ctx, http_check(rid, "JACKET-M", "restock", 3, "chk-http"))
    assert other.conflict and other.state["quantity"] == 1  # what was recorded stays

    assert await h.pool.fetchval("SELECT count(*) FROM sides WHERE via = 'http'") == 1
    note = await h.pool.fetchval("SELECT note FROM sides WHERE key = 'returns_team:chk-http'")
    assert note == "counted on the shelf"
    (verified,) = await h.published(MovementVerified)
    assert verified.returns_team_check_id == "chk-http" and verified.correlation_id == "corr-http"


async def test_checks_in_one_group_commit_each_get_their_own_result(h: Harness) -> None:
    rid = uuid.uuid4()
    await h.apply("inventory", [requested(rid, {"A": 1, "B": 1})])
    items = [
        http_check(rid, "A", "restock", 1, "c-a"),
        http_check(rid, "B", "destroy", 1, "c-b"),
        http_check(rid, "A", "restock", 1, "c-a"),
    ]
    async with h.pool.acquire() as conn, conn.transaction():
        results = await handlers.record_checks(h.ctx.policy, conn, items)
    assert [(r.created, r.conflict, r.state["outcome"]) for r in results] == [
        (True, False, None),
        (True, False, None),
        (False, False, None),  # the same check twice in one commit: the second is the duplicate
    ]


# -- the deadline sweeper --------------------------------------------------------------------------
async def test_the_sweeper_closes_sides_left_alone_past_the_deadline(handler_settings: Settings) -> None:
    rid, ghost = uuid.uuid4(), uuid.uuid4()
    long_ago = T0 - timedelta(hours=2)  # past the deadline (1 h) already when recorded
    async with harness(SPEC, handler_settings, audit_settings(sweep_batch=1)) as h:
        await h.apply(
            "inventory",
            [
                requested(rid, {"MISS": 1, "KIND": 1}),
                attested(rid, "MISS", "refurbish", 1, at=long_ago),
                attested(rid, "KIND", "restock", 1, at=long_ago),
                checked(rid, "KIND", "destroy", 1, at=long_ago),
                attested(ghost, "GHOST", "restock", 1),
            ],
        )
        # recorded just now: each side is held `settle` (60 s) for a counterpart queued behind it
        assert set((await outcomes(h)).values()) == {(None, None)}
        assert await handlers.nothing_due(h.ctx)
        assert await handlers.sweep_deadlines(h.ctx) is None

        await age(h, timedelta(minutes=2))
        assert not await handlers.nothing_due(h.ctx)
        assert await handlers.sweep_deadlines(h.ctx) == 0  # a full batch (1) was due: more may be
        assert await handlers.sweep_deadlines(h.ctx) == 0
        assert await handlers.sweep_deadlines(h.ctx) is None
        assert await handlers.nothing_due(h.ctx)
        by_sku = {e.sku: e.reason for e in await h.published(DiscrepancyFound)}
        assert by_sku == {"MISS": "missing_side", "KIND": "kind_mismatch"}

        await age(h, timedelta(minutes=10))  # past the grace for the unknown return
        assert await handlers.sweep_deadlines(h.ctx) == 0
        assert await handlers.sweep_deadlines(h.ctx) is None
        by_sku = {e.sku: e.reason for e in await h.published(DiscrepancyFound)}
        assert by_sku["GHOST"] == "unknown_return"
        assert set((await outcomes(h)).values()) == {
            ("discrepancy", "missing_side"),
            ("discrepancy", "kind_mismatch"),
            ("discrepancy", "unknown_return"),
        }
        assert (await views.verify_log(h.pool)).ok


# -- resolution ------------------------------------------------------------------------------------
async def test_a_discrepancy_is_resolved_once_by_someone_who_attested_no_side(h: Harness) -> None:
    rid = uuid.uuid4()
    await h.apply("inventory", [requested(rid, {"QTY": 2}), attested(rid, "QTY", "restock", 2)])
    await h.apply("inventory", [checked(rid, "QTY", "restock", 1, by="rt-lin")])
    (found,) = await h.published(DiscrepancyFound)
    did = found.discrepancy_id

    unknown = await handlers.resolve(h.ctx, "nope", "rt-ana", "x", "c")
    assert isinstance(unknown, Refusal) and unknown.why == "unknown"
    own = await handlers.resolve(h.ctx, did, "rt-lin", "recount", "c")
    assert isinstance(own, Refusal) and own.why == "attested_a_side"
    resolved = await handlers.resolve(h.ctx, did, "rt-ana", "recounted: 2 on the shelf", "c")
    assert not isinstance(resolved, Refusal)
    assert resolved["status"] == "resolved" and resolved["resolved_by"] == "rt-ana"
    entry = await h.pool.fetchrow("SELECT seq, type, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    assert entry["type"] == "discrepancy.resolved" and resolved["resolution_hash"] == entry["hash"]
    again = await handlers.resolve(h.ctx, did, "rt-ana", "again", "c")
    assert isinstance(again, Refusal) and again.why == "already_resolved"
    assert (await views.verify_log(h.pool)).ok
    # published through the outbox (issue 15): who resolved it and how, anchored to its log entry; once
    (news,) = await h.published(DiscrepancyResolved)
    assert (news.discrepancy_id, news.return_id, news.resolved_by, news.note) == (
        did,
        rid,
        "rt-ana",
        "recounted: 2 on the shelf",
    )
    assert (news.reason, news.sku, news.audit_seq, news.audit_hash) == (
        "quantity_mismatch",
        "QTY",
        entry["seq"],
        entry["hash"],
    )


# -- anchors of the chain head ---------------------------------------------------------------------
async def log_hashes(h: Harness) -> list[str]:
    return [r["hash"] for r in await h.pool.fetch("SELECT hash FROM audit_log ORDER BY seq")]


async def test_a_batch_that_appends_entries_writes_exactly_one_anchor(
    handler_settings: Settings, tmp_path: Path
) -> None:
    anchors_file = tmp_path / "shipped" / "anchors.jsonl"
    async with harness(SPEC, handler_settings, audit_settings(anchor_file=str(anchors_file))) as h:
        rid = uuid.uuid4()
        await h.apply(
            "inventory",
            [
                requested(rid, {"A": 1, "B": 1}),
                attested(rid, "A", "restock", 1),
                attested(rid, "B", "destroy", 1),
                checked(rid, "A", "restock", 1),
            ],
        )
        hashes = await log_hashes(h)
        assert len(hashes) == 4  # three sides and one verified movement, one anchor for all of them
        (first,) = await h.published(AuditAnchored)
        assert (first.seq, first.hash, first.entries, first.reason) == (4, hashes[-1], 4, "batch")
        assert first.hashes == hashes and first.return_id == NO_RETURN
        topics = [topic for topic, value, _ in await h.outbox() if value["type"] == "audit.anchored"]
        assert topics == ["audit.anchors"]

        await h.apply("inventory", [requested(rid, {"A": 1, "B": 1})])  # appends nothing: no anchor
        assert len(await h.published(AuditAnchored)) == 1

        await h.apply("inventory", [checked(rid, "B", "destroy", 1)])  # a side and a movement: entries 5, 6
        second = (await h.published(AuditAnchored))[-1]
        hashes = await log_hashes(h)
        assert (second.seq, second.hashes) == (6, hashes[4:])  # only what was appended since the last anchor

        resolved_nothing = await handlers.resolve(h.ctx, "nope", "rt-ana", "x", "c")  # refused: appends nothing
        assert isinstance(resolved_nothing, Refusal) and len(await h.published(AuditAnchored)) == 2

        # the file sink: every anchor once, as published; then the service is idle
        assert not await handlers.nothing_due(h.ctx)
        assert await handlers.file_anchors(h.ctx) == 2 and await handlers.file_anchors(h.ctx) == 0
        lines = anchors_file.read_text().splitlines()
        assert [AuditAnchored.model_validate_json(line) for line in lines] == [first, second]
        assert await handlers.nothing_due(h.ctx)

        # the schedule anchors only a log left alone for an interval (60 s here): not yet
        assert await handlers.anchor_on_schedule(h.ctx) > 0
        assert len(await h.published(AuditAnchored)) == 2
        await h.pool.execute("UPDATE anchors SET anchored_at = anchored_at - interval '61 seconds'")
        assert await handlers.anchor_on_schedule(h.ctx) > 0
        third = (await h.published(AuditAnchored))[-1]
        assert (third.seq, third.hash, third.hashes, third.reason) == (6, hashes[-1], [], "schedule")
