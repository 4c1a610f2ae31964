"""People's commands on refunds.commands prove their actor (issue 12, finding 1): on the real broker and
PostgreSQL, a command that is unsigned, signed with another actor's key, stale, or altered after signing
is refused, recorded with the reason and visible in the return's ledger — never executed; the same
command signed by the actor the roster names, and fresh, takes effect."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

from contracts.events import RefundCommand
from returnflow.commands import signed_message
from returnflow.outbox import event_record
from services.refunds.dev import dev_signing_key
from tests.integration.money_path_support import Platform, auth, platform
from tests.kafkautil import wait_for


def grant(rid: uuid.UUID, amount: int = 20_000, at: datetime | None = None) -> RefundCommand:
    return RefundCommand(
        occurred_at=at or datetime.now(UTC),
        return_id=rid,
        correlation_id=f"attack-{uuid.uuid4().hex[:6]}",
        action="grant_free_refund",
        actor_id="owner-oz",
        amount=amount,
    )


async def produce(bootstrap: str, values: list[bytes], rid: uuid.UUID) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait("refunds.commands", v, key=str(rid).encode())
    finally:
        await producer.stop()


async def refused_metric(p: Platform, reason: str) -> float:
    """returnflow_commands_refused_total of refunds for a reason, as /metrics shows it."""
    line = f'returnflow_commands_refused_total{{reason="{reason}",service="refunds"}} '
    text = (await p.refunds[0].get("/metrics")).text
    return next((float(x.removeprefix(line)) for x in text.splitlines() if x.startswith(line)), 0.0)


async def test_only_a_fresh_command_signed_by_its_actor_takes_effect(settings, service_runner):
    async with platform(settings, service_runner) as p:
        rid = await p.new_return(kind="exchange", paid_total=50_000)
        await wait_for(lambda: p.refunds_pool.fetchval("SELECT 1 FROM returns WHERE return_id = $1", rid))
        owner = dev_signing_key("owner-oz")
        tampered = signed_message(grant(rid, 2000), owner).model_copy(update={"amount": 20_000})
        attacks = {
            "unsigned": grant(rid),
            "another actor's key": signed_message(grant(rid), dev_signing_key("agent-amy")),
            "stale": signed_message(grant(rid, at=datetime.now(UTC) - timedelta(minutes=10)), owner),
            "tampered amount": tampered,
        }
        bad_before = await refused_metric(p, "bad_signature")
        await produce(p.settings.kafka_bootstrap, [event_record(c).value for c in attacks.values()], rid)

        async def refused() -> list[dict[str, object]] | None:
            rows = await p.refunds_pool.fetch(
                "SELECT http_status, result, message FROM commands WHERE return_id = $1 ORDER BY created_at", rid
            )
            return [dict(r) for r in rows] if len(rows) == 4 else None

        rows = await wait_for(refused)
        assert [(r["http_status"], r["result"]) for r in rows] == [(401, "refused")] * 4
        assert [str(r["message"]).split()[2] for r in rows] == ["unsigned", "bad_signature", "stale", "bad_signature"]
        await p.idle()
        assert await p.ledger(rid) == []  # never executed
        assert await p.refunds_pool.fetchval("SELECT reserved FROM returns WHERE return_id = $1", rid) == 0
        ledger = (await p.refunds[0].get(f"/v1/refunds/{rid}", headers=auth("sup-sam"))).json()
        assert [c["result"] for c in ledger["commands"]] == ["refused"] * 4
        assert await refused_metric(p, "bad_signature") - bad_before == 2

        await produce(p.settings.kafka_bootstrap, [event_record(signed_message(grant(rid), owner)).value], rid)
        (paid,) = await p.wait_issued(rid)
        assert (paid["amount"], paid["actor_id"]) == (20_000, "owner-oz")
