"""The services' backlog gauges reflect real backlogs: each service's `views.backlogs` counted by the
runtime's refresh (the round its slow loop runs) over a real PostgreSQL, read back from the Prometheus
registry as /metrics would serve them — and falling back to 0 once the backlog is worked off."""

from __future__ import annotations

import uuid
from pathlib import Path

from prometheus_client import REGISTRY

from returnflow import backlogs
from returnflow.settings import Settings
from returnflow.shops import Shops
from services.audit import SPEC as AUDIT
from services.notify import SPEC as NOTIFY
from services.refunds import SPEC as REFUNDS
from services.refunds import handlers as refunds_handlers
from services.refunds import repository as refunds_repository
from services.refunds.dev import DEV_ROSTER
from services.refunds.dev.gateway_sim import serve_gateway
from services.refunds.settings import RefundsSettings
from services.warehouse import SPEC as WAREHOUSE
from services.warehouse import dev as warehouse_dev
from tests.handlers import test_audit_handlers as audit_case
from tests.handlers import test_notify_handlers as notify_case
from tests.handlers import test_refunds_handlers as refunds_case
from tests.handlers import test_warehouse_handlers as warehouse_case
from tests.handlers.harness import Harness, harness
from tests.integration import notify_support


def gauge(service: str, backlog: str) -> tuple[float | None, float | None]:
    labels = {"service": service, "backlog": backlog}
    return (
        REGISTRY.get_sample_value("returnflow_backlog_items", labels),
        REGISTRY.get_sample_value("returnflow_backlog_oldest_age_seconds", labels),
    )


async def refresh(h: Harness) -> None:
    assert await backlogs.refresh(h.rt.spec.name, h.pool, h.rt.spec.backlogs, h.rt.shops)
    labels = {"service": h.rt.spec.name, "dependency": "database"}
    assert REGISTRY.get_sample_value("returnflow_dependency_up", labels) == 1


async def test_a_payment_with_an_unknown_outcome_is_a_pending_refund_until_it_is_paid(
    handler_settings: Settings,
) -> None:
    ret = refunds_case.requested()
    async with (
        serve_gateway() as url,
        refunds_case.refunds(handler_settings, url, gateway_attempts=1, payment_retry_base_s=60) as h,
    ):
        assert h.rt.spec is REFUNDS
        await h.apply("lifecycle", [ret, refunds_case.scanned(ret.return_id)])
        await refresh(h)
        assert gauge("refunds", "refunds_pending")[0] == 1
        assert gauge("refunds", "payments_unknown_outcome") == (0, 0)  # never asked yet: not unknown
        async with refunds_case.gateway_faults(url, {"mode": "error", "status": 503, "count": 1}):
            assert await refunds_handlers.pay_due_refunds(h.ctx) == 0
        await h.pool.execute("UPDATE refunds SET created_at = now() - interval '11 minutes'")
        await refresh(h)
        items, age = gauge("refunds", "payments_unknown_outcome")
        assert items == 1 and age is not None and 660 <= age < 720  # the alert's "> 10 min" sees it
        await h.pool.execute("UPDATE refunds SET next_attempt_at = now()")
        assert await refunds_handlers.pay_due_refunds(h.ctx) == 0
        await refresh(h)
        assert gauge("refunds", "refunds_pending") == (0, 0)
        assert gauge("refunds", "payments_unknown_outcome") == (0, 0)


async def test_an_escalation_waiting_for_a_person_is_counted_with_its_age(handler_settings: Settings) -> None:
    ret = refunds_case.requested()
    async with refunds_case.refunds(handler_settings, early_refund=False) as h:
        await h.apply("lifecycle", [ret])
        escalated = await refunds_handlers.decide(
            h.ctx, refunds_case.http_command(ret.return_id, "grant_free_refund", "agent-amy", 3000)
        )
        assert escalated.result == "escalated"
        await h.pool.execute("UPDATE escalations SET created_at = now() - interval '5 hours'")
        await refresh(h)
        items, age = gauge("refunds", "escalations_open")
        assert items == 1 and age is not None and 5 * 3600 <= age < 5 * 3600 + 60
        assert gauge("refunds", "escalations_over_sla")[0] == 1  # over the default 4 h


