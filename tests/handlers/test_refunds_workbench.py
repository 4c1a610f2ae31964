"""The refunds service's work for the people of the workbench (issue 15), against a real PostgreSQL:
deciding a specific escalation (HTTP and signed `refunds.commands`), the escalation queue (filters, cursor
pages, counts), declined refunds as work items a supervisor resolves, and clawbacks closed by a person."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from contracts.events import (
    ClawbackResolved,
    RefundCommand,
    RefundDecided,
    RefundFailureResolved,
    RefundIssued,
    ReturnKind,
    Role,
)
from returnflow.commands import signed_message
from returnflow.http import HttpProblem
from returnflow.paging import decode_cursor
from returnflow.settings import Settings
from services.refunds import handlers, views
from services.refunds.dev import dev_signing_key
from services.refunds.dev.gateway_sim import serve_gateway
from services.refunds.rules import Actor, CommandIn
from tests.handlers.harness import Harness
from tests.handlers.test_refunds_handlers import (
    T0,
    commands_log,
    gateway_faults,
    http_command,
    ledger,
    received,
    refunds,
    requested,
    scanned,
)

SAM = Actor("sup-sam", Role.supervisor)
MIA = Actor("mgr-mia", Role.manager)
AMY = Actor("agent-amy", Role.agent)


async def two_escalations(h: Harness) -> tuple[uuid.UUID, str, str]:
    """A return with an automatic 100.00 escalation waiting for a manager (damaged goods received), and
    after it an agent's 30.00 grant waiting for a supervisor: (return id, automatic id, agent's id)."""
    ret = requested(paid_total=30_000, qty=3, unit_price=10_000)
    await h.apply("lifecycle", [ret, received(ret.return_id, "as_described", "damaged")])
    grant = await handlers.decide(h.ctx, http_command(ret.return_id, "grant_free_refund", "agent-amy", 3_000))
    assert (grant.status, grant.required_role) == (202, Role.supervisor)
    rows = await h.pool.fetch(
        "SELECT escalation_id, required_role, amount FROM escalations WHERE return_id = $1 ORDER BY created_at",
        ret.return_id,
    )
    assert [(r["required_role"], r["amount"]) for r in rows] == [("manager", 10_000), ("supervisor", 3_000)]
    return ret.return_id, rows[0]["escalation_id"], rows[1]["escalation_id"]


async def open_escalations(h: Harness, rid: uuid.UUID) -> list[str]:
    rows = await h.pool.fetch(
        "SELECT escalation_id FROM escalations WHERE return_id = $1 AND status = 'open' ORDER BY created_at", rid
    )
    return [r["escalation_id"] for r in rows]


def approve(rid: uuid.UUID, actor: str, escalation_id: str | None = None, key: str | None = None) -> CommandIn:
    return replace(http_command(rid, "approve", actor, key=key), escalation_id=escalation_id)


async def test_a_supervisor_approves_the_agents_30_while_the_older_100_for_a_manager_stays(
    handler_settings: Settings,
) -> None:
    async with refunds(handler_settings) as h:
        rid, automatic, agents = await two_escalations(h)
        o = await handlers.decide(h.ctx, approve(rid, "sup-sam"))
        assert (o.status, o.result, o.amount, o.escalation_id) == (200, "refunded", 3_000, agents)
        assert await open_escalations(h, rid) == [automatic]
        decided = [e for e in await h.published(RefundDecided) if e.actor_id == "sup-sam"]
        assert [(e.amount, e.actor_role) for e in decided] == [(3_000, Role.supervisor)]


async def test_a_named_escalation_is_decided_refused_above_the_role_and_409_when_not_open(
    handler_settings: Settings,
) -> None:
    async with refunds(handler_settings) as h:
        rid, automatic, agents = await two_escalations(h)
        above = await handlers.decide(h.ctx, approve(rid, "sup-sam", automatic))
        assert (above.status, above.field) == (403, "escalation_id")
        unknown = await handlers.decide(h.ctx, approve(rid, "sup-sam", "no-such-escalation"))
        assert (unknown.status, unknown.field) == (409, "escalation_id")
        assert await open_escalations(h, rid) == [automatic, agents]  # nothing changed

        first = await handlers.decide(h.ctx, approve(rid, "mgr-mia", agents, key="mgr-mia:k1"))
        assert (first.status, first.escalation_id) == (200, agents)
        retry = await handlers.decide(h.ctx, approve(rid, "mgr-mia", agents, key="mgr-mia:k1"))
        assert retry == replace(first, actions=retry.actions)  # the first answer, naming the same escalation
        closed = await handlers.decide(h.ctx, approve(rid, "mgr-mia", agents))
        assert (closed.status, closed.field) == (409, "escalation_id")  # decided already: not open any more
        other = await handlers.decide(h.ctx, approve(rid, "mgr-mia", automatic, key="mgr-mia:k1"))
        assert other.status == 422 and "escalation_id" in other.message  # the key reused for another escalation
        assert await open_escalations(h, rid) == [automatic]


async def test_a_signed_command_names_the_escalation_it_decides(handler_settings: Settings) -> None:
    async with refunds(handler_settings) as h:
        rid, automatic, agents = await two_escalations(h)
        cmd = RefundCommand(
            occurred_at=T0,
            return_id=rid,
            correlation_id="corr-cmd",
            action="reject",
            actor_id="mgr-mia",
            escalation_id=automatic,
        )
        await h.apply("lifecycle", [signed_message(cmd, dev_signing_key("mgr-mia"))])
        assert await open_escalations(h, rid) == [agents]
        row = await h.pool.fetchrow(
            "SELECT escalation_id, answer_escalation_id, http_status FROM commands WHERE actor_id = 'mgr-mia'"
        )
        assert dict(row) == {"escalation_id": automatic, "answer_escalation_id": automatic, "http_status": 200}
        # an older producer's command (no escalation_id) still validates and decides as before
        old = RefundCommand(occurred_at=T0, return_id=rid, correlation_id="c", action="approve", actor_id="sup-sam")
        assert "escalation_id" not in old.model_dump_json(exclude_none=True)
        await h.apply("lifecycle", [signed_message(old, dev_signing_key("sup-sam"))])
        assert await open_escalations(h, rid) == []
        assert [s for _, _, s in await commands_log(h, rid)] == [202, 200, 200]


# -- the escalation queue ------------------------------------------------------------------------------------


async def all_pages(h: Harness, role: str | None, q: views.QueueFilter, limit: int) -> list[dict]:
    items, cursor = [], None
    while True:
        got = await views.escalation_queue(h.pool, role, replace(q, after=decode_cursor(cursor)), limit)
        items += got["escalations"]
        cursor = got["next_cursor"]
        if cursor is None:
            return items


async def test_the_escalation_queue_filters_pages_oldest_first_and_counts(handler_settings: Settings) -> None:
    async with refunds(handler_settings) as h:
        rid, automatic, agents = await two_escalations(h)
        for amount in (2_500, 4_000, 6_000):  # three more agents' grants on other returns, newer
            ret = requested(kind=ReturnKind.exchange, paid_total=50_000)
            await h.apply("lifecycle", [ret])
            await handlers.decide(h.ctx, http_command(ret.return_id, "grant_free_refund", "agent-bo", amount))
        everything = await all_pages(h, None, views.QueueFilter(), 2)
        assert [e["amount"] for e in everything] == [10_000, 3_000, 2_500, 4_000, 6_000]  # oldest first
        assert [e["escalation_id"] for e in everything[:2]] == [automatic, agents]
        first = everything[0]
        assert (first["return_id"], first["order_id"], first["shop_id"], first["required_role"]) == (
            rid,
            "order-1",
            "shop-1",
            "manager",
        )
        assert first["raised_by"] is None and everything[1]["raised_by"] == "agent-amy" and first["raised_at"]

        page = await views.escalation_queue(h.pool, None, views.QueueFilter(), 2)
        assert page["counts"] == {"total": 5, "by_required_role": {"manager": 2, "supervisor": 3}}
        assert len(page["escalations"]) == 2 and page["next_cursor"]
        sup = await all_pages(h, "supervisor", views.QueueFilter(min_amount=2_600, max_amount=5_000), 1)
        assert [e["amount"] for e in sup] == [3_000, 4_000]
        assert await all_pages(h, None, views.QueueFilter(shop="shop-2"), 10) == []
        assert await all_pages(h, None, views.QueueFilter(older_than_s=3_600), 10) == []  # all raised just now
        assert len(await all_pages(h, None, views.QueueFilter(older_than_s=0), 10)) == 5
        with pytest.raises(HttpProblem) as bad:
            decode_cursor("not-a-cursor")
        assert bad.value.status == 422 and bad.value.fields == [
            {"field": "cursor", "message": "not a cursor this list gave"}
        ]


# -- declined refunds --------------------------------------------------------------------------------------


async def a_declined_refund(h: Harness, url: str, paid_total: int = 4_000) -> uuid.UUID:
    ret = requested(paid_total=paid_total)
    await h.apply("lifecycle", [ret, scanned(ret.return_id)])
    async with gateway_faults(url, {"mode": "decline"}):
        assert await handlers.pay_due_refunds(h.ctx) == 0
    return ret.return_id


async def test_a_declined_refund_waits_for_a_supervisor_who_retries_it_once(handler_settings: Settings) -> None:
    async with serve_gateway() as url, refunds(handler_settings, url) as h:
        rid = await a_declined_refund(h, url)
        queue = await views.failure_queue(h.pool, views.QueueFilter(), 10)
        (item,) = queue["failures"]
        assert queue["counts"] == {"total": 1} and (item["return_id"], item["amount"]) == (rid, 4_000)
        assert "402" in item["error"] and item["failed_at"] is not None

        refused = await handlers.resolve_failure(h.ctx, rid, None, AMY, "retry", None, "corr-r")
        assert refused is not None and refused[0].status == 403
        assert await handlers.resolve_failure(h.ctx, uuid.uuid4(), None, SAM, "retry", None, "corr-r") is None

        done, answer = await handlers.resolve_failure(h.ctx, rid, None, SAM, "retry", "card updated", "corr-r") or ()
        assert (done.status, done.result, answer["action"], answer["resolved_by"]) == (
            200,
            "resolved",
            "retry",
            "sup-sam",
        )
        again, same = await handlers.resolve_failure(h.ctx, rid, None, SAM, "retry", "card updated", "c2") or ()
        assert (again.status, again.result, same["retry_refund_id"]) == (
            200,
            "already_resolved",
            answer["retry_refund_id"],
        )
        other, _ = await handlers.resolve_failure(h.ctx, rid, None, MIA, "close", None, "c3") or ()
        assert (other.status, other.field) == (409, "action")

        assert (await views.failure_queue(h.pool, views.QueueFilter(), 10))["failures"] == []
        (news,) = await h.published(RefundFailureResolved)
        assert (news.refund_id, news.action, news.resolved_by, news.retry_refund_id) == (
            item["refund_id"],
            "retry",
            "sup-sam",
            answer["retry_refund_id"],
        )
        assert news.correlation_id == "corr-r" and news.resolved_role == Role.supervisor
        assert await handlers.pay_due_refunds(h.ctx) == 0  # the retry is paid, once
        assert [r["status"] for r in await ledger(h, rid)] == ["failed", "issued"]
        (issued,) = await h.published(RefundIssued)
        assert issued.refund_id == answer["retry_refund_id"]
        book = await views.ledger_of(h.pool, rid)
        assert book is not None and [(x["action"], x["resolved_by"]) for x in book["failure_resolutions"]] == [
            ("retry", "sup-sam")
        ]


async def test_a_retry_is_refused_when_the_money_went_another_way_and_settled_offline_pays_nothing(
    handler_settings: Settings,
) -> None:
    async with serve_gateway() as url, refunds(handler_settings, url) as h:
        rid = await a_declined_refund(h, url)
        grant = await handlers.decide(h.ctx, http_command(rid, "grant_free_refund", "owner-oz", 1_000))
        assert grant.status == 200  # 30.00 left refundable now, the declined refund was 40.00
        no, _ = await handlers.resolve_failure(h.ctx, rid, None, SAM, "retry", None, "c") or ()
        assert (no.status, no.field) == (409, "action") and "only 3000 remains" in no.message
        failed_id = (await views.failure_queue(h.pool, views.QueueFilter(), 10))["failures"][0]["refund_id"]
        wrong, _ = await handlers.resolve_failure(h.ctx, rid, "no-such-refund", SAM, "close", None, "c") or ()
        assert (wrong.status, wrong.field) == (409, "refund_id")
        ok, answer = await handlers.resolve_failure(h.ctx, rid, failed_id, SAM, "settled_offline", "cash", "c") or ()
        assert (ok.result, answer["retry_refund_id"]) == ("resolved", None)
        assert len(await ledger(h, rid)) == 2  # nothing new paid


# -- clawbacks --------------------------------------------------------------------------------------------


async def test_a_clawback_is_closed_once_by_a_supervisor_and_leaves_the_open_list(handler_settings: Settings) -> None:
    async with refunds(handler_settings) as h:
        ret = requested()
        await h.apply("lifecycle", [ret, scanned(ret.return_id)])
        await h.apply("lifecycle", [received(ret.return_id, "as_described", "wrong_item")])
        listed = await views.clawback_queue(h.pool, "open", None, views.QueueFilter(), 10)
        (c,) = listed["clawbacks"]
        assert listed["counts"] == {"open": 1, "resolved": 0} and c["shop_id"] == "shop-1"
        cid = c["clawback_id"]

        no, _ = await handlers.resolve_clawback(h.ctx, cid, AMY, "waived", None, "c")
        assert no.status == 403
        unknown, _ = await handlers.resolve_clawback(h.ctx, "nope", SAM, "waived", None, "c")
        assert unknown.status == 404
        done, answer = await handlers.resolve_clawback(h.ctx, cid, SAM, "waived", "loyal customer", "corr-c")
        assert (done.result, answer["resolution"], answer["resolved_by"], answer["note"]) == (
            "resolved",
            "waived",
            "sup-sam",
            "loyal customer",
        )
        again, same = await handlers.resolve_clawback(h.ctx, cid, MIA, "waived", None, "c2")
        assert (again.status, again.result, same["resolved_by"]) == (200, "already_resolved", "sup-sam")
        other, _ = await handlers.resolve_clawback(h.ctx, cid, MIA, "written_off", None, "c3")
        assert (other.status, other.field) == (409, "resolution")

        assert (await views.clawback_queue(h.pool, "open", None, views.QueueFilter(), 10))["clawbacks"] == []
        book = await views.ledger_of(h.pool, ret.return_id)
        assert book is not None and [c["resolution"] for c in book["clawbacks"]] == ["waived"]
        (resolved,) = (await views.clawback_queue(h.pool, "resolved", None, views.QueueFilter(), 10))["clawbacks"]
        assert (resolved["resolution"], resolved["resolved_role"]) == ("waived", "supervisor")
        (news,) = await h.published(ClawbackResolved)
        assert (news.clawback_id, news.resolution, news.amount, news.correlation_id) == (cid, "waived", 2000, "corr-c")
