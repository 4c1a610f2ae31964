"""Helpers for the notify tests: settings, clock offsets, lifecycle events, the SMS file."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from contracts.events import (
    Customer,
    Message,
    ParcelScanned,
    ReceivedLine,
    RefundEscalated,
    RefundIssued,
    RequestedBy,
    ReturnCancelled,
    ReturnLine,
    ReturnReceived,
    ReturnRequested,
    ScanCode,
)
from returnflow.outbox import event_record
from returnflow.settings import Settings
from services.notify.providers import sms_file
from services.notify.settings import NotifySettings
from tests.kafkautil import wait_for

SMS_SECRET = b"sms-secret"


def offset_to_local(tz: str, hour: int, minute: int = 0, second: int = 0) -> float:
    """Seconds to add to real time so that it is hour:minute:second now in `tz`."""
    now = datetime.now(ZoneInfo(tz))
    target = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
    return (target - now).total_seconds()


class NotifySetup(NamedTuple):
    """The runtime's settings and notify's own, as a test runs the service: `serve(SPEC, *setup)`."""

    settings: Settings
    notify: NotifySettings

    @property
    def kafka_bootstrap(self) -> str:
        assert self.settings.kafka_bootstrap is not None
        return self.settings.kafka_bootstrap

    @property
    def sms_file(self) -> Path:
        return sms_file(self.notify, self.settings)


def notify_settings(settings: Settings, **over: Any) -> NotifySetup:
    """`settings` with the SMS webhook secret, and notify's settings for tests (quick polls and retries, a
    clock at noon in Shanghai) with `over` (NotifySettings fields) applied."""
    secrets = dict(settings.webhook_secrets)
    secrets["sms"] = [SecretStr(SMS_SECRET.decode())]
    base: dict[str, Any] = {
        "poll_interval_s": 0.2,
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        "sender_rate_per_s": 50.0,
        "shop_names": {"shop-1": "Maple & Co"},
        "clock_offset_s": offset_to_local("Asia/Shanghai", 12),
    }
    base.update(over)
    return NotifySetup(settings.model_copy(update={"webhook_secrets": secrets}), NotifySettings(**base))


def sms_lines(setup: NotifySetup, return_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    path = setup.sms_file
    if not path.exists():
        return []
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return [x for x in lines if return_id is None or x["return_id"] == str(return_id)]


async def wait_sms(setup: NotifySetup, n: int, return_id: uuid.UUID | None = None, timeout_s: float = 15.0) -> list:
    async def enough() -> list | None:
        got = sms_lines(setup, return_id)
        return got if len(got) >= n else None

    return await wait_for(enough, timeout_s)


async def publish(bootstrap: str, events: list[Message]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for e in events:
            r = event_record(e)
            await producer.send_and_wait(
                r.topic, r.value, key=r.key, headers=[(k, v.encode()) for k, v in r.headers.items()]
            )
    finally:
        await producer.stop()


def requested(
    *,
    rid: uuid.UUID | None = None,
    at: datetime | None = None,
    kind: str = "return_and_refund",
    locale: str = "en",
    tz: str = "Asia/Shanghai",
    phone: str = "+8613812345678",
    shop_name: str | None = None,
) -> ReturnRequested:
    at = at or datetime.now(UTC)
    rid = rid or uuid.uuid4()
    return ReturnRequested(
        occurred_at=at,
        return_id=rid,
        correlation_id=f"corr-{rid.hex[:8]}",
        shop_id="shop-1",
        shop_name=shop_name,
        platform="generic",
        platform_return_id=f"pr-{rid.hex[:8]}",
        order_id=f"order-{rid.hex[:6]}",
        kind=kind,
        customer=Customer(id="c-1", phone=phone, locale=locale, timezone=tz),
        currency="CNY",
        paid_total=5000,
        lines=[ReturnLine(sku="SKU-1", qty=2, unit_price=2500, reason="size_too_small")],
        requested_by=RequestedBy(type="customer"),
        requested_at=at,
    )


def scanned(rid: uuid.UUID, code: ScanCode = ScanCode.picked_up, scan_id: str = "s1") -> ParcelScanned:
    now = datetime.now(UTC)
    return ParcelScanned(
        occurred_at=now,
        return_id=rid,
        correlation_id="corr-scan",
        scan_id=scan_id,
        tracking_no="SF123",
        carrier="SF Express",
        scan_code=code,
        scanned_at=now,
        location="Hangzhou",
        first_moving=code == ScanCode.picked_up,
    )


def received(rid: uuid.UUID) -> ReturnReceived:
    now = datetime.now(UTC)
    line = ReceivedLine(
        sku="SKU-1",
        qty_requested=2,
        qty_received=2,
        unit_price=2500,
        condition="as_described",
        disposition="restock",
    )
    return ReturnReceived(
        occurred_at=now,
        return_id=rid,
        correlation_id="corr-recv",
        receipt_id="rcpt-1",
        warehouse_id="wh-1",
        inspector_id="insp-1",
        received_at=now,
        lines=[line],
    )


def escalated(rid: uuid.UUID, amount: int = 5000) -> RefundEscalated:
    return RefundEscalated(
        occurred_at=datetime.now(UTC),
        return_id=rid,
        correlation_id="corr-esc",
        amount=amount,
        currency="CNY",
        required_role="supervisor",
        reason="above agent authority",
    )


def issued(rid: uuid.UUID, amount: int = 5000) -> RefundIssued:
    return RefundIssued(
        occurred_at=datetime.now(UTC),
        return_id=rid,
        correlation_id="corr-refund",
        refund_id=f"rf-{rid.hex[:6]}",
        amount=amount,
        currency="CNY",
        basis="warehouse_receipt",
        gateway_reference="gw-1",
    )


def cancelled(rid: uuid.UUID) -> ReturnCancelled:
    return ReturnCancelled(occurred_at=datetime.now(UTC), return_id=rid, correlation_id="corr-cancel")


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
