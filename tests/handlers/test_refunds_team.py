"""The team's numbers (GET /v1/refunds/team) against a real PostgreSQL: known decisions at known times,
whose counts, medians and p90s are worked out by hand below."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from contracts.events import Role
from returnflow.settings import Settings
from services.refunds import handlers, rules, views
from tests.handlers.harness import Harness
from tests.handlers.test_refunds_handlers import http_command, refunds, requested

DAY = date(2026, 11, 20)
NOON = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LATE = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)  # 01:00 on the 21st in Shanghai


async def grant(h: Harness, actor: str, amount: int) -> tuple[uuid.UUID, str]:
    """A fresh return (paid 100.00) and `actor`'s free refund on it: (return id, result)."""
    ret = requested(paid_total=10_000, qty=1, unit_price=10_000)
    await h.apply("lifecycle", [ret])
    o = await handlers.decide(h.ctx, http_command(ret.return_id, "grant_free_refund", actor, amount))
    return ret.return_id, o.result


async def at(h: Harness, rid: uuid.UUID, when: datetime, waited_s: float | None = None) -> None:
    """Everything that happened on this return happened at `when`; its escalation waited `waited_s`."""
    await h.pool.execute("UPDATE commands SET decided_at = $2 WHERE return_id = $1", rid, when)
    await h.pool.execute("UPDATE refunds SET created_at = $2 WHERE return_id = $1", rid, when)
    if waited_s is not None:
        await h.pool.execute(
            "UPDATE escalations SET closed_at = $2, created_at = $2::timestamptz - make_interval(secs => $3::float8) WHERE return_id = $1",
            rid,
            when,
            waited_s,
        )


def limit_of(role: str | None, currency: str) -> int | None:
    return rules.PRESETS["tiered"]["CNY"].get(Role(role), 0) if role else 0


def by_actor(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["actor_id"]: r for r in rows}


async def test_per_person_and_day_decisions_waits_grants_and_the_queue(handler_settings: Settings) -> None:
    async with refunds(handler_settings) as h:
        # amy grants 15.00 within her 20.00 (75 % of it), and 30.00 three times: escalated to a supervisor
        a, result = await grant(h, "agent-amy", 1_500)
        assert result == "refunded"
        escalated = [await grant(h, "agent-amy", 3_000) for _ in range(3)]
        assert {r for _, r in escalated} == {"escalated"}
        # sam approves the three after 60 s, 120 s and 600 s: 30.00 of his 50.00 each (60 %)
        for rid, _ in escalated:
            o = await handlers.decide(h.ctx, http_command(rid, "approve", "sup-sam"))
            assert (o.status, o.result) == (200, "refunded")
        for (rid, _), waited in zip(escalated, (60, 120, 600), strict=True):
            await at(h, rid, NOON, waited)
        await at(h, a, LATE)
        # a clawback flagged on amy's refund that day
        refund_id = await h.pool.fetchval("SELECT refund_id FROM refunds WHERE return_id = $1", a)
        await h.pool.execute(
            """INSERT INTO clawbacks (clawback_id, return_id, customer_key, amount, currency, receipt_id, refund_id,
                   reason, flagged_at) VALUES ('cb-1', $1, 'c-1', 1500, 'CNY', 'rcpt-1', $2, 'missing', $3)""",
            a,
            refund_id,
            NOON,
        )
        # one more of amy's, still open for an hour: the queue
        waiting, result = await grant(h, "agent-amy", 3_000)
        assert result == "escalated"
        await h.pool.execute(
            "UPDATE escalations SET created_at = now() - interval '1 hour' WHERE return_id = $1", waiting
        )

        t = await views.team_numbers(h.pool, DAY, DAY, "UTC", None, limit_of)
        days = by_actor(t["days"])
        assert set(days) == {"agent-amy", "sup-sam"}
        amy, sam = days["agent-amy"], days["sup-sam"]
        assert amy["day"] == DAY
        assert (amy["decisions"], amy["escalations_raised"], amy["escalations_resolved"]) == (1, 3, 0)
        assert (amy["free_refunds"], amy["free_refund_amounts"], amy["authority_share_bp"]) == (
            1,
            {"CNY": 1_500},
            7_500,
        )
        assert (amy["clawbacks"], amy["decision_median_s"]) == (1, None)
        assert (sam["decisions"], sam["escalations_raised"], sam["escalations_resolved"]) == (3, 0, 3)
        # waits 60, 120, 600: median 120; p90 at rank 0.9 * 2 = 1.8, 120 + 0.8 * (600 - 120) = 504
        assert sam["decision_median_s"] == 120.0
        assert sam["decision_p90_s"] == 504.0
        assert (sam["free_refunds"], sam["free_refund_amounts"], sam["authority_share_bp"]) == (
            3,
            {"CNY": 9_000},
            6_000,
        )
        assert sam["clawbacks"] == 0
        # the team: four grants, shares 75 %, 60 %, 60 %, 60 % -> 63.75 %
        team = t["team"]
        assert (team["decisions"], team["escalations_raised"], team["escalations_resolved"]) == (4, 3, 3)
        assert (team["free_refunds"], team["free_refund_amounts"], team["authority_share_bp"]) == (
            4,
            {"CNY": 10_500},
            6_375,
        )
        assert (team["decision_median_s"], team["decision_p90_s"]) == (120.0, 504.0)
        assert by_actor(t["people"])["sup-sam"]["decision_p90_s"] == 504.0
        q = t["queue"]
        assert q["open_escalations"] == 1 and 3_600 <= q["oldest_s"] < 3_900

        # days in Shanghai: amy's 17:00 UTC grant falls on the 21st there
        sh = await views.team_numbers(h.pool, DAY, DAY + timedelta(days=1), "Asia/Shanghai", None, limit_of)
        amy_days = {r["day"]: r for r in sh["days"] if r["actor_id"] == "agent-amy"}
        assert set(amy_days) == {DAY, DAY + timedelta(days=1)}
        assert (amy_days[DAY]["decisions"], amy_days[DAY]["escalations_raised"]) == (0, 3)
        assert (amy_days[DAY + timedelta(days=1)]["decisions"], amy_days[DAY + timedelta(days=1)]["free_refunds"]) == (
            1,
            1,
        )
        assert by_actor(sh["people"])["agent-amy"]["decisions"] == 1

        # another shop: nothing; the day before: nothing
        other = await views.team_numbers(h.pool, DAY, DAY, "UTC", "shop-2", limit_of)
        assert (other["days"], other["people"], other["team"]["decisions"], other["queue"]["open_escalations"]) == (
            [],
            [],
            0,
            0,
        )
        before = await views.team_numbers(
            h.pool, DAY - timedelta(days=1), DAY - timedelta(days=1), "UTC", None, limit_of
        )
        assert before["days"] == [] and before["team"]["free_refunds"] == 0