async def test_escalations_over_sla_follow_each_shops_own_sla(handler_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "shops.yaml"
    path.write_text("shops:\n  shop-1: {escalation_sla_hours: 8}\n  quick: {escalation_sla_hours: 1}\n")
    shops = Shops.load(path)
    patient, quick = (
        refunds_case.requested(),
        refunds_case.requested().model_copy(update={"shop_id": "quick", "return_id": uuid.uuid4()}),
    )
    own = RefundsSettings(gateway_url=refunds_case.NOWHERE, early_refund=False)
    async with harness(REFUNDS, handler_settings, own, shops) as h:
        async with h.pool.acquire() as conn:
            await refunds_repository.seed_roster(conn, list(DEV_ROSTER))
        await h.apply("lifecycle", [patient, quick])
        for ret, key in ((patient, "k-patient"), (quick, "k-quick")):
            cmd = refunds_case.http_command(ret.return_id, "grant_free_refund", "agent-amy", 3000, key)
            assert (await refunds_handlers.decide(h.ctx, cmd)).result == "escalated"
        await h.pool.execute("UPDATE escalations SET created_at = now() - interval '5 hours'")
        await refresh(h)
        # both 5 h old: over the quick shop's 1 h, within shop-1's 8 h (the default 4 h would count both)
        assert gauge("refunds", "escalations_open")[0] == 2
        items, age = gauge("refunds", "escalations_over_sla")
        assert items == 1 and age is not None and age >= 5 * 3600
        path.write_text("shops:\n  shop-1: {escalation_sla_hours: 2}\n")  # changed: shop-1 is now over too
        assert shops.reload()
        await refresh(h)
        assert gauge("refunds", "escalations_over_sla")[0] == 2


async def test_a_parked_scan_is_counted_until_its_parcel_is_known(handler_settings: Settings) -> None:
    async with harness(WAREHOUSE, handler_settings, warehouse_dev.dev_settings(batch_wait_ms=5)) as h:
        await refresh(h)
        assert gauge("warehouse", "scans_parked") == (0, 0)
        await warehouse_case.scan(h, "SF-BACKLOG", "picked_up", 0)
        await warehouse_case.scan(h, "SF-BACKLOG", "in_transit", 5)
        await refresh(h)
        assert gauge("warehouse", "scans_parked")[0] == 2
        await h.apply("lifecycle", [warehouse_case.requested("SF-BACKLOG")])
        await refresh(h)
        assert gauge("warehouse", "scans_parked") == (0, 0)


async def test_an_open_discrepancy_is_counted_with_its_age_until_resolved(handler_settings: Settings) -> None:
    async with harness(AUDIT, handler_settings, audit_case.audit_settings()) as h:
        rid = uuid.uuid4()
        await h.apply(
            "inventory", [audit_case.requested(rid, {"QTY": 2}), audit_case.attested(rid, "QTY", "restock", 2)]
        )
        await h.apply("inventory", [audit_case.checked(rid, "QTY", "restock", 1, by="rt-lin")])
        (did,) = [r["id"] for r in await h.pool.fetch("SELECT id FROM discrepancies")]
        await refresh(h)
        assert gauge("audit", "discrepancies_open")[0] == 1
        await h.pool.execute("UPDATE discrepancies SET opened_at = now() - interval '25 hours'")
        await refresh(h)
        items, age = gauge("audit", "discrepancies_open")
        assert items == 1 and age is not None and age >= 25 * 3600
        await audit_case.handlers.resolve(h.ctx, did, "rt-ana", "recounted", "c")
        await refresh(h)
        assert gauge("audit", "discrepancies_open") == (0, 0)


async def test_sms_due_and_not_sent_and_sms_deferred_to_the_morning_are_counted(handler_settings: Settings) -> None:
    req = notify_support.requested(locale="en")
    # the real clock (the gauges count with PostgreSQL's), and no quiet hours whatever the hour
    daytime = notify_case.notify(clock_offset_s=0.0, quiet_start_hour=0, quiet_end_hour=0)
    async with harness(NOTIFY, handler_settings, daytime) as h:
        await h.apply("lifecycle", [req])
        await h.pool.execute(  # the sender is behind; the reminders are due later
            "UPDATE messages SET due_at = now() - interval '3 minutes' WHERE step = 'requested'"
        )
        await refresh(h)
        items, age = gauge("notify", "sms_queued")
        assert items == 1 and age is not None and 180 <= age < 240
        await notify_case.send_due(h)
        await refresh(h)
        assert gauge("notify", "sms_queued") == (0, 0)
        assert gauge("notify", "sms_deferred") == (0, 0)

    night = notify_case.notify(clock_offset_s=notify_support.offset_to_local("Asia/Shanghai", 23))
    async with harness(NOTIFY, handler_settings, night) as h:
        await h.apply("lifecycle", [notify_support.requested(locale="zh-CN")])
        await notify_case.send_due(h)  # quiet hours: deferred to 8:00
        await refresh(h)
        assert gauge("notify", "sms_deferred")[0] == 1
