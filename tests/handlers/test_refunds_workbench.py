"""The refunds service's work for the people of the workbench (issue 15), against a real PostgreSQL:
deciding a specific escalation (HTTP and signed `refunds.commands`)."""

from __future__ import annotations

import uuid
from dataclasses import replace

from contracts.events import RefundCommand, RefundDecided, Role
from returnflow.commands import signed_message
from returnflow.settings import Settings
from services.refunds import handlers
from services.refunds.dev import dev_signing_key
from services.refunds.rules import CommandIn
from tests.handlers.harness import Harness
from tests.handlers.test_refunds_handlers import T0, commands_log, http_command, received, refunds, requested


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
